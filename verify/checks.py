"""The consumer checklist as checks, each returning evidence (the values seen), not just a verdict.

A check is a function of a `Session` (see verify/session.py) returning a `Verdict`; it runs in a child process
(verify/runner.py), so an abort or a segfault inside the library fails that check alone. A check that cannot
run raises `Skip(reason)`: skipped is never reported as passed.

Names follow the migration checklist of a llama.cpp C API shim:
basic: backend init, model load (+ errors), context create, tokenize/detokenize;
generation: generate, generate_parallel, same output twice, A-B-A, greedy output = libllama's own argmax;
memory: cleared after generate, parallel sequences isolated (five prompt sets), shared prefix effective;
errors: prompt longer than the context, invalid input, context larger than memory; plus a throughput figure.
"""

from __future__ import annotations

import ctypes
import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from verify import gpu
from verify.driver import NULL, Call, DriverError, Sampling
from verify.observe import CONTEXT_PARAMS, DECODE, MEMORY_NEW, MODEL_FACTS, PERF, MemorySnapshot, Trace
from verify.prompts import (
    CAPACITY_N_CTX,
    CAPACITY_N_SEQ_MAX,
    EOG_PROMPTS,
    LAST_TOKEN,
    OUT_OF_ORDER_PROMPTS,
    PARALLEL_SETS,
    PROMPT_A,
    PROMPT_B,
    PROMPT_LONG,
    QUEUE,
    REFERENCE_PROMPTS,
    SHARED_PREFIX,
    UNEVEN_PROMPTS,
    capacity_prompts,
    grow_to_tokens,
)
from verify.session import Session, SetupError, Skip

# passed: ran and held; failed: the consumer misbehaved; error: the harness could not drive it (no binding, an
# argument it could not build, an exception in harness code); skipped: could not run here (with the reason).
PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"
VOCAB_VECTORS = Path("models") / "ggml-vocab-llama-spm.gguf"
VECTOR_SEPARATOR = "\n__ggml_vocab_test__\n"
SPM_VOCAB_SIZE = 32000


@dataclass
class CheckResult:
    name: str
    status: str  # passed | failed | error | skipped
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0
    build: str = ""
    summary: str = ""  # one line of the key values seen, for tables

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        keys = ("name", "status", "evidence", "message", "seconds", "build", "summary")
        return cls(**{k: data[k] for k in keys if k in data})


@dataclass
class Verdict:
    ok: bool
    evidence: dict[str, Any]
    message: str = ""
    summary: str = ""


CheckFn = Callable[[Session], Verdict]


Environment = Callable[[dict[str, str]], dict[str, str]]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    group: str
    title: str
    fn: CheckFn
    # what the check's process needs in its environment, given the one it would get (None: nothing)
    environment: Environment | None = None


REGISTRY: dict[str, CheckSpec] = {}


def check(name: str, group: str, title: str, environment: Environment | None = None) -> Callable[[CheckFn], CheckFn]:
    def register(fn: CheckFn) -> CheckFn:
        REGISTRY[name] = CheckSpec(name, group, title, fn, environment)
        return fn

    return register


def run_check(name: str, session: Session) -> CheckResult:
    """Run one registered check in this process (the runner calls this inside the child)."""
    spec = REGISTRY[name]
    started = time.monotonic()
    try:
        # every check loads the model with the layers asked for: without a GPU it would silently run on the CPU
        reason = gpu.missing_gpu(session.target.library, session.options.n_gpu_layers)
        if reason:
            raise Skip(reason)
        verdict = spec.fn(session)
        status = PASSED if verdict.ok else FAILED
        result = CheckResult(name, status, verdict.evidence, verdict.message, summary=verdict.summary)
    except Skip as exc:
        result = CheckResult(name, SKIPPED, {}, f"skipped: {exc}")
    except SetupError as exc:
        result = CheckResult(name, FAILED, {"setup": str(exc)}, f"setup failed: {exc}")
    except DriverError as exc:
        result = CheckResult(name, ERROR, {"driver": str(exc)}, f"harness could not drive the API: {exc}")
    result.seconds = round(time.monotonic() - started, 3)
    result.build = session.target.label
    return result


def failures(items: list[str]) -> str:
    return "; ".join(items)


# --- comparison helpers ------------------------------------------------------------------------------------------


def normalise(text: str | None, mode: str) -> str | None:
    if text is None or mode == "none":
        return text
    if mode == "strip":
        return text.strip()
    if mode == "whitespace":
        return " ".join(text.split())
    raise ValueError(f"unknown normalisation {mode!r}: none, strip or whitespace")


def agreement(a: str | None, b: str | None) -> dict[str, Any]:
    """How far two outputs agree: equal, or the length of their common beginning."""
    if a is None or b is None:  # one side produced nothing: not a match, whatever the other did
        return {"equal": False, "common_prefix_chars": 0, "missing": ["first" if a is None else "second"]}
    common = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        common += 1
    return {"equal": a == b, "common_prefix_chars": common, "chars": [len(a), len(b)]}


def common_token_prefix(token_lists: list[list[int]]) -> int:
    """Longest shared token prefix that still leaves every prompt at least one token of its own."""
    if not token_lists:
        return 0
    limit = min(len(t) for t in token_lists) - 1
    n = 0
    while n < limit and all(t[n] == token_lists[0][n] for t in token_lists):
        n += 1
    return max(0, n)


def clip(text: str | None, n: int = 120) -> str | None:
    return text if text is None or len(text) <= n else text[:n] + "…"


# --- basic ---------------------------------------------------------------------------------------------------------


@check("backend_init", "basic", "backend init")
def backend_init(s: Session) -> Verdict:
    # init twice (the R package calls it on every load), free, init again: then a model must still load
    calls = [s.shim.backend_init(), s.shim.backend_init()]
    s.shim.backend_free()
    s.backend()  # once more through the session, which frees the backend at the end
    model = s.model()
    evidence = {"sequence": "init, init, free, init, model load", "model_loaded": True,
                "init_calls": [c.evidence() for c in calls]}  # fmt: skip
    problems = [f"init {i + 1} reported an error: {c.message}" for i, c in enumerate(calls) if not c.ok]
    return Verdict(model is not None and not problems, evidence, failures(problems),
                   "init twice, free, init: model loads")  # fmt: skip


@check("model_load", "basic", "model load")
def model_load(s: Session) -> Verdict:
    started = time.monotonic()
    model = s.model()
    seconds = time.monotonic() - started
    n_vocab = s.n_vocab(model)
    bos, eos = s.shim.info("token_bos", model), s.shim.info("token_eos", model)
    again = s.shim.load_model(s.target.model, s.options.n_gpu_layers, use_mmap=False)
    if again.ok:
        s.shim.free_model(again.value)
    evidence = {"model": str(s.target.model), "n_vocab": n_vocab, "bos": bos, "eos": eos,
                "load_seconds": round(seconds, 3), "second_load_without_mmap": again.evidence()}  # fmt: skip
    problems = [] if n_vocab > 0 else [f"n_vocab {n_vocab}"]
    problems += [] if again.ok else [f"second load (no mmap) failed: {again.message}"]
    summary = f"n_vocab {n_vocab}, bos {bos}, eos {eos}, {seconds:.2f} s; reload without mmap ok={again.ok}"
    return Verdict(not problems, evidence, failures(problems), summary)


def _bad_model_files(model: Path, folder: Path) -> dict[str, Path | None]:
    data = model.read_bytes()
    files: dict[str, bytes] = {
        "empty_file": b"",
        "not_gguf": b"this is not a model\n" * 64,
        "header_only": data[:8],
        "truncated_1k": data[:1024],
        "truncated_half": data[: len(data) // 2],
        # valid magic and version, absurd tensor and key counts
        "corrupt_counts": data[:8] + (2**62).to_bytes(8, "little") + (2**62).to_bytes(8, "little") + data[24:4096],
    }
    paths: dict[str, Path | None] = {"missing_file": folder / "does-not-exist.gguf", "directory": folder}
    for name, content in files.items():
        path = folder / f"{name}.gguf"
        path.write_bytes(content)
        paths[name] = path
    return paths


@check("model_load_errors", "basic", "missing file and corrupt/truncated GGUF give an error, no crash")
def model_load_errors(s: Session) -> Verdict:
    import tempfile

    s.backend()
    evidence: dict[str, Any] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="verify-bad-models-") as tmp:
        for case, path in _bad_model_files(s.target.model, Path(tmp)).items():
            call = s.shim.load_model(path, s.options.n_gpu_layers)
            evidence[case] = call.evidence()
            if call.ok:
                s.shim.free_model(call.value)
                problems.append(f"{case}: loaded without error")
            elif not call.message:
                problems.append(f"{case}: error code but no message")
    model = s.model()  # the process is alive and a good model still loads
    evidence["good_model_after"] = {"loaded": model is not None}
    cases = [k for k in evidence if k != "good_model_after"]
    summary = f"{len(cases)} bad files ({', '.join(cases)}) all refused with a message; good model loads after"
    return Verdict(not problems, evidence, failures(problems), summary)


@check("context_create", "basic", "context create")
def context_create(s: Session) -> Verdict:
    evidence: dict[str, Any] = {}
    problems: list[str] = []
    for n_ctx, n_seq_max in ((512, 1), (512, 4), (CAPACITY_N_CTX, CAPACITY_N_SEQ_MAX)):
        ctx = s.context(n_ctx, n_seq_max)
        got = s.n_ctx(ctx)
        info = s.observer.context_info(ctx) if s.observer and s.can_observe_context() else {}
        evidence[f"n_ctx={n_ctx},n_seq_max={n_seq_max}"] = {"api_n_ctx": got, "llama": info}
        if got < n_ctx:
            problems.append(f"asked n_ctx {n_ctx}, got {got}")
        s.release(ctx)
    summary = "; ".join(f"{k}: n_ctx {v['api_n_ctx']}" for k, v in evidence.items())
    return Verdict(not problems, evidence, failures(problems), summary)


def read_vectors(tree: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors, read as tests/test-tokenizer-0.cpp reads them."""
    raw = (tree / VOCAB_VECTORS.with_suffix(".gguf.inp")).read_text(encoding="utf-8")
    outs = (tree / VOCAB_VECTORS.with_suffix(".gguf.out")).read_text(encoding="utf-8").splitlines()
    texts = raw.split(VECTOR_SEPARATOR)
    if texts and texts[-1] == "":  # the file ends with a separator: no test after it
        texts.pop()
    if len(texts) != len(outs):
        raise SetupError(f"{tree / VOCAB_VECTORS}: {len(texts)} inputs but {len(outs)} outputs")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs, strict=True)]


@check("tokenize_detokenize", "basic", "tokenize/detokenize on llama.cpp's llama-spm test vectors")
def tokenize_detokenize(s: Session) -> Verdict:
    tree = s.observer.tree if s.observer else s.target.llama_tree
    if tree is None or not (tree / VOCAB_VECTORS.with_suffix(".gguf.inp")).is_file():
        raise Skip("no llama.cpp tree with models/ggml-vocab-llama-spm.gguf.inp for this build")
    model = s.model()
    if s.n_vocab(model) != SPM_VOCAB_SIZE:
        raise Skip(f"the model's vocabulary ({s.n_vocab(model)} tokens) is not llama-spm's: vectors don't apply")
    vectors = read_vectors(tree)
    tok_fail: list[dict[str, Any]] = []
    detok_fail: list[dict[str, Any]] = []
    for text, expected in vectors:
        got = s.shim.tokenize(model, text, add_special=False)  # as llama.cpp's own test: no BOS
        if not got.ok or got.value != expected:
            tok_fail.append({"text": text, "expected": expected, "got": got.value, "message": got.message})
        back = s.shim.detokenize(model, expected)
        if not back.ok or back.value != text:
            detok_fail.append({"tokens": expected, "expected": text, "got": back.value, "message": back.message})
    evidence = {"vectors": str(tree / VOCAB_VECTORS.with_suffix(".gguf.inp")), "cases": len(vectors),
                "tokenize_mismatches": tok_fail[:5], "n_tokenize_mismatches": len(tok_fail),
                "detokenize_mismatches": detok_fail[:5], "n_detokenize_mismatches": len(detok_fail)}  # fmt: skip
    ok = not tok_fail and not detok_fail
    message = "" if ok else f"{len(tok_fail)} tokenize and {len(detok_fail)} detokenize mismatches of {len(vectors)}"
    summary = f"{len(vectors) - len(tok_fail)}/{len(vectors)} tokenized, {len(vectors) - len(detok_fail)} round-trip"
    return Verdict(ok, evidence, message, summary)


# --- generation ------------------------------------------------------------------------------------------------------


@check("generate", "generation", "single generate")
def generate(s: Session) -> Verdict:
    ctx = s.context(512, 1)
    started = time.monotonic()
    call = s.shim.generate(ctx, PROMPT_A, s.options.sampling())
    evidence = {"prompt": PROMPT_A, "max_tokens": s.options.max_tokens, **call.evidence(), "text": call.value,
                "seconds": round(time.monotonic() - started, 4)}  # fmt: skip
    ok = call.ok and bool(call.value)
    message = "" if ok else f"generate returned {call.code}: {call.message or 'empty text'}"
    return Verdict(ok, evidence, message, f"{PROMPT_A[:24]!r}… → {clip(call.value, 40)!r}")


@check("generate_parallel", "generation", "parallel generate")
def generate_parallel(s: Session) -> Verdict:
    ctx = s.context(512, 4)
    prompts = list(SHARED_PREFIX.prompts)
    call = s.shim.generate_parallel(ctx, prompts, s.options.sampling())
    results = call.value or [None] * len(prompts)
    evidence = {"prompts": prompts, "n_seq_max": 4, **call.evidence(), "texts": results}
    empty = [i for i, r in enumerate(results) if not r]
    ok = call.ok and not empty
    message = "" if ok else f"code {call.code}, prompts without output {empty}: {call.message}"
    return Verdict(ok, evidence, message, f"{len(prompts) - len(empty)}/{len(prompts)} prompts produced text")


@check("generate_repeatable", "generation", "same generate twice gives the same output (greedy)")
def generate_repeatable(s: Session) -> Verdict:
    ctx = s.context(512, 1)
    runs = [s.shim.generate(ctx, PROMPT_A, s.options.sampling()) for _ in range(3)]
    texts = [r.value for r in runs]
    evidence = {"prompt": PROMPT_A, "texts": texts, "codes": [r.code for r in runs]}
    ok = all(r.ok for r in runs) and len(set(texts)) == 1
    message = "" if ok else f"outputs differ or fail: {agreement(texts[0], texts[1])}"
    return Verdict(ok, evidence, message, f"3 runs, {len(set(texts))} distinct output(s)")


@check("generate_aba", "generation", "A, B, A gives A's output both times (and each equals a fresh context's)")
def generate_aba(s: Session) -> Verdict:
    sampling = s.options.sampling()
    ctx = s.context(512, 1)
    a1, b1, a2 = (s.shim.generate(ctx, p, sampling) for p in (PROMPT_A, PROMPT_B, PROMPT_A))
    fresh_a = s.shim.generate(s.context(512, 1), PROMPT_A, sampling)
    fresh_b = s.shim.generate(s.context(512, 1), PROMPT_B, sampling)
    evidence = {"prompt_A": PROMPT_A, "prompt_B": PROMPT_B, "A1": a1.value, "B": b1.value, "A2": a2.value,
                "fresh_A": fresh_a.value, "fresh_B": fresh_b.value}  # fmt: skip
    problems = [f"{n} failed: {c.message}" for n, c in (("A1", a1), ("B", b1), ("A2", a2)) if not c.ok]
    if a1.value != a2.value:
        problems.append(f"A after B differs from A before: {agreement(a1.value, a2.value)}")
    if a1.value != fresh_a.value:
        problems.append("A differs from A on a fresh context")
    if b1.value != fresh_b.value:
        problems.append("B after A differs from B on a fresh context")
    summary = f"A1 == A2: {a1.value == a2.value}; A, B equal to fresh contexts: {not problems}"
    return Verdict(not problems, evidence, failures(problems), summary)


def trace_json(trace: Trace) -> dict[str, Any]:
    return {"prompt_tokens": trace.prompt_tokens, "tokens": trace.tokens(), "stopped": trace.stopped,
            "margins": [round(x.margin, 5) for x in trace.steps], "runner_up": [x.runner_up for x in trace.steps],
            "logits": [round(x.logit, 5) for x in trace.steps], "pieces": [x.piece for x in trace.steps]}  # fmt: skip


def reference_traces(s: Session, prompts: list[str], max_tokens: int) -> dict[str, Trace]:
    """libllama's own greedy decode of each prompt, on a context the shim made (its parameters, its defaults)."""
    obs = s.need_observer(*DECODE)
    ctx = s.context(512, 1)
    traces = {p: obs.greedy_trace(ctx, s.tokens(p), max_tokens) for p in prompts}
    s.release(ctx)
    return traces


def generated_count(trace: Trace) -> int:
    """Tokens a greedy generate produces (and returns) for this trace: an end-of-generation token is not one."""
    return len(trace.steps) - (1 if trace.stopped == "eog" else 0)


@check("generate_matches_reference", "generation", "greedy output equals libllama's argmax decode (first token too)")
def generate_matches_reference(s: Session) -> Verdict:
    obs = s.need_observer(*DECODE)
    traces = reference_traces(s, list(REFERENCE_PROMPTS), s.options.max_tokens)
    ctx = s.context(512, 1)
    vocab = obs.lib.llama_model_get_vocab(obs.lib.llama_get_model(obs.context_of(ctx)))
    evidence: dict[str, Any] = {"traces": {}}
    problems: list[str] = []
    for prompt, trace in traces.items():
        call = s.shim.generate(ctx, prompt, s.options.sampling())
        kept = trace.steps[: generated_count(trace)]
        reference = "".join(obs.piece(vocab, st.token, special=False) for st in kept)
        entry = trace_json(trace) | {"shim_text": call.value, "reference_text": reference}
        evidence["traces"][prompt] = entry
        if not call.ok:
            problems.append(f"{prompt!r}: generate failed: {call.message}")
        elif call.value != reference:
            problems.append(f"{prompt!r}: {agreement(reference, call.value)}")
    # which GPUs the library saw: a CPU-vs-GPU comparison (verify/devices.py) trusts its CPU side only with none
    evidence["gpu_devices"] = [d.description or d.name for d in gpu.library_devices(s.target.library)[0] if d.is_gpu]
    margins = [m for t in traces.values() for m in (x.margin for x in t.steps)]
    summary = f"{len(traces)} prompts x {s.options.max_tokens} tokens; smallest top-2 margin {min(margins):.3g}"
    return Verdict(not problems, evidence, failures(problems), summary)


# --- memory ----------------------------------------------------------------------------------------------------------


def _memory_after_generate(s: Session, ctx: Any, prompt: str, max_tokens: int, expected_generated: int | None,
                           n_seqs: int) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """Generate once and check that the memory holds exactly this call's tokens in sequence 0, nothing else."""
    obs = s.need_observer()
    has_perf = obs.has(*PERF)
    if has_perf:
        obs.reset_perf(ctx)
    call = s.shim.generate(ctx, prompt, s.options.sampling(max_tokens))
    n_prompt = s.count(prompt)
    perf = obs.perf(ctx) if has_perf else None
    snap: MemorySnapshot = obs.memory(ctx, n_seqs)
    seq0 = snap.seqs[0]
    held = None if seq0.empty or seq0.pos_max is None else seq0.pos_max + 1
    evidence: dict[str, Any] = {"prompt_tokens": n_prompt, "max_tokens": max_tokens, "text": call.value,
                                "expected_generated": expected_generated, "memory": snap.to_json(),
                                "positions_held_seq0": held}  # fmt: skip
    problems: list[str] = [] if call.ok else [f"generate failed: {call.message}"]
    if held is None:
        return evidence, problems + ["sequence 0 is empty after generate"]
    if seq0.pos_min not in (None, 0):
        problems.append(f"sequence 0 starts at position {seq0.pos_min}, not 0")
    if seq0.n_cells is not None and seq0.n_cells != held:
        problems.append(f"sequence 0 has {seq0.n_cells} cells for {held} positions (stale or duplicate cells)")
    if snap.total_cells is not None and snap.total_cells != held:
        problems.append(f"the cache holds {snap.total_cells} cells, this call's sequence {held}")
    others = [q for q in snap.non_empty() if q != 0] if snap.api != "llama_kv_self_seq_pos_max" else []
    if others:
        problems.append(f"sequences {others} hold cells after a single-sequence generate")
    if expected_generated is not None:
        # every generated token fed back, or all but the last sampled one: which one the code does is evidence
        allowed = {n_prompt + expected_generated: True, n_prompt + expected_generated - 1: False}
        evidence["last_token_decoded"] = allowed.get(held)
        if held not in allowed:
            problems.append(f"sequence 0 holds {held} positions; this call's prompt + output is "
                            f"{n_prompt} + {expected_generated}")  # fmt: skip
    if perf is not None:
        decoded = int(perf["n_p_eval"]) + int(perf["n_eval"])
        evidence["perf"] = perf | {"decoded_this_call": decoded}
        if decoded != held:
            problems.append(f"this call decoded {decoded} tokens but sequence 0 holds {held} positions")
    return evidence, problems


@check("memory_cleared", "memory", "memory holds exactly the last generate's tokens (cleared between calls)")
def memory_cleared(s: Session) -> Verdict:
    obs = s.need_observer()
    if obs.memory_api() is None:
        raise Skip(obs.why_not(*MEMORY_NEW[:3]))
    long_tokens, short_tokens = 16, 6
    expected: dict[str, int | None] = {PROMPT_LONG: None, PROMPT_B: None}
    if obs.has(*DECODE):
        traces = {PROMPT_LONG: reference_traces(s, [PROMPT_LONG], long_tokens)[PROMPT_LONG],
                  PROMPT_B: reference_traces(s, [PROMPT_B], short_tokens)[PROMPT_B]}  # fmt: skip
        expected = {p: generated_count(t) for p, t in traces.items()}
    n_seqs = 4
    ctx = s.context(512, n_seqs)
    evidence: dict[str, Any] = {"memory_api": obs.memory_api()}
    problems: list[str] = []
    steps = (("1_long", PROMPT_LONG, long_tokens), ("2_short_after_long", PROMPT_B, short_tokens))
    for key, prompt, n in steps:
        evidence[key], found = _memory_after_generate(s, ctx, prompt, n, expected[prompt], n_seqs)
        problems += [f"{key}: {p}" for p in found]
    parallel = s.shim.generate_parallel(ctx, list(SHARED_PREFIX.prompts), s.options.sampling())
    evidence["3_parallel_between"] = parallel.evidence()
    evidence["4_short_after_parallel"], found = _memory_after_generate(s, ctx, PROMPT_B, short_tokens,
                                                                       expected[PROMPT_B], n_seqs)  # fmt: skip
    problems += [f"4_short_after_parallel: {p}" for p in found]
    if evidence["4_short_after_parallel"]["text"] != evidence["2_short_after_long"]["text"]:
        problems.append("the same prompt gave different output after generate_parallel")
    held = [evidence[k]["positions_held_seq0"] for k in ("1_long", "2_short_after_long", "4_short_after_parallel")]
    summary = f"seq 0 held {held[0]}, {held[1]}, {held[2]} positions (prompt + output each); via {obs.memory_api()}"
    return Verdict(not problems, evidence, failures(problems), summary)


def _isolation(s: Session, prompts: list[str], n_ctx: int, n_seq_max: int) -> tuple[dict[str, Any], list[str]]:
    """generate_parallel against generate on each prompt alone, same context parameters, greedy."""
    sampling, mode = s.options.sampling(), s.options.normalise
    obs = s.observer if s.observer and s.observer.memory_api() and s.can_observe_context() else None
    single_ctx = s.context(n_ctx, n_seq_max)
    singles = []
    for prompt in prompts:
        if obs is not None:
            obs.clear_memory(single_ctx)  # the harness's own reset: a shim that forgets to clear fails elsewhere
        else:
            s.release(single_ctx)
            single_ctx = s.context(n_ctx, n_seq_max)
        singles.append(s.shim.generate(single_ctx, prompt, sampling))
    s.release(single_ctx)
    ctx = s.context(n_ctx, n_seq_max)
    info = s.observer.context_info(ctx) if obs is not None else {"n_ctx": s.n_ctx(ctx)}
    parallel = s.shim.generate_parallel(ctx, prompts, sampling)
    results = parallel.value or [None] * len(prompts)
    per_prompt = []
    problems: list[str] = [] if parallel.ok else [f"generate_parallel returned {parallel.code}: {parallel.message}"]
    for i, (prompt, single) in enumerate(zip(prompts, singles, strict=True)):
        a, b = normalise(single.value, mode), normalise(results[i], mode)
        agree = agreement(a, b)
        per_prompt.append({"prompt": clip(prompt, 80), "prompt_tokens": s.count(prompt), "single": single.value,
                           "single_error": single.message, "parallel": results[i], **agree})  # fmt: skip
        if not single.ok:
            problems.append(f"prompt {i}: generate alone failed: {single.message}")
        elif results[i] is None:
            problems.append(f"prompt {i}: no parallel result")
        elif not agree["equal"]:
            problems.append(f"prompt {i}: parallel differs from alone after {agree['common_prefix_chars']} chars")
    evidence = {"n_ctx": n_ctx, "n_seq_max": n_seq_max, "context": info, "normalise": mode,
                "parallel_call": parallel.evidence(), "prompts": per_prompt}  # fmt: skip
    if obs is not None:
        evidence["memory_after_parallel"] = obs.memory(ctx, n_seq_max).to_json()
    return evidence, problems


def _isolation_summary(evidence: dict[str, Any]) -> str:
    rows = evidence["prompts"]
    same = sum(1 for r in rows if r["equal"])
    return f"{same}/{len(rows)} prompts equal alone and in parallel (n_seq_max {evidence['n_seq_max']})"


def _isolation_check(key: str) -> CheckFn:
    prompt_set = PARALLEL_SETS[key]

    def run(s: Session) -> Verdict:
        evidence, problems = _isolation(s, list(prompt_set.prompts), prompt_set.n_ctx, prompt_set.n_seq_max)
        summary = _isolation_summary(evidence)
        return Verdict(not problems, {"set": prompt_set.title} | evidence, failures(problems), summary)

    return run


for _key, _set in PARALLEL_SETS.items():
    check(f"parallel_isolation_{_key}", "memory", f"parallel == single per prompt: {_set.title}")(
        _isolation_check(_key)
    )


@check("parallel_isolation_capacity", "memory", "parallel == single per prompt: prompts near per-sequence capacity")
def parallel_isolation_capacity(s: Session) -> Verdict:
    # capacity as the consumer asked for it: at b5421 any sequence may span the whole context (cells shared);
    # a release that gives each sequence less (b7785 without kv_unified) fails here, and the evidence says why
    max_tokens = s.options.max_tokens
    prompts = capacity_prompts(s.count, CAPACITY_N_CTX, CAPACITY_N_CTX, max_tokens)
    evidence, problems = _isolation(s, prompts, CAPACITY_N_CTX, CAPACITY_N_SEQ_MAX)
    lengths = [s.count(p) for p in prompts]
    evidence["positions_needed_per_sequence"] = [n + max_tokens for n in lengths]
    n_ctx_seq = evidence["context"].get("n_ctx_seq")
    if problems and n_ctx_seq is not None and max(lengths) + max_tokens > n_ctx_seq:
        problems.append(f"this build gives each sequence {n_ctx_seq} cells (n_ctx_seq) but the prompts need "
                        f"{max(lengths) + max_tokens}: at b5421 sequences shared all {CAPACITY_N_CTX} cells "
                        "(kv_unified restores that)")  # fmt: skip
    summary = _isolation_summary(evidence) + f"; positions per sequence {evidence['positions_needed_per_sequence']}"
    evidence = {"set": "prompts near per-sequence capacity"} | evidence
    return Verdict(not problems, evidence, failures(problems), summary)


SHARED_PREFIX_TEXT = PROMPT_LONG.strip()
SHARED_SUFFIXES = (" the moon rose over the hills", " a dog barked twice at the gate", " they lit a small fire")


@check("shared_prefix_effective", "memory", "shared-prefix optimisation: prefix evaluated once (perf counters), "
       "with 4 sequences, with 2, and with one prompt the other's beginning")  # fmt: skip
def shared_prefix_effective(s: Session) -> Verdict:
    obs = s.need_observer(*PERF)
    all_prompts = [SHARED_PREFIX_TEXT + suffix for suffix in SHARED_SUFFIXES]
    evidence: dict[str, Any] = {}
    problems: list[str] = []
    summaries = []
    # (n_seq_max, prompts): 2 sequences is the smallest context where a prefix can be shared; in the third set one
    # prompt is the other's beginning, so all of it but its last token is the prefix
    nested = [all_prompts[0], all_prompts[0] + SHARED_SUFFIXES[1]]
    for key, n_seq_max, prompts in (("n_seq_max=4", 4, all_prompts), ("n_seq_max=2", 2, all_prompts[:2]),
                                    ("nested", 2, nested)):  # fmt: skip
        token_lists = [s.tokens(p) for p in prompts]
        # each sequence needs one token of its own to sample from: at most all but the shortest prompt's last token
        prefix = min(common_token_prefix(token_lists), min(len(t) for t in token_lists) - 1)
        shared_cost = prefix + sum(len(t) - prefix for t in token_lists)
        unshared_cost = sum(len(t) for t in token_lists)
        ctx = s.context(512, n_seq_max)
        obs.reset_perf(ctx)
        call = s.shim.generate_parallel(ctx, prompts, s.options.sampling(1))  # one token each: no generation decodes
        perf = obs.perf(ctx)
        s.release(ctx)
        evaluated = int(perf["n_p_eval"]) + int(perf["n_eval"])  # n_eval reads 1 when none: an upper bound
        evidence[key] = {"prompt_tokens": [len(t) for t in token_lists], "shared_prefix_tokens": prefix,
                         "expected_with_sharing": shared_cost, "without_sharing": unshared_cost, "perf": perf,
                         "evaluated": evaluated, **call.evidence()}  # fmt: skip
        if not call.ok:
            problems.append(f"{key}: generate_parallel failed: {call.message}")
        if evaluated >= unshared_cost:
            problems.append(f"{key}: {evaluated} prompt tokens evaluated: all prompts in full ({unshared_cost})")
        elif evaluated > shared_cost + 1:
            # every token of the common prefix once, then each prompt's own tokens: a prefix token evaluated again
            # per sequence (a prefix cut short) is work the optimisation exists to save
            problems.append(f"{key}: {evaluated} prompt tokens evaluated, {shared_cost} with the {prefix}-token prefix "
                            f"evaluated once (+1 for the counters' rounding)")  # fmt: skip
        summaries.append(f"{key}: {evaluated} evaluated (shared {shared_cost}, unshared {unshared_cost})")
    return Verdict(not problems, evidence, failures(problems), "; ".join(summaries))


# --- errors ----------------------------------------------------------------------------------------------------------


@check("error_prompt_too_long", "errors", "prompt longer than the context: error + message, alive, next call works")
def error_prompt_too_long(s: Session) -> Verdict:
    ctx = s.context(64, 1)
    n_ctx = s.n_ctx(ctx)  # releases may round the context up (b7836 pads to 256)
    long_prompt = grow_to_tokens(s.count, n_ctx + 16)
    n_long = s.count(long_prompt)
    single = s.shim.generate(ctx, long_prompt, s.options.sampling())
    after = s.shim.generate(ctx, PROMPT_B, s.options.sampling())
    fresh = s.shim.generate(s.context(64, 1), PROMPT_B, s.options.sampling())
    pctx = s.context(64, 2)
    parallel = s.shim.generate_parallel(pctx, [PROMPT_B, long_prompt], s.options.sampling())
    after_parallel = s.shim.generate_parallel(pctx, [PROMPT_B], s.options.sampling())
    evidence = {"n_ctx": n_ctx, "prompt_tokens": n_long, "generate": single.evidence(),
                "generate_after": after.evidence() | {"text": after.value, "fresh_context_text": fresh.value},
                "parallel": parallel.evidence() | {"results": parallel.value},
                "parallel_after": after_parallel.evidence() | {"results": after_parallel.value}}  # fmt: skip
    problems: list[str] = []
    if single.ok or not single.message:
        problems.append(f"generate with {n_long} tokens in a {n_ctx} context: code {single.code}, no error message")
    if not after.ok or after.value != fresh.value:
        problems.append(f"the next generate did not work as on a fresh context: {after.message}")
    if parallel.ok or not parallel.message:
        problems.append("generate_parallel with a too-long prompt reported success or no message")
    elif parallel.value is not None and parallel.value[1] is not None:
        problems.append("generate_parallel returned text for the too-long prompt")
    if not after_parallel.ok:
        problems.append(f"the next generate_parallel failed: {after_parallel.message}")
    summary = f"{n_long} tokens in n_ctx {n_ctx}: {single.message!r}; next calls ok"
    return Verdict(not problems, evidence, failures(problems), summary)


InvalidCase = Callable[[], Call]


def _invalid_cases(s: Session, model: Any, ctx: Any) -> tuple[dict[str, InvalidCase], dict[str, str]]:
    """Calls that must fail cleanly, built from the binding's roles (whatever the consumer's signatures), and the
    cases that do not apply to this API with the reason."""
    d = s.shim
    good, zero, negative = s.options.sampling(), s.options.sampling(0), s.options.sampling(-5)
    ops = {name: d.binding.get(name) for name in ("model_load", "context_create", "tokenize", "detokenize",
                                                   "generate", "generate_parallel")}  # fmt: skip
    load_in = {"path": str(s.target.model), "n_gpu_layers": s.options.n_gpu_layers, "use_mmap": True}
    ctx_in = {"model": model, "n_ctx": 512, "n_seq_max": 1, "n_threads": s.options.n_threads}
    tok_in = {"model": model, "text": "hi", "add_special": True, "_capacity": 64}
    gen_in = {"context": ctx, "sampling": good} | d.prompt_inputs(ctx, "hi")
    par_in = {"context": ctx, "prompts": [PROMPT_B, PROMPT_A], "n_prompts": 2, "sampling": good}
    cases: dict[str, InvalidCase] = {}
    not_applicable: dict[str, str] = {}

    def case(name: str, op: str, inputs: dict[str, Any], override: dict[str, Any], needs: tuple[str, ...] = ()):
        bound = ops[op]
        if bound is None:
            not_applicable[name] = f"no function bound to {op}"
        elif bound.success == "none":
            not_applicable[name] = f"{bound.function.name} returns nothing: an error cannot be observed"
        elif needs and not any(bound.has(r) for r in needs):
            not_applicable[name] = f"{bound.function.name} has no {' / '.join(needs)} parameter"
        else:
            cases[name] = lambda: d.invoke(op, inputs, override)[0]

    out_roles = ("tokens_out", "tokens_buffer")
    text_prompt = ops["generate"] is not None and ops["generate"].has("prompt")
    prompt_null = {"prompt": NULL} if text_prompt else {"tokens_in": NULL, "n_tokens_in": 3}
    empty_prompt = {"prompt": ""} if text_prompt else {"tokens_in": [], "n_tokens_in": 0}
    case("model_load:path_null", "model_load", load_in, {"path": NULL})
    case("model_load:model_out_null", "model_load", load_in, {"model_out": NULL}, ("model_out",))
    case("context_create:model_null", "context_create", ctx_in, {"model": NULL})
    case("context_create:out_null", "context_create", ctx_in, {"context_out": NULL}, ("context_out",))
    case("context_create:n_ctx_negative", "context_create", ctx_in, {"n_ctx": -1})
    case("context_create:n_seq_max_0", "context_create", ctx_in, {"n_seq_max": 0}, ("n_seq_max",))
    case("tokenize:model_null", "tokenize", tok_in, {"model": NULL})
    case("tokenize:text_null", "tokenize", tok_in, {"text": NULL})
    case("tokenize:out_null", "tokenize", tok_in, {r: NULL for r in (*out_roles, "n_tokens_out")}, out_roles)
    case("detokenize:model_null", "detokenize", {"model": NULL, "tokens_in": [1]}, {})
    case("detokenize:tokens_null", "detokenize", {"model": model, "tokens_in": [1, 2, 3]},
         {"tokens_in": NULL, "n_tokens_in": 3})
    # the boundary: a NULL array of one token (a count check written `> 1` lets it through)
    case("detokenize:tokens_null_one", "detokenize", {"model": model, "tokens_in": [1]},
         {"tokens_in": NULL, "n_tokens_in": 1})
    case("generate:ctx_null", "generate", gen_in, {"context": NULL})
    case("generate:prompt_null", "generate", gen_in, prompt_null)
    case("generate:params_null", "generate", gen_in, {"sampling": NULL}, ("sampling",))
    case("generate:result_null", "generate", gen_in, {"text_out": NULL, "text_buffer": NULL},
         ("text_out", "text_buffer"))  # fmt: skip
    case("generate:empty_prompt", "generate", gen_in, empty_prompt)
    case("generate:max_tokens_0", "generate", gen_in, {"sampling": zero})
    case("generate:max_tokens_negative", "generate", gen_in, {"sampling": negative})
    case("parallel:ctx_null", "generate_parallel", par_in, {"context": NULL})
    case("parallel:prompts_null", "generate_parallel", par_in, {"prompts": NULL})
    case("parallel:zero_prompts", "generate_parallel", par_in, {"n_prompts": 0})
    case("parallel:negative_prompts", "generate_parallel", par_in, {"n_prompts": -1})
    case("parallel:null_entry", "generate_parallel", par_in, {"prompts": [PROMPT_B, None]})
    case("parallel:empty_prompt", "generate_parallel", par_in, {"prompts": [PROMPT_B, ""]})
    case("parallel:params_null", "generate_parallel", par_in, {"sampling": NULL}, ("sampling",))
    case("parallel:max_tokens_0", "generate_parallel", par_in, {"sampling": zero})
    case("parallel:results_null", "generate_parallel", par_in, {"results_out": NULL, "results_array": NULL},
         ("results_out", "results_array"))  # fmt: skip
    n_vocab = s.n_vocab(model)
    for name, ids in {"token_-1": [1, -1], "token_n_vocab": [1, n_vocab], "token_int_max": [2**31 - 1]}.items():
        case(f"detokenize:{name}", "detokenize", {"model": model, "tokens_in": ids}, {})
    return cases, not_applicable


@check("error_invalid_input", "errors", "invalid input (NULLs, zero prompts, bad token ids, max_tokens <= 0, empty)")
def error_invalid_input(s: Session) -> Verdict:
    model = s.model()
    ctx = s.context(512, 2)
    evidence: dict[str, Any] = {}
    problems: list[str] = []
    cases, not_applicable = _invalid_cases(s, model, ctx)
    for name, run in cases.items():
        call = run()
        evidence[name] = {"code": call.code, "ok": call.ok, "message": call.message}
        if call.ok:
            problems.append(f"{name}: accepted (code {call.code})")
        elif not call.message:
            problems.append(f"{name}: error code {call.code} without a message")
    after = s.shim.generate(ctx, PROMPT_B, s.options.sampling())
    refused = sum(1 for v in evidence.values() if not v["ok"])
    evidence["generate_after"] = after.evidence() | {"text": after.value}
    evidence["not_applicable"] = not_applicable
    if not after.ok:
        problems.append(f"generate after the invalid calls failed: {after.message}")
    summary = (f"{refused}/{len(cases)} invalid calls refused with a message; generate works after"
               + (f"; {len(not_applicable)} case(s) not applicable to this API" if not_applicable else ""))
    return Verdict(not problems, evidence, failures(problems), summary)


def _mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


HUGE_N_CTX = 2**30  # ~256 GiB of KV cache even for the tiny model (2 layers x 32 KV dims x f16 K and V)


@check("error_out_of_memory", "errors", "context far larger than memory: error, no crash")
def error_out_of_memory(s: Session) -> Verdict:
    model = s.model()
    limit = None
    old = resource.getrlimit(resource.RLIMIT_AS)
    if s.options.n_gpu_layers == 0 and os.name == "posix":
        # cap this child's address space so "larger than memory" holds whatever the machine's overcommit policy
        limit = _vm_size() + 4 * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (limit, old[1]))
    try:
        started = time.monotonic()
        call = s.shim.create_context(model, HUGE_N_CTX, 1, s.options.n_threads)
        seconds = time.monotonic() - started
    finally:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, old)
    if call.ok:
        s.shim.free_context(call.value)
    after = s.shim.generate(s.context(512, 1), PROMPT_B, s.options.sampling())
    evidence = {"n_ctx": HUGE_N_CTX, "address_space_limit": limit, "mem_total": _mem_total(),
                "create": call.evidence(), "seconds": round(seconds, 3),
                "generate_after": after.evidence() | {"text": after.value}}  # fmt: skip
    problems = []
    if call.ok:
        problems.append(f"a context of {HUGE_N_CTX} tokens was created")
    elif not call.message:
        problems.append("error code without a message")
    if not after.ok:
        problems.append(f"generate after the failed context failed: {after.message}")
    summary = f"n_ctx {HUGE_N_CTX}: {clip(call.message, 90)!r}"
    return Verdict(not problems, evidence, failures(problems), summary)


# --- throughput --------------------------------------------------------------------------------------------------


THROUGHPUT_TOKENS = 48
THROUGHPUT_REPEATS = 3


def _count_generated(s: Session, prompts: list[str], texts: list[str | None], max_tokens: int) -> list[int]:
    """Tokens each call generated: from libllama's greedy trace when it can decode, else re-tokenised text."""
    if s.observer is not None and s.observer.has(*DECODE):
        traces = reference_traces(s, prompts, max_tokens)
        return [generated_count(traces[p]) for p in prompts]
    return [len(s.tokens(t, add_special=False)) if t else 0 for t in texts]


def best_time(fn: Callable[[], Any], repeats: int = THROUGHPUT_REPEATS) -> tuple[float, Any]:
    """The fastest of `repeats` calls (seconds) and the last call's value: the least disturbed run."""
    best, value = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - started)
    return best, value


@check("throughput", "performance", "tokens/s of generate and generate_parallel (greedy, best of 3)")
def throughput(s: Session) -> Verdict:
    """One build's figure. Old vs new (differential runs, the gate) is not this check run twice: both builds are
    timed call by call, alternately, in resident workers (verify/throughput.py), and each side of that paired
    comparison stands as its build's `throughput` result."""
    sampling = s.options.sampling(THROUGHPUT_TOKENS)
    ctx = s.context(512, 4)
    s.shim.generate(ctx, PROMPT_A, s.options.sampling(2))  # warm-up: first decode allocates graphs
    prompts = list(SHARED_PREFIX.prompts)
    single_s, single = best_time(lambda: s.shim.generate(ctx, PROMPT_A, sampling))
    parallel_s, parallel = best_time(lambda: s.shim.generate_parallel(ctx, prompts, sampling))
    n_single = sum(_count_generated(s, [PROMPT_A], [single.value], THROUGHPUT_TOKENS))
    n_parallel = sum(_count_generated(s, prompts, parallel.value or [], THROUGHPUT_TOKENS))
    evidence = {
        "threads": s.options.n_threads, "n_gpu_layers": s.options.n_gpu_layers,
        "generate": {"tokens": n_single, "seconds": round(single_s, 4), "tokens_per_s": round(n_single / single_s, 1)},
        "generate_parallel": {"prompts": len(prompts), "tokens": n_parallel, "seconds": round(parallel_s, 4),
                              "tokens_per_s": round(n_parallel / parallel_s, 1)},
    }  # fmt: skip
    ok = single.ok and parallel.ok
    summary = (f"generate {evidence['generate']['tokens_per_s']} tok/s, generate_parallel "
               f"{evidence['generate_parallel']['tokens_per_s']} tok/s")  # fmt: skip
    return Verdict(ok, evidence, "" if ok else f"{single.message} {parallel.message}".strip(), summary)


# --- GPU -----------------------------------------------------------------------------------------------------------


def _expected_offload(n_gpu_layers: int, total: int) -> int:
    return total if n_gpu_layers < 0 else min(n_gpu_layers, total)


def _gpu_memory(devices: list[gpu.Device]) -> dict[str, dict[str, int]]:
    return {d.name: {"free": d.memory_free, "total": d.memory_total} for d in devices if d.is_gpu}


@check("gpu_offload", "gpu", "layers offloaded to the GPU: device, layers offloaded, flash attention as used")
def gpu_offload(s: Session) -> Verdict:
    if s.options.n_gpu_layers == 0:
        raise Skip("not asked: --n-gpu-layers 0 runs everything on the CPU")
    library = gpu.Library(s.target.library)
    s.backend()  # the consumer's init installs its log callback; the capture replaces it for this child
    capture = gpu.LogCapture(library)
    before = library.devices()
    model = s.model()
    after = library.devices()
    out = s.shim.generate(s.context(512, 1), PROMPT_A, s.options.sampling())
    found = gpu.log_evidence(capture.text)
    used = {name: before_mem["free"] - _gpu_memory(after).get(name, before_mem)["free"]
            for name, before_mem in _gpu_memory(before).items()}  # fmt: skip
    evidence = found | {"devices": [d.description or d.name for d in after if d.is_gpu], "n_gpu_layers":
                        s.options.n_gpu_layers, "model_bytes_on_gpu": used, "n_vocab": s.n_vocab(model),
                        "generate": out.evidence() | {"text": out.value}}  # fmt: skip
    problems: list[str] = []
    if "layers_offloaded" not in found:
        problems.append("the library logged no 'offloaded N/M layers to GPU' line")
    elif found["layers_offloaded"] != _expected_offload(s.options.n_gpu_layers, found["layers_total"]):
        problems.append(f"offloaded {found['layers_offloaded']}/{found['layers_total']} layers, "
                        f"asked for {s.options.n_gpu_layers}")  # fmt: skip
    if not out.ok:
        problems.append(f"generate on the GPU failed: {out.message}")
    summary = (f"{', '.join(evidence['devices']) or 'no device'}: {found.get('layers_offloaded', '?')}/"
               f"{found.get('layers_total', '?')} layers, flash attention used={found.get('flash_attn_used')}")
    return Verdict(not problems, evidence, failures(problems), summary)


# --- blind spots: state across calls, slots that finish unevenly, result order, sampling, context parameters -------
#
# Each compares what the shim returns (text) with a reference: libllama's own greedy decode on the shim's context
# where llama.cpp's state is observable, else the shim's own `generate` alone on a fresh context (said in the
# evidence). The stop model (Options.eog_model, `migrate model --eog`) ends greedy decoding on EOS after a few tokens
# on some prompts, so stop-on-EOG, uneven finishing and refill paths run; the default tiny model never emits EOS.


class StopModel:
    """The stop model loaded through the consumer's own API; its contexts and the model are freed on exit."""

    def __init__(self, s: Session) -> None:
        path = s.options.eog_model
        if not path:
            raise Skip("no stop model (Options.eog_model / --eog-model: a GGUF whose greedy decoding ends on EOS, "
                       "made by `migrate model --eog`; `migrate verify`, `run` and `gate` pass one)")  # fmt: skip
        if not Path(path).is_file():
            raise SetupError(f"stop model {path} not found")
        self.s = s
        self.path = path
        self.handle: Any = None
        self.contexts: list[Any] = []

    def __enter__(self) -> StopModel:
        self.s.backend()
        call = self.s.shim.load_model(self.path, self.s.options.n_gpu_layers)
        if not call.ok or call.value is None:
            raise SetupError(f"stop model load failed ({call.code}): {call.message}")
        self.handle = call.value
        return self

    def __exit__(self, *exc: object) -> None:
        for ctx in self.contexts:
            self.s.shim.free_context(ctx)
        self.contexts.clear()
        if self.handle is not None:
            self.s.shim.free_model(self.handle)
            self.handle = None

    def context(self, n_ctx: int, n_seq_max: int) -> Any:
        call = self.s.shim.create_context(self.handle, n_ctx, n_seq_max, self.s.options.n_threads)
        if not call.ok or call.value is None:
            raise SetupError(f"context create on the stop model (n_ctx {n_ctx}, n_seq_max {n_seq_max}) failed: "
                             f"{call.message}")  # fmt: skip
        self.contexts.append(call.value)
        return call.value

    def tokens(self, text: str) -> list[int]:
        call = self.s.shim.tokenize(self.handle, text, True)
        if not call.ok:
            raise SetupError(f"tokenize on the stop model failed: {call.message}")
        return list(call.value)

    def count(self, text: str) -> int:
        return len(self.tokens(text))


@dataclass
class References:
    """What each prompt must produce: libllama's greedy decode (traces kept), or the shim's generate alone."""

    texts: dict[str, str | None]
    source: str
    traces: dict[str, Trace] = field(default_factory=dict)

    def stops(self) -> dict[str, int | None]:
        """Tokens generated before EOS, per prompt (None: no EOS within the budget); empty when not observed."""
        return {p: generated_count(t) if t.stopped == "eog" else None for p, t in self.traces.items()}

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "texts": self.texts, "stopped_after": self.stops()}


def trace_text(s: Session, ctx: Any, trace: Trace, n: int | None = None) -> str:
    """The text a shim returns for this greedy trace (its first `n` steps; default: up to, not including, EOG)."""
    obs = s.need_observer(*DECODE)
    vocab = obs.lib.llama_model_get_vocab(obs.lib.llama_get_model(obs.context_of(ctx)))
    steps = trace.steps[: generated_count(trace) if n is None else n]
    return "".join(obs.piece(vocab, st.token, special=False) for st in steps)


def observed_references(s: Session, ctx: Any, prompts: list[str], tokens: Callable[[str], list[int]],
                        max_tokens: int) -> References:  # fmt: skip
    """libllama's greedy decode of each prompt on `ctx` (memory cleared before and after each); Skip if unobservable."""
    obs = s.need_observer(*DECODE)
    if not s.can_observe_context():
        s.shim.llama_context(ctx)  # raises Skip with the reason and the config line to add
    traces = {p: obs.greedy_trace(ctx, tokens(p), max_tokens) for p in dict.fromkeys(prompts)}
    texts: dict[str, str | None] = {p: trace_text(s, ctx, t) for p, t in traces.items()}
    return References(texts, "libllama greedy decode on the shim's context", traces)


def references(s: Session, ctx: Any, prompts: list[str], tokens: Callable[[str], list[int]], max_tokens: int,
               fresh_context: Callable[[], Any]) -> References:  # fmt: skip
    """Observed references, else each prompt through the shim's `generate` alone on a fresh context."""
    try:
        return observed_references(s, ctx, prompts, tokens, max_tokens)
    except Skip as exc:
        sampling = s.options.sampling(max_tokens)
        texts = {p: s.shim.generate(fresh_context(), p, sampling).value for p in dict.fromkeys(prompts)}
        return References(texts, f"the shim's generate alone on a fresh context (libllama not observable: {exc})")


def compare_results(prompts: list[str], results: list[str | None] | None,
                    expected: dict[str, str | None]) -> tuple[list[dict[str, Any]], list[str]]:  # fmt: skip
    """Each prompt's result against its expected text: rows for the evidence and the problems found."""
    got = results if results is not None else [None] * len(prompts)
    rows, problems = [], []
    for i, prompt in enumerate(prompts):
        want = expected.get(prompt)
        agree = agreement(want, got[i])
        rows.append({"prompt": clip(prompt, 60), "expected": want, "got": got[i], **agree})
        if got[i] is None:
            problems.append(f"prompt {i} ({clip(prompt, 30)!r}): no result")
        elif not agree["equal"]:
            problems.append(f"prompt {i} ({clip(prompt, 30)!r}): {got[i]!r} where the reference gives {want!r}")
    return rows, problems


def takes(s: Session, op: str, role: str) -> bool:
    """Whether the consumer's function for `op` takes this value (a parameter or a sampling-struct field)."""
    if s.shim._adapted(op) is not None:
        return True
    bound = s.shim.binding.get(op)
    return bound is not None and (bound.has(role) or role in bound.fields.values())


def _left_behind(s: Session, ctx: Any, n_seqs: int) -> Callable[[], dict[int, Any] | None]:
    """What generate_parallel left in the memory (sequence -> positions held; {}: nothing), or None when llama.cpp's
    memory is not observable here. Each call is independent (the next one starts from empty memory), so a
    parallel call releases what its slots and the shared prefix took."""
    obs = s.observer
    if obs is None or obs.memory_api() is None or not s.can_observe_context():
        return lambda: None

    def left() -> dict[int, Any]:
        snap = obs.memory(ctx, n_seqs)
        return {q: [snap.seqs[q].pos_min, snap.seqs[q].pos_max] for q in snap.non_empty()}

    return left


@check("state_across_calls", "state", "generate_parallel after generate, a failed parallel call or a longer queue "
       "= on a fresh context")  # fmt: skip
def state_across_calls(s: Session) -> Verdict:
    sampling = s.options.sampling()
    n_ctx, n_seq_max = 512, 4
    sets = {"shared_prefix": list(SHARED_PREFIX.prompts), "last_token": list(LAST_TOKEN.prompts)}
    fresh: dict[str, Call] = {}
    for key, prompts in sets.items():
        ctx = s.context(n_ctx, n_seq_max)
        fresh[key] = s.shim.generate_parallel(ctx, prompts, sampling)
        s.release(ctx)
    fresh_ctx = s.context(n_ctx, n_seq_max)
    fresh_single = s.shim.generate(fresh_ctx, PROMPT_B, sampling)
    s.release(fresh_ctx)
    problems = [f"{k} on a fresh context failed: {c.message}" for k, c in fresh.items() if not c.ok]
    ctx = s.context(n_ctx, n_seq_max)
    too_long = grow_to_tokens(s.count, s.n_ctx(ctx) + 16)
    before: dict[str, tuple[Callable[[], Call], str]] = {
        "after_generate": (lambda: s.shim.generate(ctx, PROMPT_LONG, sampling), "shared_prefix"),
        "after_failed_parallel": (lambda: s.shim.generate_parallel(ctx, [PROMPT_B, too_long], sampling),
                                  "shared_prefix"),
        "after_longer_queue": (lambda: s.shim.generate_parallel(ctx, list(QUEUE.prompts), sampling), "last_token"),
    }  # fmt: skip
    evidence: dict[str, Any] = {"n_ctx": n_ctx, "n_seq_max": n_seq_max, "fresh": {k: c.value for k, c in fresh.items()}}
    left = _left_behind(s, ctx, n_seq_max)
    for step, (work, key) in before.items():
        first = work()
        after = s.shim.generate_parallel(ctx, sets[key], sampling)
        expected = dict(zip(sets[key], fresh[key].value or [None] * len(sets[key]), strict=True))
        rows, found = compare_results(sets[key], after.value, expected)
        evidence[step] = {"before": first.evidence(), "parallel": after.evidence(), "prompts": rows,
                          "cells_left_by_parallel": left()}  # fmt: skip
        problems += [f"{step}: generate_parallel failed: {after.message}"] if not after.ok else []
        problems += [f"{step}: {p} (fresh context)" for p in found]
        if evidence[step]["cells_left_by_parallel"]:
            problems.append(f"{step}: generate_parallel left cells in sequences "
                            f"{sorted(evidence[step]['cells_left_by_parallel'])}")  # fmt: skip
    single = s.shim.generate(ctx, PROMPT_B, sampling)
    evidence["generate_after_parallel"] = single.evidence() | {"text": single.value, "fresh": fresh_single.value}
    if not single.ok or single.value != fresh_single.value:
        problems.append(f"generate after generate_parallel: {single.value!r}, on a fresh context "
                        f"{fresh_single.value!r} {single.message}")  # fmt: skip
    summary = f"{len(before)} sequences of calls, each then = a fresh context: {not problems}"
    return Verdict(not problems, evidence, failures(problems), summary)


@check("generate_stops_at_eog", "stops", "generate ends where libllama's greedy decode reaches EOG (stop model)")
def generate_stops_at_eog(s: Session) -> Verdict:
    max_tokens = s.options.max_tokens
    with StopModel(s) as stop:
        ctx = stop.context(512, 1)
        refs = observed_references(s, ctx, list(EOG_PROMPTS), stop.tokens, max_tokens)
        stops = refs.stops()
        if sum(1 for n in stops.values() if n is not None) < 2:
            raise Skip(f"the stop model {stop.path} reaches EOG early on fewer than 2 of the prompts: {stops}")
        calls = {p: s.shim.generate(ctx, p, s.options.sampling()) for p in EOG_PROMPTS}
    problems = [f"{clip(p, 30)!r}: generate failed: {c.message}" for p, c in calls.items() if not c.ok]
    ok_calls = [p for p in EOG_PROMPTS if calls[p].ok]
    rows, found = compare_results(ok_calls, [calls[p].value for p in ok_calls], refs.texts)
    evidence = {"model": stop.path, "max_tokens": max_tokens, "reference": refs.to_json(), "prompts": rows}
    summary = f"EOG after {list(stops.values())} tokens; shim text = reference: {not found and not problems}"
    return Verdict(not problems and not found, evidence, failures(problems + found), summary)


@check("parallel_uneven_finish", "stops", "generate_parallel with slots ending at different steps (EOG, refills) = "
       "the reference per prompt (stop model)")  # fmt: skip
def parallel_uneven_finish(s: Session) -> Verdict:
    prompts = list(UNEVEN_PROMPTS)
    max_tokens = s.options.max_tokens
    evidence: dict[str, Any] = {"prompts": prompts, "max_tokens": max_tokens}
    problems: list[str] = []
    with StopModel(s) as stop:
        first = stop.context(512, 1)
        refs = references(s, first, prompts, stop.tokens, max_tokens, lambda: stop.context(512, 1))
        stops = refs.stops()
        if stops and sum(1 for n in stops.values() if n is not None) < 2:
            raise Skip(f"the stop model {stop.path} reaches EOG early on fewer than 2 of the prompts: {stops}")
        evidence["reference"] = refs.to_json()
        for n_seq_max in (3, 4):
            ctx = stop.context(512, n_seq_max)
            call = s.shim.generate_parallel(ctx, prompts, s.options.sampling())
            rows, found = compare_results(prompts, call.value, refs.texts)
            evidence[f"n_seq_max={n_seq_max}"] = call.evidence() | {"prompts": rows}
            problems += [f"n_seq_max {n_seq_max}: generate_parallel failed: {call.message}"] if not call.ok else []
            problems += [f"n_seq_max {n_seq_max}: {p}" for p in found]
    summary = (f"{len(prompts)} prompts stopping after {list(stops.values()) or '?'} tokens, n_seq_max 3 and 4: "
               f"each = the reference: {not problems}")  # fmt: skip
    return Verdict(not problems, evidence, failures(problems), summary)


def order_problems(results: list[str | None] | None, expected: list[str | None],
                   must_fail: tuple[int, ...] = ()) -> list[str]:  # fmt: skip
    """Results in the wrong place: a prompt that must fail with a result, or a result that is another prompt's
    output rather than its own. What a result says otherwise is the other checks' concern."""
    if results is None:
        return ["no per-prompt results returned"]
    problems = [f"prompt {i} cannot run but has a result: {results[i]!r}" for i in must_fail if results[i] is not None]
    for i, got in enumerate(results):
        if i in must_fail or got is None or got == expected[i]:
            continue
        others = [j for j, want in enumerate(expected) if j != i and want is not None and got == want]
        if others:
            problems.append(f"prompt {i}'s result is prompt {others[0]}'s output ({got!r})")
    return problems


@check("parallel_result_order", "stops", "generate_parallel results in prompt order: a failed prompt first, slots "
       "finishing out of order (stop model)")  # fmt: skip
def parallel_result_order(s: Session) -> Verdict:
    max_tokens = s.options.max_tokens
    good = [OUT_OF_ORDER_PROMPTS[1], OUT_OF_ORDER_PROMPTS[0]]
    with StopModel(s) as stop:
        ctx = stop.context(256, 3)
        too_long = grow_to_tokens(stop.count, s.n_ctx(ctx) + 16)
        n_long = stop.count(too_long)
        prompts = list(dict.fromkeys([*OUT_OF_ORDER_PROMPTS, *good]))
        refs = references(s, ctx, prompts, stop.tokens, max_tokens, lambda: stop.context(256, 1))
        failed_first = s.shim.generate_parallel(ctx, [too_long, *good], s.options.sampling())
        all_failed = s.shim.generate_parallel(ctx, [too_long, too_long], s.options.sampling())
        out_of_order = s.shim.generate_parallel(ctx, list(OUT_OF_ORDER_PROMPTS), s.options.sampling())
    problems: list[str] = []
    if all_failed.ok or not all_failed.message:
        problems.append(f"every prompt too long: the call reported code {all_failed.code} and message "
                        f"{all_failed.message!r}")  # fmt: skip
    elif all_failed.value is not None and any(r is not None for r in all_failed.value):
        problems.append(f"every prompt too long, yet results: {all_failed.value}")
    if failed_first.ok or not failed_first.message:
        problems.append(f"failed prompt first: the call reported code {failed_first.code} and message "
                        f"{failed_first.message!r} for a prompt longer than the context")  # fmt: skip
    expected_first = [None, *(refs.texts[p] for p in good)]
    problems += [f"failed prompt first: {p}" for p in order_problems(failed_first.value, expected_first, (0,))]
    if not out_of_order.ok:
        problems.append(f"out of order: generate_parallel failed: {out_of_order.message}")
    expected = [refs.texts[p] for p in OUT_OF_ORDER_PROMPTS]
    problems += [f"finishing out of order: {p}" for p in order_problems(out_of_order.value, expected)]
    evidence = {"reference": refs.to_json(), "too_long_tokens": n_long,
                "failed_first": failed_first.evidence() | {"results": failed_first.value, "expected": expected_first},
                "all_failed": all_failed.evidence() | {"results": all_failed.value},
                "out_of_order": out_of_order.evidence() | {"results": out_of_order.value, "expected": expected}}
    summary = f"failed prompt first and slots finishing out of order: results in prompt order: {not problems}"
    return Verdict(not problems, evidence, failures(problems), summary)


@check("generate_context_full", "stops", "generation stops at the end of the context with the reference's text "
       "(generate and a one-slot generate_parallel)")  # fmt: skip
def generate_context_full(s: Session) -> Verdict:
    max_tokens = s.options.max_tokens
    ctx = s.context(256, 1)
    n_ctx = s.n_ctx(ctx)
    prompt = grow_to_tokens(s.count, n_ctx - 4)
    n_prompt = s.count(prompt)
    room = n_ctx - n_prompt  # positions left: the last token may be sampled without being decoded
    evidence: dict[str, Any] = {"n_ctx": n_ctx, "prompt_tokens": n_prompt, "room": room, "max_tokens": max_tokens}
    try:
        refs = observed_references(s, ctx, [prompt, PROMPT_B], s.tokens, max_tokens)
        trace = refs.traces[prompt]
        if trace.stopped != "context_full":
            raise Skip(f"libllama's greedy decode stopped by {trace.stopped}, not at the end of the context")
        allowed = {trace_text(s, ctx, trace, room), trace_text(s, ctx, trace, room + 1)}
        evidence["reference"] = {"source": refs.source, "steps": len(trace.steps), "allowed": sorted(allowed)}
    except Skip as exc:
        refs, allowed = None, None
        evidence["reference"] = {"source": f"none (libllama not observable: {exc}); one-slot parallel = generate"}
    single = s.shim.generate(ctx, prompt, s.options.sampling())
    pctx = s.context(256, 1)
    parallel = s.shim.generate_parallel(pctx, [prompt, PROMPT_B], s.options.sampling())
    results = parallel.value or [None, None]
    evidence |= {"generate": single.evidence() | {"text": single.value},
                 "parallel": parallel.evidence() | {"results": results}}  # fmt: skip
    problems: list[str] = []
    if not single.ok:
        problems.append(f"generate up to the end of the context failed: {single.message}")
    elif allowed is not None and single.value not in allowed:
        problems.append(f"generate returned {single.value!r}; the context holds {room} more tokens: {sorted(allowed)}")
    if not parallel.ok:
        problems.append(f"generate_parallel (one slot) failed: {parallel.message}")
    want_full = allowed if allowed is not None else {single.value}
    if results[0] not in want_full:
        problems.append(f"generate_parallel: the prompt filling the context gave {results[0]!r}, "
                        f"not {sorted(want_full)}")  # fmt: skip
    want_b = refs.texts[PROMPT_B] if refs is not None else s.shim.generate(s.context(256, 1), PROMPT_B,
                                                                           s.options.sampling()).value  # fmt: skip
    if results[1] != want_b:
        problems.append(f"generate_parallel: the prompt after it (slot refilled) gave {results[1]!r}, not {want_b!r}")
    summary = f"prompt {n_prompt} tokens in n_ctx {n_ctx}: generate {clip(single.value, 40)!r}; parallel agrees"
    return Verdict(not problems, evidence, failures(problems), summary)


# none of them llama.cpp's own default (common: temperature 0.8, top_k 40, top_p 0.95), so a value that never
# reaches the sampler shows: each of VARIED, alone and with the same seed, must change some prompt's output
SAMPLED = {"temperature": 0.7, "top_k": 20, "top_p": 0.9}
VARIED = {"temperature": 1.5, "top_k": 3, "top_p": 0.3, "min_p": 0.3}
SEEDS = (1234, 4321)


def _sampling(s: Session, **values: Any) -> Sampling:
    return replace(s.options.sampling(), **values)


@check("sampling_top_k_disabled", "sampling", "temperature 0 with top_k 0 (disabled) is greedy: = the reference")
def sampling_top_k_disabled(s: Session) -> Verdict:
    missing = [r for r in ("temperature", "top_k") if not takes(s, "generate", r)]
    if missing:
        raise Skip(f"generate takes no {' / '.join(missing)}: the sampler cannot be set that way")
    sampling = _sampling(s, temperature=0.0, top_k=0)
    prompts = list(REFERENCE_PROMPTS)
    parallel_prompts = list(SHARED_PREFIX.prompts)
    ctx = s.context(512, 4)
    refs = references(s, ctx, prompts + parallel_prompts, s.tokens, s.options.max_tokens,
                      lambda: s.context(512, 1))  # fmt: skip
    calls = [s.shim.generate(ctx, p, sampling) for p in prompts]
    problems = [f"{clip(p, 30)!r}: generate failed: {c.message}" for p, c in zip(prompts, calls, strict=True)
                if not c.ok]  # fmt: skip
    rows, found = compare_results(prompts, [c.value for c in calls], refs.texts)
    problems += [f"generate: {p}" for p in found]
    evidence: dict[str, Any] = {"sampling": asdict(sampling), "reference": refs.source, "generate": rows}
    if all(takes(s, "generate_parallel", r) for r in ("temperature", "top_k")):
        call = s.shim.generate_parallel(s.context(512, 4), parallel_prompts, sampling)  # state: state_across_calls
        prows, pfound = compare_results(parallel_prompts, call.value, refs.texts)
        evidence["generate_parallel"] = call.evidence() | {"prompts": prows}
        problems += [f"generate_parallel failed: {call.message}"] if not call.ok else []
        problems += [f"generate_parallel: {p}" for p in pfound]
    else:
        evidence["generate_parallel"] = "not applicable: it takes no temperature / top_k"
    summary = f"temperature 0, top_k 0: {len(prompts)} prompts greedy: {not problems}"
    return Verdict(not problems, evidence, failures(problems), summary)


@check("sampling_seed", "sampling", "a fixed seed reproduces a sampled output (fresh or reused context); another "
       "seed differs")  # fmt: skip
def sampling_seed(s: Session) -> Verdict:
    missing = [r for r in ("temperature", "seed") if not takes(s, "generate", r)]
    if missing:
        raise Skip(f"generate takes no {' / '.join(missing)}: sampling cannot be seeded")
    prompts = [PROMPT_A, PROMPT_B, REFERENCE_PROMPTS[0]]
    seeded = _sampling(s, **SAMPLED, seed=SEEDS[0])
    other = _sampling(s, **SAMPLED, seed=SEEDS[1])
    ctx = s.context(512, 4)

    def texts(context: Any, sampling: Sampling) -> list[str | None]:
        calls = [s.shim.generate(context, p, sampling) for p in prompts]
        problems.extend(f"generate ({sampling.seed}) failed: {c.message}" for c in calls if not c.ok)
        return [c.value for c in calls]

    problems: list[str] = []
    first, again, greedy = texts(ctx, seeded), texts(ctx, seeded), texts(ctx, s.options.sampling())
    fresh, different = texts(s.context(512, 1), seeded), texts(ctx, other)
    evidence: dict[str, Any] = {"sampling": asdict(seeded), "prompts": prompts, "seed_first": first,
                                "seed_again": again, "seed_fresh_context": fresh, "other_seed": different,
                                "greedy": greedy}  # fmt: skip
    if first != again or first != fresh:
        problems.append(f"seed {SEEDS[0]} gave different outputs: {first} / {again} / fresh {fresh}")
    if first == greedy:
        problems.append(f"temperature {SAMPLED['temperature']} gave the greedy output on every prompt: not sampled")
    if first == different:
        problems.append(f"seeds {SEEDS[0]} and {SEEDS[1]} gave the same outputs: the seed is not used")
    evidence["varied"] = {}
    for role, value in VARIED.items():
        if not takes(s, "generate", role):
            evidence["varied"][role] = "not a parameter of generate"
            continue
        varied = texts(ctx, replace(seeded, **{role: value}))
        evidence["varied"][role] = {"value": value, "texts": varied}
        if varied == first:
            problems.append(f"{role} {value} instead of {getattr(seeded, role)} (seed {SEEDS[0]}) changed no "
                            f"output: {role} does not reach the sampler")  # fmt: skip
    evidence["repeat_penalty"] = _penalty_probe(s, ctx, problems)
    if all(takes(s, "generate_parallel", r) for r in ("temperature", "seed")):
        pctx = s.context(512, 4)  # what generate left in memory is state_across_calls' concern
        runs = [s.shim.generate_parallel(pctx, prompts, seeded) for _ in range(2)]
        evidence["generate_parallel"] = [r.evidence() | {"results": r.value} for r in runs]
        problems += [f"generate_parallel failed: {r.message}" for r in runs if not r.ok]
        if runs[0].value != runs[1].value:
            problems.append(f"generate_parallel with seed {SEEDS[0]} twice: {runs[0].value} / {runs[1].value}")
    summary = f"seed {SEEDS[0]} reproduced on {len(prompts)} prompts; seed {SEEDS[1]} differs: {not problems}"
    return Verdict(not problems, evidence, failures(problems), summary)


# A repeat penalty only shows where a sampled token could come again: the test models' logits are small and nearly
# flat, so a penalty of 1.5 changes nothing in 12 tokens. A strong one over 48 flat-sampled tokens changes at least
# one of these prompts' outputs wherever the penalty reaches the sampler (1 of 3 to 3 of 3 here, by fixture).
PENALTY_PROBE = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "max_tokens": 48}
PENALTY_STRONG = 100.0


def _penalty_probe(s: Session, ctx: Any, problems: list[str]) -> dict[str, Any] | str:
    if not takes(s, "generate", "repeat_penalty"):
        return "not a parameter of generate"
    prompts = [PROMPT_A, PROMPT_B, *REFERENCE_PROMPTS]
    outputs: dict[float, list[str | None]] = {}
    for penalty in (1.0, PENALTY_STRONG):
        sampling = _sampling(s, **PENALTY_PROBE, repeat_penalty=penalty, seed=SEEDS[0])
        calls = [s.shim.generate(ctx, p, sampling) for p in prompts]
        problems.extend(f"generate (repeat_penalty {penalty}) failed: {c.message}" for c in calls if not c.ok)
        outputs[penalty] = [c.value for c in calls]
    changed = sum(a != b for a, b in zip(outputs[1.0], outputs[PENALTY_STRONG], strict=True))
    if changed == 0:
        n = PENALTY_PROBE["max_tokens"]
        problems.append(f"repeat_penalty {PENALTY_STRONG} instead of 1.0 changed none of {len(prompts)} outputs of {n} "
                        "sampled tokens: repeat_penalty does not reach the sampler")  # fmt: skip
    return {"sampling": PENALTY_PROBE, "prompts": len(prompts), "outputs_changed": changed}


CONTEXT_CASES = ((512, 1, 3), (512, 3, 2))  # n_ctx, n_seq_max, n_threads: none of them llama.cpp's default


@check("context_params", "context", "context parameters read back: threads (generation and batch), n_seq_max, "
       "batch sizes")  # fmt: skip
def context_params(s: Session) -> Verdict:
    obs = s.need_observer("llama_n_ctx", "llama_n_seq_max", "llama_n_batch", *CONTEXT_PARAMS)
    asked = [r for r in ("n_threads", "n_seq_max", "n_batch") if takes(s, "context_create", r)]
    if not asked:
        raise Skip("context create takes no threads, n_seq_max or batch size: nothing to read back")
    model = s.model()
    evidence: dict[str, Any] = {"parameters_taken": asked}
    problems: list[str] = []
    for n_ctx, n_seq_max, n_threads in CONTEXT_CASES:
        override = {"n_batch": 256} if "n_batch" in asked else None
        call = s.shim.create_context(model, n_ctx, n_seq_max, n_threads, override)
        key = f"n_ctx={n_ctx},n_seq_max={n_seq_max},n_threads={n_threads}"
        if not call.ok:
            problems.append(f"{key}: context create failed: {call.message}")
            evidence[key] = call.evidence()
            continue
        try:
            lctx = obs.context_of(call.value)
            read = {name: int(getattr(obs.lib, f"llama_{name}")(lctx))
                    for name in ("n_ctx", "n_seq_max", "n_batch", "n_ubatch", "n_threads", "n_threads_batch")}
        finally:
            s.shim.free_context(call.value)
        evidence[key] = read
        want = {"n_threads": n_threads, "n_threads_batch": n_threads, "n_seq_max": n_seq_max, "n_batch": 256}
        for name, value in want.items():
            param = "n_threads" if name.startswith("n_threads") else name
            if param in asked and read[name] != value:
                problems.append(f"{key}: llama_{name} reads {read[name]}, asked {value}")
        if read["n_ctx"] < n_ctx:
            problems.append(f"{key}: llama_n_ctx reads {read['n_ctx']}, asked {n_ctx}")
    if "n_threads" in asked:
        # n_threads 0: "as many as the machine has" by the common convention, or refused with a message; never a
        # context that llama.cpp runs with no thread at all
        none = s.shim.create_context(model, 512, 1, 0)
        evidence["n_threads=0"] = none.evidence()
        if none.ok:
            try:
                lctx = obs.context_of(none.value)
                threads = [int(obs.lib.llama_n_threads(lctx)), int(obs.lib.llama_n_threads_batch(lctx))]
            finally:
                s.shim.free_context(none.value)
            evidence["n_threads=0"] |= {"n_threads": threads[0], "n_threads_batch": threads[1]}
            if min(threads) < 1:
                problems.append(f"n_threads 0: llama.cpp runs with n_threads {threads[0]}, n_threads_batch "
                                f"{threads[1]}")  # fmt: skip
        elif not none.message:
            problems.append("n_threads 0: refused without a message")
    # n_ctx 0: llama.cpp's own convention is the model's training context; a library may refuse it instead, with a
    # message. A context it makes must then generate, from a prompt longer than llama.cpp's smallest batch (64)
    long_prompt = grow_to_tokens(s.count, 100)
    zero = s.shim.create_context(model, 0, 1, s.options.n_threads)
    evidence["n_ctx=0"] = zero.evidence()
    if zero.ok:
        try:
            lctx = obs.context_of(zero.value)
            read = {name: int(getattr(obs.lib, f"llama_{name}")(lctx)) for name in ("n_ctx", "n_batch", "n_ubatch")}
            call = s.shim.generate(zero.value, long_prompt, s.options.sampling())
        finally:
            s.shim.free_context(zero.value)
        evidence["n_ctx=0"] |= {"read": read, "generate": call.evidence() | {"text": call.value}}
        if read["n_ctx"] <= 0 or read["n_batch"] <= 0:
            problems.append(f"n_ctx 0: llama.cpp reads n_ctx {read['n_ctx']}, n_batch {read['n_batch']}")
        if not call.ok:
            problems.append(f"n_ctx 0: the context was made but generate ({s.count(long_prompt)} prompt tokens) "
                            f"failed: {call.message}")  # fmt: skip
    elif not zero.message:
        problems.append("n_ctx 0: refused without a message")
    evidence["api_facts"], found = _api_facts(s, obs, model)
    problems += found
    summary = "; ".join(f"{k}: {v}" for k, v in evidence.items() if k not in ("parameters_taken", "n_ctx=0",
                                                                             "n_threads=0", "api_facts"))  # fmt: skip
    return Verdict(not problems, evidence, failures(problems), summary)


def _api_facts(s: Session, obs: Any, model: Any) -> tuple[dict[str, Any], list[str]]:
    """The API's own model and context facts (n_vocab, BOS, EOS, n_ctx), where it has them, against llama.cpp's."""
    needed = ("llama_get_model", "llama_model_get_vocab", "llama_vocab_n_tokens", *MODEL_FACTS)
    if not obs.has(*needed):
        return {"not_observable": obs.why_not(*needed)}, []
    ctx = s.context(512, 1)
    lctx = obs.context_of(ctx)
    vocab = obs.lib.llama_model_get_vocab(obs.lib.llama_get_model(lctx))
    truth = {"n_vocab": (model, obs.lib.llama_vocab_n_tokens(vocab)),
             "token_bos": (model, obs.lib.llama_vocab_bos(vocab)), "token_eos": (model, obs.lib.llama_vocab_eos(vocab)),
             "n_ctx": (ctx, obs.lib.llama_n_ctx(lctx))}  # fmt: skip
    facts: dict[str, Any] = {}
    problems: list[str] = []
    for op, (handle, want) in truth.items():
        got = s.shim.info(op, handle)
        facts[op] = {"api": got, "llama": int(want)}
        if got is not None and got != int(want):
            problems.append(f"the API's {op} is {got}, llama.cpp's {int(want)}")
    s.release(ctx)
    return facts, problems


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


GPU_CHECKS: tuple[str, ...] = ("gpu_offload",)
ALL_CHECKS: tuple[str, ...] = tuple(REGISTRY)
# The checklist every run gets; the GPU checks join it when layers are offloaded (see `checklist`).
CHECK_ORDER: tuple[str, ...] = tuple(n for n in REGISTRY if n not in GPU_CHECKS)


def checklist(n_gpu_layers: int) -> tuple[str, ...]:
    """The default checks for a run: a CPU run would only report the GPU checks as "not asked"."""
    return CHECK_ORDER + GPU_CHECKS if n_gpu_layers else CHECK_ORDER
