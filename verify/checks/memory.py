"""memory: the cache holds exactly the last generate's tokens (cleared between calls)."""

from __future__ import annotations

from typing import Any

from verify.checks.framework import Verdict, check, failures
from verify.checks.reference import generated_count, reference_traces
from verify.observe import DECODE, MEMORY_NEW, PERF, MemorySnapshot
from verify.prompts import PROMPT_B, PROMPT_LONG, SHARED_PREFIX
from verify.session import Session, Skip


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
