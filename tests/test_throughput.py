"""The paired tokens/s comparison (verify/throughput.py) and the gate's verdict on it (classes 14 and 17).

Statistics and classification on synthetic figures; one short real comparison (a few pairs, each fixture's b5415
build against itself) shows the resident workers drive every fixture through the generic driver.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import verify.throughput as throughput
from migrate import gate
from migrate.build import build
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM, REPO
from tests.test_gate import outcome
from verify.checks import ERROR, PASSED, CheckResult
from verify.differential import run_differential
from verify.faults import SLOWDOWNS, plant
from verify.session import Options, Target
from verify.throughput import CALLS, Comparison, Settings, Side, _needs_more, compare, median_ci, summarise

FIXTURES = {"localllm": ("custom_files/localllm_capi.h",), "localllm-next": ("custom_files/localllm_capi.h",),
            "textgen": ("src/textgen.h",)}  # fmt: skip


def test_median_interval_is_reproducible_and_holds_the_median() -> None:
    rng = random.Random(1)
    values = [1.0 + rng.gauss(0, 0.05) for _ in range(40)]
    median, low, high = median_ci(values, seed=7)
    assert (median, low, high) == median_ci(values, seed=7)
    assert low <= median <= high and high - low < 0.1
    row = summarise([0.02] * 30, [0.025] * 30, 48, 48)
    assert row["new_over_old"] == 0.8 and row["ci95"] == [0.8, 0.8] and row["pairs"] == 30
    assert row["old"]["tokens_per_s"] == 2400.0 and row["new"]["tokens_per_s"] == 1920.0


def _speed_row(ratio: float, low: float, high: float) -> dict:
    return {"old": {"tokens_per_s": 1000.0}, "new": {"tokens_per_s": 1000.0 * ratio}, "new_over_old": ratio,
            "ci95": [low, high], "pairs": 30}  # fmt: skip


@pytest.mark.parametrize(("ratio", "low", "high", "codes"), [
    (0.60, 0.57, 0.63, {14}),  # the whole interval below 0.75: a regression
    (0.76, 0.70, 0.80, {17}),  # straddles 0.75: too noisy to decide
    (0.74, 0.73, 0.76, {17}),  # the median below the floor is not enough
    (0.82, 0.78, 0.86, set()),  # the whole interval above: within the threshold
])  # fmt: skip
def test_gate_fails_only_on_a_confident_regression(ratio: float, low: float, high: float, codes: set[int]) -> None:
    run = outcome(set())
    run.verification.differential.throughput = {"generate": _speed_row(ratio, low, high)}
    findings = gate.classify(run, gate.Thresholds(max_tps_regression=25))
    assert {f.kind.code for f in findings} == codes
    if codes:
        assert f"95% CI [{low}, {high}]" in findings[0].message
    assert gate.exit_code(findings) == min(codes, default=0)


def test_inconclusive_is_listed_with_a_regression_the_lower_code_wins() -> None:
    run = outcome(set())
    run.verification.differential.throughput = {"generate": _speed_row(0.5, 0.45, 0.55),
                                                "generate_parallel": _speed_row(0.76, 0.7, 0.8)}  # fmt: skip
    findings = gate.classify(run, gate.Thresholds())
    assert [f.kind.code for f in findings] == [14, 17] and gate.exit_code(findings) == 14
    assert gate.summary(findings, gate.Thresholds())[2].startswith("  17 tokens/s inconclusive")


def test_differential_takes_each_builds_throughput_from_the_paired_comparison() -> None:
    old, new = (Target(Path(f"/x/{k}.so"), Path("/x/h.h"), Path("/x/m.gguf"), k) for k in ("old", "new"))
    results = {k: CheckResult("throughput", PASSED, {"generate": {"tokens_per_s": v}}, build=k)
               for k, v in (("old", 100.0), ("new", 90.0))}  # fmt: skip
    rows = {"generate": _speed_row(0.9, 0.88, 0.92)}
    seen: list[str] = []

    def run(target: Target, options: Options, names: list[str], progress: object) -> list[CheckResult]:
        seen.extend(names)
        return [CheckResult(n, PASSED, build=target.label) for n in names]

    diff = run_differential(old, new, Options(), ["generate", "throughput"], run=run,
                            measure=lambda a, b, o: Comparison(rows, results["old"], results["new"]))  # fmt: skip
    assert seen == ["generate", "generate"]  # throughput never runs as a per-build child
    assert diff.throughput == rows
    by_name = {c.name: c for c in diff.comparisons}
    assert by_name["throughput"].old is results["old"] and by_name["throughput"].classification == "passes on both"


def test_a_build_that_cannot_be_bound_is_a_harness_error_not_a_failure(tmp_path: Path) -> None:
    header = tmp_path / "h.h"
    header.write_text("int nothing(void);\n")
    old, new = (Target(tmp_path / f"{k}.so", header, tmp_path / "m.gguf", k) for k in ("old", "new"))
    paired = compare(old, new, Options(timeout=30), Settings(pairs=2, max_pairs=2, instructions=False))
    assert paired.old.status == ERROR and paired.new.status == ERROR
    assert all(row["new_over_old"] is None for row in paired.rows.values())


def test_planted_slowdowns_match_the_shims() -> None:
    for fixture in ("localllm", "localllm-next"):
        text = (REPO / "fixtures" / fixture / "custom_files" / "localllm_capi.cpp").read_text()
        for fault in SLOWDOWNS.values():
            planted = plant(text, fault, fixture)
            assert planted.count("planted_slowdown_guard;") == 2 and "#include <time.h>" in planted
    assert set(SLOWDOWNS) == {"slow_30", "slow_5"}


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_each_fixture_against_itself_through_resident_workers(fixture: str, old_tree: SourceTree,
                                                              tiny_model: Path) -> None:  # fmt: skip
    """A/A: the same b5415 build on both sides, a few pairs (the statistic itself is tested above)."""
    root = LOCALLLM if fixture == "localllm" else REPO / "fixtures" / fixture
    result = build(root, old_tree)
    assert result.ok, [str(e) for e in result.errors]
    header = root / FIXTURES[fixture][0]
    old, new = (Target(Path(result.library), header, tiny_model, k) for k in ("old", "new"))
    paired = compare(old, new, Options(), Settings(pairs=4, max_pairs=4, instructions=False))
    assert paired.old.status == PASSED and paired.new.status == PASSED, (paired.old.message, paired.new.message)
    for row in paired.rows.values():
        assert row["pairs"] == 4 and row["ci95"][0] <= row["new_over_old"] <= row["ci95"][1]
        assert row["old"]["tokens"] == row["new"]["tokens"] > 0
    print(f"{fixture}: {paired.rows['generate']['new_over_old']} {paired.rows['generate']['ci95']}")


# --- the sequential decision (issue 26 item 4) -----------------------------------------------------------------


def _sides(ratios: list[float]) -> tuple[Side, Side]:
    """Two sides whose paired new/old ratios are `ratios` (same tokens per call, old calls 1 s)."""
    old, new = Side("old"), Side("new")
    for side in (old, new):
        side.tokens = dict.fromkeys(CALLS, 10)
    for i, ratio in enumerate(ratios):
        for call in CALLS:
            old.seconds[call].append(1.0)
            new.seconds[call].append(1.0 / ratio)
            for side in (old, new):
                side.wait_seconds[call].append(0.0)
                side.block[call].append(i % 3)
    return old, new


def test_a_straddling_interval_asks_for_more_pairs_until_the_budget_ends() -> None:
    rng = random.Random(1)
    straddling = [0.77 + rng.uniform(-0.08, 0.08) for _ in range(30)]
    settings = Settings(floor=0.75, target_halfwidth=1.0)  # width alone never asks for more here
    old, new = _sides(straddling)
    assert _needs_more(old, new, settings, 30, 0.0) == list(CALLS)
    assert _needs_more(old, new, settings, 30, settings.decide_seconds) == []  # the time budget ended
    assert _needs_more(old, new, settings, settings.decide_max_pairs, 0.0) == []  # so did the pairs
    assert _needs_more(old, new, Settings(target_halfwidth=1.0), 30, 0.0) == []  # no floor: no decision to make
    clear = [0.95 + rng.uniform(-0.02, 0.02) for _ in range(30)]
    assert _needs_more(*_sides(clear), settings, 30, 0.0) == []  # well above the floor: decided
    wide_but_clear = [0.95 + rng.uniform(-0.15, 0.15) for _ in range(30)]
    assert _needs_more(*_sides(wide_but_clear), Settings(floor=0.5), 30, 0.0) == []  # decided: width is no reason
    assert _needs_more(*_sides(wide_but_clear), Settings(), 30, 0.0) == list(CALLS)  # a measurement: it is


def test_the_budget_counts_measuring_not_waiting_for_a_cpu() -> None:
    """On a loaded host a call's wall time is mostly queueing: the decision's budget counts the call's own time."""
    rng = random.Random(2)
    old, new = _sides([0.77 + rng.uniform(-0.08, 0.08) for _ in range(30)])
    for side in (old, new):
        for call in CALLS:  # each call waited 9 s for a CPU on top of its own time
            side.seconds[call] = [s + 9.0 for s in side.seconds[call]]
            side.wait_seconds[call] = [9.0] * len(side.seconds[call])
    measured = throughput.measured_seconds({"old": old, "new": new})
    own = sum(sum(side.timed(call)) for side in (old, new) for call in CALLS)
    assert measured == pytest.approx(own) and measured < 30 * len(CALLS) * 2 * 2  # not the 10 s of wall per call
    settings = Settings(floor=0.75, target_halfwidth=1.0)
    assert measured < settings.decide_seconds  # so the straddling interval still gets more pairs
    assert _needs_more(old, new, settings, 30, measured) == list(CALLS)


def test_each_look_is_taken_at_the_bonferroni_level_of_the_stated_error_rate() -> None:
    settings = Settings(floor=0.75)
    assert settings.looks == 1 + (settings.decide_max_pairs - settings.pairs + settings.step - 1) // settings.step
    assert settings.confidence == pytest.approx(1 - settings.error_rate / settings.looks)
    assert Settings().confidence == 0.95
    old, new = _sides([0.8, 0.9, 0.85, 0.82, 0.88, 0.86] * 5)
    row = summarise(old.timed("generate"), new.timed("generate"), 10, 10, confidence=settings.confidence)
    plain = summarise(old.timed("generate"), new.timed("generate"), 10, 10)
    assert row["confidence"] > plain["confidence"]
    assert row["ci95"][0] <= plain["ci95"][0] and row["ci95"][1] >= plain["ci95"][1]  # wider, never narrower


def test_throughput_is_measured_on_the_throughput_model_the_checks_on_the_targets_own() -> None:
    old, new = (Target(Path(f"/x/{k}.so"), Path("/x/h.h"), Path("/x/tiny.gguf"), k) for k in ("old", "new"))
    seen: dict[str, list[str]] = {"checks": [], "throughput": []}

    def run(target: Target, options: Options, names: list[str], progress: object) -> list[CheckResult]:
        seen["checks"].append(target.model.name)
        return [CheckResult(n, PASSED, build=target.label) for n in names]

    def measure(a: Target, b: Target, options: Options) -> Comparison:
        seen["throughput"] += [a.model.name, b.model.name]
        return Comparison({}, CheckResult("throughput", PASSED, build="old"), CheckResult("throughput", PASSED,
                                                                                         build="new"))  # fmt: skip

    run_differential(old, new, Options(throughput_model="/x/small.gguf"), ["generate", "throughput"], run=run,
                     measure=measure)  # fmt: skip
    assert seen == {"checks": ["tiny.gguf", "tiny.gguf"], "throughput": ["small.gguf", "small.gguf"]}
