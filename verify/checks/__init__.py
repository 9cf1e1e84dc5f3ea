"""The consumer checklist as checks, each returning evidence (the values seen), not just a verdict.

The framework (statuses, `CheckResult`, `Verdict`, the registry, `run_check`) is verify/checks/framework.py; each
group of checks is a module of its own, and the order below is the checklist's order (a check registers itself
when its module is imported):

basic: backend init, model load (+ errors), context create (load); tokenize/detokenize (tokenize);
generation: generate, generate_parallel, same output twice, A-B-A, greedy output = libllama's own argmax (generate);
memory: cleared after generate (memory), parallel sequences isolated, shared prefix effective (parallel);
errors: prompt longer than the context, invalid input, context larger than memory (errors); a throughput figure
(throughput); layers on the GPU (offload, GPU runs only); state across calls (state); stopping at EOG, uneven
finishing, result order, the end of the context, control tokens in generated text (stops); sampling values reaching
the sampler, the repeat penalty's window (sampling); context parameters read back (context); frees releasing memory,
failing and out-of-memory calls too (resources); generated inputs against llama.cpp's primitives and every exported
function that is no operation (oracle).
"""

from __future__ import annotations

# the group modules, in checklist order: importing one registers its checks (kept out of the import sorting,
# which would reorder them and with them the checklist)
# isort: off
from verify.checks import load, tokenize, generate, memory, parallel, errors  # noqa: F401
from verify.checks import throughput, offload, state, stops, sampling, context, resources  # noqa: F401
from verify.checks import oracle  # noqa: F401
# isort: on
from verify.checks.compare import agreement, clip, common_token_prefix, compare_results, normalise
from verify.checks.framework import (
    ERROR,
    FAILED,
    PASSED,
    REGISTRY,
    SKIPPED,
    CheckFn,
    CheckResult,
    CheckSpec,
    Environment,
    Verdict,
    check,
    failures,
    run_check,
    takes,
)
from verify.checks.reference import (
    References,
    generated_count,
    observed_references,
    reference_traces,
    references,
    trace_json,
    trace_text,
)
from verify.checks.resources import TCACHE_OFF, heap_in_use, plain_heap, with_tunable
from verify.checks.stops import StopModel, order_problems
from verify.checks.throughput import THROUGHPUT_REPEATS, THROUGHPUT_TOKENS, _count_generated, best_time
from verify.checks.tokenize import read_vectors

GPU_CHECKS: tuple[str, ...] = ("gpu_offload",)
# run when asked for (`--generated N`): a run without it would only report the check as "not asked"
GENERATED_CHECKS: tuple[str, ...] = ("generated_inputs",)
ALL_CHECKS: tuple[str, ...] = tuple(REGISTRY)
# The checklist every run gets; the GPU checks join it when layers are offloaded, the generated inputs when asked
# for (see `checklist`).
CHECK_ORDER: tuple[str, ...] = tuple(n for n in REGISTRY if n not in GPU_CHECKS + GENERATED_CHECKS)


def checklist(n_gpu_layers: int, generated: int = 0) -> tuple[str, ...]:
    """The default checks for a run: a CPU run would only report the GPU checks as "not asked", a run without
    `--generated N` the generated inputs."""
    return CHECK_ORDER + (GPU_CHECKS if n_gpu_layers else ()) + (GENERATED_CHECKS if generated else ())


__all__ = [
    "ALL_CHECKS", "CHECK_ORDER", "ERROR", "FAILED", "GENERATED_CHECKS", "GPU_CHECKS", "PASSED", "REGISTRY", "SKIPPED",
    "TCACHE_OFF",
    "THROUGHPUT_REPEATS", "THROUGHPUT_TOKENS", "CheckFn", "CheckResult", "CheckSpec", "Environment", "References",
    "StopModel", "Verdict", "_count_generated", "agreement", "best_time", "check", "checklist", "clip",
    "common_token_prefix", "compare_results", "failures", "generated_count", "heap_in_use", "normalise",
    "observed_references", "order_problems", "plain_heap", "read_vectors", "reference_traces", "references",
    "run_check", "takes", "trace_json", "trace_text", "with_tunable",
]  # fmt: skip
