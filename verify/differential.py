"""Old build against new build: the same checks and prompts on both, same model, same machine, same run.

Every check is classified across the two builds (passes on both / regression / fixed / failing on both). Greedy
outputs are compared token by token on libllama's own argmax traces (check `generate_matches_reference`): where
they part, the first differing step is reported with both builds' top-2 logit margins there, so that a numerical
near-tie (the new release computes attention differently, e.g. flash attention AUTO) is told apart from a real
regression. Throughput of generate and generate_parallel: both builds resident, called alternately call by call,
the median of paired new/old ratios with a bootstrap confidence interval (verify/throughput.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from verify.checks import ERROR, FAILED, PASSED, SKIPPED, CheckResult, checklist
from verify.checks.oracle import EXPORTED_CHECK, judge_exported
from verify.outcomes import NOT_VERIFIED, Classification, GreedyVerdict
from verify.runner import Progress, run_builds
from verify.session import Options, Target
from verify.throughput import Comparison
from verify.throughput import compare as compare_paired

REFERENCE_CHECK = "generate_matches_reference"
THROUGHPUT_CHECK = "throughput"

# the classifications by their short names (verify/outcomes.py Classification says what each means)
BOTH_PASS, REGRESSION, FIXED, BOTH_FAIL = (Classification.BOTH_PASS, Classification.REGRESSION, Classification.FIXED,
                                           Classification.BOTH_FAIL)  # fmt: skip
LOST = Classification.LOST
# (both, old only, new only) for a status that is not a verdict on the consumer
HARNESS_ERROR_ON = (Classification.HARNESS_ERROR_ON_BOTH, Classification.HARNESS_ERROR_ON_OLD,
                    Classification.HARNESS_ERROR_ON_NEW)  # fmt: skip
SKIPPED_ON = (Classification.SKIPPED_ON_BOTH, Classification.SKIPPED_ON_OLD, Classification.SKIPPED_ON_NEW)


def _where(old: CheckResult, new: CheckResult, status: str, named: tuple[Classification, ...]) -> Classification:
    """Of (both, old, new): which builds have `status`, the other's being a verdict or the same."""
    both, on_old, on_new = named
    return both if old.status == new.status else (on_old if old.status == status else on_new)


def classify(old: CheckResult | None, new: CheckResult | None) -> Classification:
    if old is None or new is None:
        return Classification.NOT_RUN_ON_OLD if old is None else Classification.NOT_RUN_ON_NEW
    if old.status == PASSED and new.status in NOT_VERIFIED:
        return LOST
    if ERROR in (old.status, new.status):  # the harness's problem: never a regression nor "failing on both"
        return _where(old, new, ERROR, HARNESS_ERROR_ON)
    if SKIPPED in (old.status, new.status):
        return _where(old, new, SKIPPED, SKIPPED_ON)
    return {
        (PASSED, PASSED): BOTH_PASS,
        (PASSED, FAILED): REGRESSION,
        (FAILED, PASSED): FIXED,
        (FAILED, FAILED): BOTH_FAIL,
    }[(old.status, new.status)]


@dataclass
class CheckComparison:
    name: str
    classification: Classification
    old: CheckResult | None
    new: CheckResult | None

    def __post_init__(self) -> None:
        self.classification = Classification(self.classification)  # given as its word, typed

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "classification": self.classification,
                "old": self.old.to_json() if self.old else None,
                "new": self.new.to_json() if self.new else None}  # fmt: skip


@dataclass
class GreedyComparison:
    """One prompt's greedy decode on both builds."""

    prompt: str
    verdict: GreedyVerdict
    steps_compared: int
    first_difference: int | None = None
    old: dict[str, Any] = field(default_factory=dict)  # token, runner_up, margin at the first differing step
    new: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    # not comparable because the sides tokenize the prompt differently (an output difference for the gate, where a
    # missing trace is "not verified"); kept out of the JSON, whose `note` says it in words
    tokenized_differently: bool = False

    def __post_init__(self) -> None:
        self.verdict = GreedyVerdict(self.verdict)  # given as its word, typed

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "tokenized_differently"}


@dataclass(frozen=True)
class Sides:
    """How a comparison's notes name its two sides (old/new builds, or one build's CPU and GPU)."""

    pair: str = "both builds"
    plural: str = "the builds"
    second: str = "the new build"


BUILDS = Sides()


def _step(trace: dict[str, Any], k: int) -> dict[str, Any]:
    if k >= len(trace["tokens"]):
        return {"token": None, "note": f"stopped ({trace['stopped']}) after {len(trace['tokens'])} tokens"}
    return {"token": trace["tokens"][k], "piece": trace["pieces"][k], "runner_up": trace["runner_up"][k],
            "margin": trace["margins"][k]}  # fmt: skip


def compare_trace(prompt: str, old: dict[str, Any], new: dict[str, Any], tie_margin: float,
                  sides: Sides = BUILDS) -> GreedyComparison:  # fmt: skip
    if old["prompt_tokens"] != new["prompt_tokens"]:
        return GreedyComparison(prompt, GreedyVerdict.NOT_COMPARABLE, 0,
                                note=f"{sides.plural} tokenize the prompt differently", tokenized_differently=True)
    a, b = old["tokens"], new["tokens"]
    n = min(len(a), len(b))
    k = next((i for i in range(n) if a[i] != b[i]), None)
    if k is None and len(a) == len(b):
        return GreedyComparison(prompt, GreedyVerdict.IDENTICAL, n)
    k = n if k is None else k
    old_step, new_step = _step(old, k), _step(new, k)
    margins = [m for m in (old_step.get("margin"), new_step.get("margin")) if m is not None]
    near_tie = bool(margins) and min(margins) < tie_margin
    verdict = GreedyVerdict.NEAR_TIE if near_tie else GreedyVerdict.DIVERGENCE
    note = (f"top-2 margin {min(margins):.4g} < {tie_margin}: numerical near-tie, not a behaviour change"
            if near_tie else f"{sides.pair} were sure of different tokens: a real difference")  # fmt: skip
    return GreedyComparison(prompt, verdict, n, k, old_step, new_step, note)


def compare_greedy(old: CheckResult | None, new: CheckResult | None, tie_margin: float,
                   sides: Sides = BUILDS) -> list[GreedyComparison]:  # fmt: skip
    if old is None or new is None:
        return []
    old_traces = old.evidence.get("traces", {})
    new_traces = new.evidence.get("traces", {})
    found = []
    for prompt in old_traces:
        if prompt not in new_traces:
            found.append(GreedyComparison(prompt, GreedyVerdict.NOT_COMPARABLE, 0, note=f"no trace on {sides.second}"))
            continue
        found.append(compare_trace(prompt, old_traces[prompt], new_traces[prompt], tie_margin, sides))
    if not old_traces or not new_traces:
        reason = old.message if not old_traces else new.message
        found.append(GreedyComparison("*", GreedyVerdict.NOT_COMPARABLE, 0, note=f"no greedy traces: {reason}"))
    return found


def nothing_verified(comparisons: list[CheckComparison]) -> list[CheckResult]:
    """The new build's results when none of them really ran (each skipped, or not driven: a harness error), else
    []: a run that checked nothing."""
    new = [c.new for c in comparisons if c.new is not None]
    return new if new and all(r.status in NOT_VERIFIED for r in new) else []


def not_verified_on_new(comparisons: list[CheckComparison]) -> list[CheckComparison]:
    """Checks the new build was not verified on although the old one was, or that the harness could not drive
    on the new build: each is a finding, never silence."""
    return [c for c in comparisons if c.new is not None and (c.classification == LOST or c.new.status == ERROR)]


@dataclass
class DifferentialReport:
    old: Target
    new: Target
    comparisons: list[CheckComparison]
    greedy: list[GreedyComparison]
    throughput: dict[str, Any]

    def counts(self) -> dict[Classification, int]:
        counts: dict[Classification, int] = {}
        for c in self.comparisons:
            counts[c.classification] = counts.get(c.classification, 0) + 1
        return counts

    def results(self, side: str) -> list[CheckResult]:
        return [r for c in self.comparisons if (r := getattr(c, side)) is not None]

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old.to_json(), "new": self.new.to_json(), "counts": self.counts(),
                "checks": [c.to_json() for c in self.comparisons], "greedy": [g.to_json() for g in self.greedy],
                "throughput": self.throughput}  # fmt: skip


def run_differential(old: Target, new: Target, options: Options, names: list[str] | None = None,
                     progress: Progress | None = None, run: Callable[..., list[CheckResult]] | None = None,
                     measure: Callable[[Target, Target, Options], Comparison] = compare_paired,
                     reused_old: dict[str, CheckResult] | None = None) -> DifferentialReport:  # fmt: skip
    """Every named check on both builds (each in its own child; both builds' checks share `options.jobs` workers,
    or `run(target, options, names, progress)` one build after the other); then `throughput`, alone on the
    machine, as one paired comparison of the two (both resident, calls alternated): its rows are the report's
    throughput table, and each build's side of it is that build's `throughput` check."""
    names = list(names or checklist(options.n_gpu_layers, options.generated))
    plain = [n for n in names if n != THROUGHPUT_CHECK]
    if reused_old is not None and set(plain) <= set(reused_old):  # served from the reuse store (migrate/reuse.py)
        old_results = {n: reused_old[n] for n in plain}
        new_results = {r.name: r for r in run_builds([new], options, plain, progress)[new.label]}
    elif run is None:
        both = run_builds([old, new], options, plain, progress)
        old_results, new_results = ({r.name: r for r in both[t.label]} for t in (old, new))
    else:
        old_results = {r.name: r for r in run(old, options, plain, progress)}
        new_results = {r.name: r for r in run(new, options, plain, progress)}
    throughput: dict[str, Any] = {}
    if THROUGHPUT_CHECK in names and options.sanitize:  # instrumented shims: tokens/s would time the sanitizer
        from verify.sanitize import not_sanitized

        old_results[THROUGHPUT_CHECK], new_results[THROUGHPUT_CHECK] = (not_sanitized(THROUGHPUT_CHECK, t.label)
                                                                         for t in (old, new))  # fmt: skip
        if progress:
            progress(THROUGHPUT_CHECK, old_results[THROUGHPUT_CHECK])
            progress(THROUGHPUT_CHECK, new_results[THROUGHPUT_CHECK])
    elif THROUGHPUT_CHECK in names:
        # tokens/s with the throughput model where one is set (a model whose per-token cost dominates), the
        # functional checks above with the targets' own
        model = Path(options.throughput_model) if options.throughput_model else None
        timed = [replace(t, model=model) if model else t for t in (old, new)]
        paired = measure(*timed, options)
        old_results[THROUGHPUT_CHECK], new_results[THROUGHPUT_CHECK] = paired.old, paired.new
        throughput = paired.rows
        if progress:
            progress(THROUGHPUT_CHECK, paired.old)
            progress(THROUGHPUT_CHECK, paired.new)
    # each build recorded its exported functions' results; the new build's check fails where they differ
    judge_exported(old_results.get(EXPORTED_CHECK), new_results.get(EXPORTED_CHECK))
    comparisons = [CheckComparison(n, classify(old_results.get(n), new_results.get(n)), old_results.get(n),
                                   new_results.get(n)) for n in names]  # fmt: skip
    greedy = compare_greedy(old_results.get(REFERENCE_CHECK), new_results.get(REFERENCE_CHECK), options.tie_margin)
    return DifferentialReport(old, new, comparisons, greedy, throughput)
