"""memory: repeated calls leave the heap where it was (results, contexts and models freed), failing ones too."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from verify.checks.compare import clip
from verify.checks.framework import Verdict, check, failures
from verify.driver import Call
from verify.prompts import PROMPT_B, SHARED_PREFIX
from verify.session import Session, Skip


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def heap_in_use() -> int | None:
    """Bytes the C heap holds for the process (glibc's mallinfo2, all arenas, mmapped chunks included); None where
    the C library has no mallinfo2."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _Mallinfo2
    info = fn()
    in_use = int(info.uordblks + info.hblkhd)
    return in_use or None  # a live Python process holds heap: 0 is an allocator that does not count (malloc debug)


# A cycle is run LEAK_WARMUP times (caches fill), then LEAK_WINDOWS windows of LEAK_WINDOW; it leaks when the heap
# grew by at least LEAK_BYTES per cycle in every window. A balanced API returns to the same byte count every cycle,
# so one small string lost per call (a 32-byte chunk) is above the bar; one-off growth (a cache) stays in one window.
LEAK_WARMUP, LEAK_WINDOW, LEAK_WINDOWS, LEAK_BYTES = 3, 8, 3, 16


def _heap_growth(cycle: Callable[[], list[Call]]) -> tuple[list[int], list[str]]:
    """Heap growth over each window, and the failed calls' messages (a cycle whose calls fail proves nothing)."""
    import gc

    failed: list[str] = []
    for _ in range(LEAK_WARMUP):
        failed += [c.message for c in cycle() if not c.ok]
    growth = []
    for _ in range(LEAK_WINDOWS):
        gc.collect()
        start = heap_in_use() or 0
        for _ in range(LEAK_WINDOW):
            failed += [c.message for c in cycle() if not c.ok]
        gc.collect()
        growth.append((heap_in_use() or 0) - start)
    return growth, failed


# glibc's per-thread caches (tcache) hold freed chunks that mallinfo2 counts as in use, and which thread frees what
# varies from call to call: with them off, a balanced API reads the same byte count every cycle (±48 bytes here).
TCACHE_OFF = "glibc.malloc.tcache_count=0"


def with_tunable(env: dict[str, str], tunable: str) -> dict[str, str]:
    """`env` with `tunable` added to GLIBC_TUNABLES (the tunables already there kept)."""
    have = env.get("GLIBC_TUNABLES", "")
    return env | {"GLIBC_TUNABLES": f"{have}:{tunable}" if have and tunable not in have else have or tunable}


def plain_heap(env: dict[str, str]) -> dict[str, str]:
    """The leak check's process: glibc's thread caches off, and the plain allocator — glibc's malloc debug library
    (`migrate mutate` preloads it) answers mallinfo2 with zeros; without MALLOC_PERTURB_ too (filling every freed
    model buffer, 27 loads, made the check 6× slower)."""
    merged = with_tunable(env, TCACHE_OFF)
    preload = [p for p in merged.get("LD_PRELOAD", "").split(":") if p and "libc_malloc_debug" not in p]
    return merged | {"LD_PRELOAD": ":".join(preload), "MALLOC_PERTURB_": "0"}


@check("frees_release_memory", "memory", "repeated calls leave the heap where it was: results, contexts and models "
       "freed by the API's free functions", plain_heap)  # fmt: skip
def frees_release_memory(s: Session) -> Verdict:
    if heap_in_use() is None:
        raise Skip("heap in use cannot be read: the C library has no mallinfo2 (glibc 2.33 or later), or the allocator "
                   "preloaded answers it with zeros (glibc's malloc debug library)")  # fmt: skip
    if TCACHE_OFF not in os.environ.get("GLIBC_TUNABLES", ""):
        raise Skip(f"heap figures are exact only with glibc's thread caches off (GLIBC_TUNABLES={TCACHE_OFF}, which "
                   "the runner sets for this check's process)")  # fmt: skip
    model, sampling = s.model(), s.options.sampling(4)
    ctx = s.context(512, 4)
    prompts = list(SHARED_PREFIX.prompts[:2])

    def lifecycle() -> list[Call]:
        loaded = s.shim.load_model(s.target.model, s.options.n_gpu_layers)
        if not loaded.ok:
            return [loaded]
        made = s.shim.create_context(loaded.value, 256, 1, s.options.n_threads)
        if made.ok:
            s.shim.free_context(made.value)
        s.shim.free_model(loaded.value)
        return [loaded, made]

    def text_cycle() -> list[Call]:
        tokens = s.shim.tokenize(model, PROMPT_B)
        return [tokens, s.shim.detokenize(model, tokens.value or [1])]

    cycles: dict[str, Callable[[], list[Call]]] = {
        "model load + context create, then both freed": lifecycle,
        "tokenize + detokenize, results freed": text_cycle,
        "generate, result freed": lambda: [s.shim.generate(ctx, PROMPT_B, sampling)],
        "generate_parallel, results freed": lambda: [s.shim.generate_parallel(ctx, prompts, sampling)],
    }
    evidence: dict[str, Any] = {"cycles": LEAK_WINDOW, "bytes_per_cycle_bar": LEAK_BYTES,
                                "heap_bytes_at_start": heap_in_use()}  # fmt: skip
    problems: list[str] = []
    for name, cycle in cycles.items():
        growth, failed = _heap_growth(cycle)
        evidence[name] = {"heap_growth_per_window": growth, "failed_calls": failed[:3]}
        if failed:
            problems.append(f"{name}: {len(failed)} call(s) failed: {failed[0]}")
        elif min(growth) >= LEAK_BYTES * LEAK_WINDOW:
            problems.append(f"{name}: the heap grew {', '.join(map(str, growth))} bytes over {LEAK_WINDOWS} windows "
                            f"of {LEAK_WINDOW} cycles: something is not freed")  # fmt: skip
    summary = "; ".join(f"{k}: +{v['heap_growth_per_window']}" for k, v in evidence.items() if isinstance(v, dict))
    return Verdict(not problems, evidence, failures(problems), summary)


class _AbortCallback:
    """llama_set_abort_callback, declared here: its callback type is ggml's (ggml.h), which the observer's llama.h
    declarations leave out; the signature is the same at b5415 and b7836."""

    def __init__(self, obs: Any) -> None:
        import cffi

        self.obs = obs
        self.ffi = cffi.FFI()
        self.ffi.cdef("struct llama_context; typedef bool (*abort_cb)(void *);"
                      "void llama_set_abort_callback(struct llama_context *, abort_cb, void *);")  # fmt: skip
        try:
            self.lib: Any = self.ffi.dlopen(str(obs.bindings.library_path))
            self.lib.llama_set_abort_callback  # noqa: B018 - looked up now: a library without it is a skip
        except (OSError, AttributeError) as exc:
            raise Skip(f"llama_set_abort_callback is not exported by the library: {exc}") from exc
        self.callback: Any = None  # kept alive while llama.cpp holds it

    def _ctx(self, lctx: Any) -> Any:
        return self.ffi.cast("struct llama_context *", int(self.obs.ffi.cast("uintptr_t", lctx)))

    def set(self, lctx: Any, stop: Callable[[], bool]) -> None:
        self.callback = self.ffi.callback("abort_cb", lambda _data: stop())
        self.lib.llama_set_abort_callback(self._ctx(lctx), self.callback, self.ffi.NULL)

    def clear(self, lctx: Any) -> None:
        self.lib.llama_set_abort_callback(self._ctx(lctx), self.ffi.NULL, self.ffi.NULL)
        self.callback = None


class _NodeBudget:
    """The abort callback's answer: graph nodes computed so far in a call, and whether to stop now. With a budget
    of N, the first N nodes run and every computation after them stops at its first node (0: every decode fails;
    None: none does, the nodes are only counted). Only ggml-cpu's thread 0 asks, once per node, so a call's count
    is the same each time."""

    def __init__(self) -> None:
        self.budget: int | None = None
        self.used = 0

    def start(self, budget: int | None) -> None:
        self.budget, self.used = budget, 0

    def __call__(self) -> bool:
        self.used += 1
        return self.budget is not None and self.used > self.budget


# The calls a decode failure can reach: one sequence, one parallel prompt (its own decode fails), and parallel
# prompts with a shared prefix (the prefix's decode fails first); then the decodes after the prompt's, in generate
# and in a parallel step (each call gets the nodes a one-token call of its kind computes: its prompt decodes, then
# the next decode fails), where the tokens generated so far, a step's batch and the slots' states must be let go.
FAILING_CALLS = ("generate", "generate_parallel, one prompt", "generate_parallel, a shared prefix")
FAILING_LATER = ("generate, a later decode", "generate_parallel, a step's decode")


@check("failed_calls_release_memory", "memory", "calls whose llama_decode fails (made to, through llama.cpp's abort "
       "callback: the first decode, or one after the prompt's) report the failure and leave the heap where it was",
       plain_heap)  # fmt: skip
def failed_calls_release_memory(s: Session) -> Verdict:
    """The error paths of generation: batches, result arrays and samplers freed when a decode fails, which no
    well-formed input makes happen (a leak or a missing error there shows only when llama.cpp fails for real: out of
    KV cells, out of memory, aborted)."""
    if heap_in_use() is None or TCACHE_OFF not in os.environ.get("GLIBC_TUNABLES", ""):
        raise Skip("heap figures are not exact here (no mallinfo2, or glibc's thread caches on): see "
                   "frees_release_memory")  # fmt: skip
    obs = s.need_observer()
    if not s.can_observe_context():
        raise Skip("llama.cpp's context is not reachable behind the API's context handle: the abort callback "
                   "cannot be set")  # fmt: skip
    faults, nodes = _AbortCallback(obs), _NodeBudget()
    sampling = s.options.sampling(4)
    ctx = s.context(512, 4)
    prompts = list(SHARED_PREFIX.prompts[:2])
    first: list[Callable[[], Call]] = [lambda: s.shim.generate(ctx, PROMPT_B, sampling),
                                       lambda: s.shim.generate_parallel(ctx, [PROMPT_B], sampling),
                                       lambda: s.shim.generate_parallel(ctx, prompts, sampling)]  # fmt: skip
    later: list[Callable[[int], Call]] = [lambda n: s.shim.generate(ctx, PROMPT_B, s.options.sampling(n)),
                                          lambda n: s.shim.generate_parallel(ctx, [PROMPT_B], s.options.sampling(n))]
    lctx = obs.context_of(ctx)
    faults.set(lctx, nodes)
    evidence: dict[str, Any] = {"cycles": LEAK_WINDOW, "bytes_per_cycle_bar": LEAK_BYTES}
    problems: list[str] = []
    try:
        cases = {name: (0, call) for name, call in zip(FAILING_CALLS, first, strict=True)}
        for name, call in zip(FAILING_LATER, later, strict=True):
            nodes.start(None)
            counted = call(1)
            evidence[name] = {"nodes_of_a_one_token_call": nodes.used}
            if not counted.ok or nodes.used == 0:  # no figure to fail after: the first decodes' cases still run
                evidence[name]["not_run"] = counted.message or "no graph node reported to the abort callback"
                continue
            cases[name] = (nodes.used, lambda call=call: call(4))
        for name, (budget, call) in cases.items():
            problems += _fails_and_frees(name, budget, call, nodes, evidence)
    finally:
        faults.clear(lctx)
    summary = "; ".join(f"{k}: +{v['heap_growth_per_window']}" for k, v in evidence.items()
                        if isinstance(v, dict) and "heap_growth_per_window" in v)  # fmt: skip
    return Verdict(not problems, evidence, failures(problems), summary or "; ".join(problems))


def _fails_and_frees(name: str, budget: int, call: Callable[[], Call], nodes: _NodeBudget,
                     evidence: dict[str, Any]) -> list[str]:  # fmt: skip
    """One failing call: it must report the failure, and repeated, leave the heap where it was."""

    def cycle() -> list[Call]:
        nodes.start(budget)
        return [call()]

    if cycle()[0].ok:
        what = "every llama_decode" if budget == 0 else f"every llama_decode after the first {budget} graph nodes"
        return [f"{name}: reported success although {what} failed (aborted)"]
    growth, _ = _heap_growth(cycle)  # every call fails here: its failure is the path measured
    evidence[name] = evidence.get(name, {}) | {"heap_growth_per_window": growth, "node_budget": budget}
    if min(growth) >= LEAK_BYTES * LEAK_WINDOW:
        return [f"{name}, failing: the heap grew {', '.join(map(str, growth))} bytes over {LEAK_WINDOWS} windows of "
                f"{LEAK_WINDOW} calls: what the failed call allocated is not freed"]  # fmt: skip
    return []


# An allocation failing inside a call: the address space is limited (RLIMIT_AS) for the call's duration to what the
# process maps plus OOM_HEADROOM, and the prompt is OOM_PROMPT_BYTES of text, so that the harness's own copies of it
# (encoded, handed to C) and one copy in the consumer fit, while a token buffer of one 4-byte id per byte does not.
# The prompt is far longer than the context too: whichever way the consumer goes (an allocation failing, or its
# length check first), the one right answer is an error, and what the call allocated freed.
OOM_PROMPT_BYTES = 16 << 20
OOM_HEADROOM = OOM_PROMPT_BYTES * 7 // 2


def mapped_bytes() -> int | None:
    """The process's address space in bytes (VmSize of /proc/self/status); None where there is no /proc."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return None


@contextmanager
def address_space_limited(headroom: int) -> Iterator[None]:
    """RLIMIT_AS set to the address space mapped now plus `headroom` while the block runs, then restored."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = mapped_bytes() or 0
    limit = mapped + headroom if hard == resource.RLIM_INFINITY else min(hard, mapped + headroom)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _sanitized() -> bool:
    """An address sanitizer's runtime is in the process: it reserves terabytes of shadow memory up front and dies
    on a failed mapping, so a limited address space tests the sanitizer, not the consumer."""
    return "ASAN_OPTIONS" in os.environ or "asan" in os.environ.get("LD_PRELOAD", "")


@check("out_of_memory_calls_release_memory", "memory", "calls that run out of memory inside (the address space "
       "limited for the call) report the failure and leave the heap where it was", plain_heap)  # fmt: skip
def out_of_memory_calls_release_memory(s: Session) -> Verdict:
    """The exception and allocation-failure paths of generation (catch handlers freeing result arrays), which no
    well-formed input reaches while memory lasts."""
    if heap_in_use() is None or TCACHE_OFF not in os.environ.get("GLIBC_TUNABLES", ""):
        raise Skip("heap figures are not exact here (no mallinfo2, or glibc's thread caches on): see "
                   "frees_release_memory")  # fmt: skip
    if mapped_bytes() is None or _sanitized():
        raise Skip("the address space cannot be limited here (no /proc/self/status, or a sanitizer's runtime is "
                   "loaded, which needs its reservations)")  # fmt: skip
    sampling = s.options.sampling(4)
    ctx = s.context(512, 4)
    prompt = "a " * (OOM_PROMPT_BYTES // 2)

    def limited(call: Callable[[], Call]) -> Callable[[], list[Call]]:
        def run() -> list[Call]:
            with address_space_limited(OOM_HEADROOM):
                return [call()]

        return run

    calls = {"generate": limited(lambda: s.shim.generate(ctx, prompt, sampling)),
             "generate_parallel": limited(lambda: s.shim.generate_parallel(ctx, [prompt], sampling))}  # fmt: skip
    evidence: dict[str, Any] = {"prompt_bytes": len(prompt), "headroom_bytes": OOM_HEADROOM, "cycles": LEAK_WINDOW,
                                "bytes_per_cycle_bar": LEAK_BYTES}  # fmt: skip
    bound = s.shim.binding.get("generate")
    if bound is not None and not bound.has("prompt"):  # the harness's tokenize call, not generate, would run out
        del calls["generate"]
        evidence["generate"] = "not run: generate takes token ids, so the prompt is tokenized before the call"
    problems: list[str] = []
    for name, cycle in calls.items():
        first = cycle()[0]
        evidence[name] = {"first_call": first.evidence()}
        if first.ok:
            problems.append(f"{name}: reported success for a prompt of {len(prompt)} bytes, longer than the context, "
                            "with the address space limited")  # fmt: skip
            continue
        growth, _ = _heap_growth(cycle)
        evidence[name]["heap_growth_per_window"] = growth
        if min(growth) >= LEAK_BYTES * LEAK_WINDOW:
            problems.append(f"{name}, out of memory: the heap grew {', '.join(map(str, growth))} bytes over "
                            f"{LEAK_WINDOWS} windows of {LEAK_WINDOW} calls: what the failed call allocated is "
                            "not freed")  # fmt: skip
    ok = not problems
    summary = "; ".join(f"{k}: {clip(v['first_call'].get('message'), 60)!r}, +{v.get('heap_growth_per_window')}"
                        if isinstance(v, dict) else f"{k}: {v}" for k, v in evidence.items()
                        if k in ("generate", "generate_parallel"))  # fmt: skip
    return Verdict(ok, evidence, failures(problems), summary)
