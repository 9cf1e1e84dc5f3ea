"""`migrate gate`: the fixture bumped into each failure class, and the classification on synthetic outcomes.

End-to-end variants are copies of fixtures/localllm with a planted change; each gate run verifies only the checks
its class needs (`--checks`) and reuses the cached llama.cpp builds, so a run costs two shim compiles and seconds
of checks. Changes meant for the new build only sit under `#ifdef LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY`, a macro
llama.h defines at b7836 and not at b5415: the original compiles without them, the migrated copy with them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from migrate import gate
from migrate.build import CompilerMessage
from migrate.config import ConfigError, load_config
from migrate.pipeline import RunOutcome
from tests.conftest import LOCALLLM
from verify.checks import CheckResult
from verify.differential import LOST, CheckComparison, GreedyComparison
from verify.faults import FAULTS, SHIM, copy_fixture, make_variant

NEW_BUILD_ONLY = "LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY"
INCLUDES_END = r"#include <unistd.h>\n"


def insert_after(root: Path, anchor: str, code: str) -> None:
    """Add `code` to the shim after `anchor` (a regex that must match once: a fixture change cannot silently turn a
    variant into a copy of the fixture)."""
    shim = root / SHIM
    text = shim.read_text(encoding="utf-8")
    found = list(re.finditer(anchor, text))
    assert len(found) == 1, f"/{anchor}/ matches the shim {len(found)} times"
    shim.write_text(text[: found[0].end()] + code + text[found[0].end() :], encoding="utf-8")


def new_build_only(code: str) -> str:
    return f"#ifdef {NEW_BUILD_ONLY}\n{code}\n#endif\n"


# --- the variants ------------------------------------------------------------------------------------------------


def manual_action_variant(dest: Path) -> Path:
    """common_init_from_params: its result changed shape at b7785 and no rule can rewrite the use (manual action);
    the use also no longer compiles at the target."""
    copy_fixture(LOCALLLM, dest)
    insert_after(dest, INCLUDES_END, """
[[maybe_unused]] static llama_context * open_with_common(common_params & p) {
    common_init_result init = common_init_from_params(p);
    return init.context.release();
}
""")
    return dest


def compile_error_variant(dest: Path) -> Path:
    """ggml.h's ggml_graph_export is gone at b7836; ggml's headers are outside the API diff (llama.h, llama-cpp.h,
    common/), so only the build at the target finds it. (common.h's DEFAULT_MODEL_PATH, gone too, is now a manual
    action of the plan: macros are cross-referenced.)"""
    copy_fixture(LOCALLLM, dest)
    insert_after(dest, INCLUDES_END, """
static_assert(sizeof(&ggml_graph_export) != 0, "declared (never called: b5415 declares it, defines it nowhere)");
""")
    return dest


def output_difference_variant(dest: Path) -> Path:
    """The new build's contexts read positions 4x compressed (RoPE scale): greedy decoding takes other tokens."""
    copy_fixture(LOCALLLM, dest)
    insert_after(dest, r"ctx_params\.no_perf += true;\n", new_build_only("        ctx_params.rope_freq_scale = 0.25f;"))
    return dest


def slow_variant(dest: Path) -> Path:
    """generate sleeps 20 ms per token in the new build only."""
    copy_fixture(LOCALLLM, dest)
    insert_after(dest, INCLUDES_END, "#include <chrono>\n")
    insert_after(dest, r"const llama_token token = common_sampler_sample\(smpl\.get\(\), ctx, -1\);\n",
                 new_build_only("            std::this_thread::sleep_for(std::chrono::milliseconds(20));"))
    return dest


def failed_check_variant(dest: Path) -> Path:
    """Slot ids reach n_seq_max (accepted at b5421, an abort at b7836), and the consumer did not opt in to the
    kv-unified rule, so long prompts no longer fit a sequence at b7836: one crash, one failed check."""
    make_variant(LOCALLLM, dest, FAULTS["slot_ids_reach_n_seq_max"])
    config = dest / "llama-migrate.toml"
    config.write_text(re.sub(r"(?m)^enable = .*$", "enable = []", config.read_text()))
    return dest


# --- end to end: each failure class, one gate run each --------------------------------------------------------


@dataclass
class GateRun:
    code: int
    stderr: str
    data: dict[str, Any]
    report: str
    seconds: float

    def summary(self) -> list[str]:
        """The gate's one-screen summary: from its verdict line to the end of stderr."""
        lines = self.stderr.splitlines()
        start = max(i for i, line in enumerate(lines) if line.startswith("GATE "))
        return lines[start:]


# variant, the checks its class needs, extra flags. Longest first: two run at a time.
VARIANTS: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    # `generate` as well: a `--checks` list of throughput alone makes the harness run the whole checklist
    "tokens/s": (slow_variant, ["--checks", "generate,throughput", "--max-tps-regression", "50"]),
    "check": (failed_check_variant, ["--checks", "parallel_isolation_queue,parallel_isolation_capacity"]),
    "output": (output_difference_variant, ["--checks", "generate_matches_reference"]),
    "manual": (manual_action_variant, ["--checks", "generate"]),
    "compile": (compile_error_variant, ["--checks", "generate"]),
    # the unchanged fixture, offloaded: no GPU here (nor in a CPU build on a GPU machine), so nothing runs
    "unverified": (lambda dest: copy_fixture(LOCALLLM, dest), ["--checks", "generate,generate_matches_reference",
                                                          "--n-gpu-layers", "99"]),
}


def run_gate(key: str, base: Path) -> GateRun:
    make, flags = VARIANTS[key]
    work = base / key.replace("/", "-")
    src = make(work / "localllm")
    cmd = [sys.executable, "-m", "migrate", "gate", str(src), "--quiet", "--out", str(work / "out"),
           "--json", str(work / "gate.json"), *flags]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    assert proc.stdout.strip(), f"{key}: no report path printed; stderr:\n{proc.stderr[-3000:]}"
    report = Path(proc.stdout.strip().splitlines()[-1]).read_text(encoding="utf-8")
    return GateRun(proc.returncode, proc.stderr, json.loads((work / "gate.json").read_text()), report, seconds)


@pytest.fixture(scope="module")
def gate_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GateRun]:
    """Every variant through `migrate gate`, two at a time: a shim compile uses one core."""
    base = tmp_path_factory.mktemp("gate")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(run_gate, key, base) for key in VARIANTS}
        runs = {key: future.result() for key, future in futures.items()}
    for key, run in runs.items():
        print(f"\n[{key}] exit {run.code} ({run.seconds:.0f} s)\n" + "\n".join(run.summary()))
    return runs


def class_line(run: GateRun, code: int) -> str:
    found = [line for line in run.summary() if line.startswith(f"  {code} ")]
    assert len(found) == 1, run.summary()
    return found[0]


def test_manual_action_exits_10_and_lists_the_compile_error_too(gate_runs: dict[str, GateRun]) -> None:
    run = gate_runs["manual"]
    assert run.code == 10, run.stderr[-3000:]
    assert run.summary()[0].startswith("GATE FAILED (exit 10: manual action required); 2 class(es) found")
    assert re.match(r"  10 manual action required: \d+; first: custom_files/localllm_capi\.cpp:\d+: "
                    r"\(common-init-result\)", class_line(run, 10))  # fmt: skip
    assert "at b7836" in class_line(run, 11)  # the lower class wins, the summary still lists the other
    assert run.data["exit_code"] == 10 and [c["code"] for c in run.data["gate"]["classes"]] == [10, 11]
    assert "## Verdict (gate)" in run.report and "Exit code **10**" in run.report
    assert run.data["verification"] is None  # the target build failed: nothing to verify


def test_compile_error_at_the_target_exits_11(gate_runs: dict[str, GateRun]) -> None:
    run = gate_runs["compile"]
    assert run.code == 11, run.stderr[-3000:]
    assert len(run.summary()) == 2
    assert re.match(r"  11 compile error: 1; first: custom_files/localllm_capi\.cpp:\d+: at b7836: "
                    r".ggml_graph_export. was not declared", class_line(run, 11))  # fmt: skip
    assert run.data["builds"]["from"]["ok"] and not run.data["builds"]["to"]["ok"]


def test_failed_and_crashed_checks_exit_12(gate_runs: dict[str, GateRun]) -> None:
    run = gate_runs["check"]
    assert run.code == 12, run.stderr[-3000:]
    # one finding per cause: the traced re-run names each failure's first contract break and the consumer's line
    assert re.match(r"  12 check fails on the new build: 2 failing checks, 2 causes; first: custom_files/"
                    r"localllm_capi\.cpp:\d+: parallel_isolation_queue \(regression\): \(seq-id-range\)",
                    class_line(run, 12)), class_line(run, 12)  # fmt: skip
    findings = run.data["gate"]["classes"][0]["findings"]
    assert [f["checks"] for f in findings] == [["parallel_isolation_queue"], ["parallel_isolation_capacity"]]
    assert [f["cause"].split("@")[0] for f in findings] == ["contract:seq-id-range", "contract:per-sequence-capacity"]


def test_output_difference_beyond_the_tie_margin_exits_13(gate_runs: dict[str, GateRun]) -> None:
    run = gate_runs["output"]
    assert run.code == 13, run.stderr[-3000:]
    assert re.match(r"  13 output difference \(not a near-tie\): \d+; first: prompt '.+' step \d+: old \d+ ",
                    class_line(run, 13))  # fmt: skip
    greedy = run.data["verification"]["differential"]["greedy"]
    divergent = [g for g in greedy if g["verdict"] == "divergence"]
    assert len(divergent) == run.data["gate"]["classes"][0]["count"]
    for g in divergent:  # a divergence is one where both builds were sure: margins at least the tie margin
        assert min(g["old"]["margin"], g["new"]["margin"]) >= 0.05


def test_tokens_per_second_regression_exits_14(gate_runs: dict[str, GateRun]) -> None:
    run = gate_runs["tokens/s"]
    assert run.code == 14, run.stderr[-3000:]
    assert re.match(r"  14 tokens/s regression: [12]; first: generate: [\d.]+ → [\d.]+ tokens/s \(-\d+%, "
                    r"allowed -50%\)", class_line(run, 14))  # fmt: skip
    assert run.data["verification"]["differential"]["throughput"]["generate"]["new_over_old"] < 0.5


def test_every_check_skipped_exits_15(gate_runs: dict[str, GateRun]) -> None:
    run = gate_runs["unverified"]
    assert run.code == 15, run.stderr[-3000:]
    assert re.match(r"  15 not verified: checks skipped or not driven on the new build: 1; first: checklist: all 2 "
                    r"check\(s\) skipped or not driven: skipped: no GPU", class_line(run, 15)), class_line(run, 15)
    devices = run.data["verification"]["devices"]
    assert [(d["build"], d["status"]) for d in devices] == [("old", "skipped"), ("new", "skipped")]


# --- classification on synthetic outcomes ----------------------------------------------------------------------


def check(name: str, status: str, message: str = "") -> CheckResult:
    return CheckResult(name, status, message=message)


def outcome(classes: set[int], problems: list[str] | None = None) -> RunOutcome:
    """A run that found the given failure classes (10-14), one finding each, plus a near-tie and a fast call."""
    root = Path("/work/consumer")
    action = SimpleNamespace(file=root / "shim.cpp", line=7, rule="common-init-result", message="keep the result")
    plan = SimpleNamespace(actions=[action] if 10 in classes else [], relative=lambda p: Path(p).relative_to(root))
    error = CompilerMessage(str(root / "shim.cpp"), 9, "'DEFAULT_MODEL_PATH' was not declared")
    builds = {"from": SimpleNamespace(ok=True, errors=[], stage="shim"),
              "to": SimpleNamespace(ok=11 not in classes, errors=[error] if 11 in classes else [], stage="shim")}
    passed = check("generate", "passed")
    comparisons = [CheckComparison("generate", "passes on both", passed, passed)]
    if 12 in classes:
        comparisons.append(CheckComparison("parallel_isolation_queue", "regression", check("q", "passed"),
                                           check("q", "failed", "crashed: killed by signal SIGABRT")))
    greedy = [GreedyComparison("A", "near-tie", 12, 0, {"token": 1, "margin": 0.01}, {"token": 2, "margin": 0.4})]
    if 13 in classes:
        greedy.append(GreedyComparison("B", "divergence", 12, 3, {"token": 5, "piece": " x", "margin": 0.5},
                                       {"token": 6, "piece": " y", "margin": 0.9}))
    speed = {"generate": {"old": {"tokens_per_s": 1000.0}, "new": {"tokens_per_s": 900.0}, "new_over_old": 0.9},
             "generate_parallel": {"old": None, "new": None, "new_over_old": None}}
    if 14 in classes:
        speed["generate"] = {"old": {"tokens_per_s": 1000.0}, "new": {"tokens_per_s": 500.0}, "new_over_old": 0.5}
    # the fields of verify.report.RunReport the gate reads (no triage: a run whose failures were not triaged)
    verification = None if 11 in classes else SimpleNamespace(differential=SimpleNamespace(
        comparisons=comparisons, greedy=greedy, throughput=speed), triage=None, devices=[])
    trees = {"from": SimpleNamespace(provided="b5415"), "to": SimpleNamespace(provided="b7836")}
    return RunOutcome(src=root, migrated=Path("/cache/runs/x/consumer"), trees=trees, plan=plan, builds=builds,
                      verification=verification, problems=problems or [])  # fmt: skip


def test_every_class_found_lowest_code_wins_and_the_summary_fits_a_screen() -> None:
    findings = gate.classify(outcome({10, 12, 13, 14}), gate.Thresholds())
    lines = gate.summary(findings, gate.Thresholds())
    assert gate.exit_code(findings) == 10
    assert lines[0] == "GATE FAILED (exit 10: manual action required); 4 class(es) found:"
    assert [line.split()[0] for line in lines[1:]] == ["10", "12", "13", "14"]
    assert lines[1] == "  10 manual action required: 1; first: shim.cpp:7: (common-init-result) keep the result"
    assert lines[2].endswith("parallel_isolation_queue: regression: crashed: killed by signal SIGABRT")
    assert lines[3] == ("  13 output difference (not a near-tie): 1; first: prompt 'B' step 3: old 5 ' x' "
                        "(margin 0.5) vs new 6 ' y' (margin 0.9); tie margin 0.05")  # fmt: skip
    assert lines[4] == "  14 tokens/s regression: 1; first: generate: 1000.0 → 500.0 tokens/s (-50%, allowed -25%)"
    assert len(lines) <= 20 and all(len(line) <= 2 + gate.SUMMARY_WIDTH for line in lines)


@pytest.mark.parametrize(("classes", "expected"), [({10, 11}, 10), ({11}, 11), ({12, 13, 14}, 12), ({13, 14}, 13),
                                                   ({14}, 14), (set(), 0)])  # fmt: skip
def test_exit_code_priority(classes: set[int], expected: int) -> None:
    findings = gate.classify(outcome(classes), gate.Thresholds())
    assert gate.exit_code(findings) == expected
    assert {f.kind.code for f in findings} == classes
    if 11 in classes:
        assert findings[-1].line() == "shim.cpp:9: at b7836: 'DEFAULT_MODEL_PATH' was not declared"


def test_thresholds_decide_speed_and_the_harness_decides_ties() -> None:
    run = outcome({14})  # generate at 0.5 of the old build's tokens/s
    assert gate.classify(run, gate.Thresholds(max_tps_regression=50)) == []  # exactly at the limit: allowed
    assert len(gate.classify(run, gate.Thresholds(max_tps_regression=49))) == 1
    # a near-tie (margin under the tie margin at the first differing step) is never a finding
    assert all(f.kind != gate.OUTPUT for f in gate.classify(outcome(set()), gate.Thresholds()))


def test_all_skipped_is_unverified_some_skipped_is_not() -> None:
    run = outcome(set())
    skipped = check("generate", "skipped", "skipped: no GPU: nvidia-smi not found")
    run.verification.differential.comparisons = [CheckComparison("generate", "skipped on both", skipped, skipped)]
    findings = gate.classify(run, gate.Thresholds())
    assert [(f.kind.code, f.message) for f in findings] == [
        (15, "all 1 check(s) skipped or not driven: skipped: no GPU: nvidia-smi not found")]
    passed = check("model_load", "passed")
    run.verification.differential.comparisons.append(CheckComparison("model_load", "passes on both", passed, passed))
    assert gate.classify(run, gate.Thresholds()) == []


def test_tokenization_difference_is_an_output_difference_missing_traces_are_not_verified() -> None:
    run = outcome(set())
    run.verification.differential.greedy += [
        GreedyComparison("C", "not comparable", 0, note="the builds tokenize the prompt differently",
                         tokenized_differently=True),
        GreedyComparison("*", "not comparable", 0, note="no greedy traces: setup failed"),
    ]
    findings = gate.classify(run, gate.Thresholds())
    # a greedy comparison that could not be made is a finding (not verified), never silence
    assert sorted((f.kind.code, f.where) for f in findings) == [(13, "prompt 'C'"), (15, "prompt '*'")]


def test_passed_on_old_then_skipped_or_error_on_new_is_a_finding() -> None:
    run = outcome(set())
    passed = check("model_load", "passed")
    skipped = check("memory_cleared", "skipped", "skipped: cannot observe llama.cpp state")
    error = check("generate", "error", "harness could not drive the API: no function bound")
    run.verification.differential.comparisons = [
        CheckComparison("model_load", "passes on both", passed, passed),
        CheckComparison("memory_cleared", LOST, passed, skipped),
        CheckComparison("generate", "harness error on new", check("generate", "failed"), error),
    ]  # fmt: skip
    findings = gate.classify(run, gate.Thresholds())
    assert [(f.kind.code, f.where) for f in findings] == [(15, "memory_cleared"), (15, "generate")]
    assert gate.exit_code(findings) == 15  # a harness error is not the consumer's failing check (12)


def test_a_run_problem_without_a_class_still_fails_the_gate() -> None:
    findings = gate.classify(outcome(set(), problems=["something new the gate does not know"]), gate.Thresholds())
    assert gate.exit_code(findings) == 10 and findings[0].message == "something new the gate does not know"


def test_passing_summary_and_report_section() -> None:
    run = outcome(set())
    assert gate.summary([], gate.Thresholds(), run) == [
        "GATE PASSED (exit 0): nothing needs a human: 1 check(s) pass on the new build, greedy output identical or "
        "near-tie (margin < 0.05), tokens/s within -25%"]  # fmt: skip
    section = gate.markdown_section(gate.classify(outcome({12, 14}), gate.Thresholds()), gate.Thresholds())
    assert "Exit code **12**" in section and "| 14 | tokens/s regression | 1 |" in section
    data = gate.to_json(gate.classify(outcome({12, 14}), gate.Thresholds()), gate.Thresholds())
    assert data["exit_code"] == 12 and [c["count"] for c in data["classes"]] == [1, 1]


# --- thresholds from the consumer config, usage errors ------------------------------------------------------------


def test_thresholds_come_from_the_config_and_flags_win(tmp_path: Path) -> None:
    (tmp_path / "llama-migrate.toml").write_text("tie_margin = 0.2\nmax_tps_regression = 40\n")
    config = load_config(tmp_path)
    assert (config.tie_margin, config.max_tps_regression) == (0.2, 40.0)
    assert config.with_thresholds(None, 10).max_tps_regression == 10 and config.tie_margin == 0.2
    assert load_config(LOCALLLM).tie_margin is None  # the gate's defaults apply


def test_a_threshold_that_is_not_a_number_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "llama-migrate.toml").write_text('max_tps_regression = "25%"\n')
    with pytest.raises(ConfigError, match="max_tps_regression must be a non-negative number"):
        load_config(tmp_path)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from migrate.cli import main

    assert main(["gate", "--quiet", "--checks", "generate,no_such_check"]) == 2
    assert "unknown check(s) no_such_check" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["gate", "--max-tps-regression", "-5"])
    assert exc.value.code == 2
