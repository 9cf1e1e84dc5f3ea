"""memory: repeated calls leave the heap where it was (results, contexts and models freed), failing ones too."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any

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


# The calls a decode failure can reach: one sequence, one parallel prompt (its own decode fails), and parallel
# prompts with a shared prefix (the prefix's decode fails first).
FAILING_CALLS = ("generate", "generate_parallel, one prompt", "generate_parallel, a shared prefix")


@check("failed_calls_release_memory", "memory", "calls whose llama_decode fails (made to, through llama.cpp's abort "
       "callback) report the failure and leave the heap where it was", plain_heap)  # fmt: skip
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
    faults = _AbortCallback(obs)
    sampling = s.options.sampling(4)
    ctx = s.context(512, 4)
    prompts = list(SHARED_PREFIX.prompts[:2])
    calls: dict[str, Callable[[], list[Call]]] = dict(zip(FAILING_CALLS, (
        lambda: [s.shim.generate(ctx, PROMPT_B, sampling)],
        lambda: [s.shim.generate_parallel(ctx, [PROMPT_B], sampling)],
        lambda: [s.shim.generate_parallel(ctx, prompts, sampling)]), strict=True))  # fmt: skip
    lctx = obs.context_of(ctx)
    faults.set(lctx, lambda: True)  # every graph computation stops at its first node
    evidence: dict[str, Any] = {"cycles": LEAK_WINDOW, "bytes_per_cycle_bar": LEAK_BYTES}
    problems: list[str] = []
    try:
        for name, cycle in calls.items():
            succeeded = [c for c in cycle() if c.ok]
            if succeeded:
                problems.append(f"{name}: reported success although every llama_decode failed (aborted)")
                continue
            growth, _ = _heap_growth(cycle)  # every call fails here: its failure is the path measured
            evidence[name] = {"heap_growth_per_window": growth}
            if min(growth) >= LEAK_BYTES * LEAK_WINDOW:
                problems.append(f"{name}, failing: the heap grew {', '.join(map(str, growth))} bytes over "
                                f"{LEAK_WINDOWS} windows of {LEAK_WINDOW} calls: what the failed call allocated is "
                                "not freed")  # fmt: skip
    finally:
        faults.clear(lctx)
    summary = "; ".join(f"{k}: +{v['heap_growth_per_window']}" for k, v in evidence.items() if isinstance(v, dict))
    return Verdict(not problems, evidence, failures(problems), summary or "; ".join(problems))
