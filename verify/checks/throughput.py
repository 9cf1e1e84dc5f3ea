"""performance: tokens/s of generate and generate_parallel (one build's figure)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from verify.checks.framework import Verdict, check
from verify.checks.reference import generated_count, reference_traces
from verify.observe import DECODE
from verify.prompts import PROMPT_A, SHARED_PREFIX
from verify.session import Session

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
