"""state: generate_parallel after other calls gives what it gives on a fresh context."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verify.checks.compare import compare_results
from verify.checks.framework import Verdict, check, failures
from verify.driver import Call
from verify.prompts import LAST_TOKEN, PROMPT_B, PROMPT_LONG, QUEUE, SHARED_PREFIX, grow_to_tokens
from verify.session import Session


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
