"""generation: generate, generate_parallel, same output twice, A-B-A, greedy output = libllama's own argmax."""

from __future__ import annotations

import time
from typing import Any

from verify import gpu
from verify.checks.compare import agreement, clip
from verify.checks.framework import Verdict, check, failures
from verify.checks.oracle_cases import sampled_cases
from verify.checks.reference import generated_count, reference_traces, trace_json
from verify.observe import DECODE
from verify.prompts import PROMPT_A, PROMPT_B, REFERENCE_PROMPTS, SHARED_PREFIX
from verify.session import Session


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
    evidence: dict[str, Any] = {"prompt": PROMPT_A, "texts": texts, "codes": [r.code for r in runs]}
    problems = [] if all(r.ok for r in runs) and len(set(texts)) == 1 else \
        [f"outputs differ or fail: {agreement(texts[0], texts[1])}"]  # fmt: skip
    # the same wrong answer three times is repeatable too: each run against llama.cpp's own decode (the oracle)
    evidence["reference"], found = sampled_cases(s, ctx, [PROMPT_A] * len(runs), s.options.sampling(),
                                                 [r.value if r.ok else None for r in runs])  # fmt: skip
    problems += found
    summary = f"3 runs, {len(set(texts))} distinct output(s){_reference_note(evidence['reference'], found)}"
    return Verdict(not problems, evidence, failures(problems), summary)


def _reference_note(reference: dict[str, Any] | str, problems: list[str]) -> str:
    """How a summary says what the comparison with the reference gave (or why it was not made)."""
    if isinstance(reference, str):
        return f"; {reference}"
    return f"; {'differ from' if problems else 'equal to'} the reference"


@check("generate_aba", "generation", "A, B, A gives A's output both times (and each equals a fresh context's)")
def generate_aba(s: Session) -> Verdict:
    sampling = s.options.sampling()
    ctx = s.context(512, 1)
    a1, b1, a2 = (s.shim.generate(ctx, p, sampling) for p in (PROMPT_A, PROMPT_B, PROMPT_A))
    fresh_a = s.shim.generate(s.context(512, 1), PROMPT_A, sampling)
    fresh_b = s.shim.generate(s.context(512, 1), PROMPT_B, sampling)
    evidence: dict[str, Any] = {"prompt_A": PROMPT_A, "prompt_B": PROMPT_B, "A1": a1.value, "B": b1.value,
                                "A2": a2.value, "fresh_A": fresh_a.value, "fresh_B": fresh_b.value}  # fmt: skip
    problems = [f"{n} failed: {c.message}" for n, c in (("A1", a1), ("B", b1), ("A2", a2)) if not c.ok]
    if a1.value != a2.value:
        problems.append(f"A after B differs from A before: {agreement(a1.value, a2.value)}")
    if a1.value != fresh_a.value:
        problems.append("A differs from A on a fresh context")
    if b1.value != fresh_b.value:
        problems.append("B after A differs from B on a fresh context")
    summary = f"A1 == A2: {a1.value == a2.value}; A, B equal to fresh contexts: {not problems}"
    # equal to each other and to a fresh context's is not yet right: each against llama.cpp's own decode
    calls = (a1, b1, a2)
    evidence["reference"], found = sampled_cases(s, ctx, [PROMPT_A, PROMPT_B, PROMPT_A], sampling,
                                                 [c.value if c.ok else None for c in calls])  # fmt: skip
    problems += found
    summary += _reference_note(evidence["reference"], found)
    return Verdict(not problems, evidence, failures(problems), summary)


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
