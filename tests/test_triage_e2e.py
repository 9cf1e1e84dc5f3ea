"""Failures by cause and known failures on real builds: fixture variants with planted defects, built against
llama.cpp and run through the checklist / `migrate gate` (each gate run verifies only the checks it needs).

- grouping: two planted defects at b5415 (the b5421 stand-in) failing at least five checks between them: 2 causes;
- baseline: a defect failing on both builds passes the gate as a known failure (config `[verify] known_failures`),
  and a baseline written by `migrate verify --write-baseline` excuses it too; the fixture without the defect makes
  the gate report the entry fixed (exit 18); a planted regression listed as known still fails the gate (exit 12).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from migrate.build import build
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM, LOCALLLM_HEADER, stop_model
from verify.causes import CauseKind, Shape, group
from verify.checks import CHECK_ORDER, FAILED
from verify.faults import FAULTS, SHIM, TRIAGE_FAULTS, copy_fixture, make_variant, plant
from verify.runner import run_checks
from verify.session import Options, Target

CHECKLIST = [name for name in CHECK_ORDER if name != "throughput"]


def test_two_planted_defects_are_two_causes(tmp_path: Path, old_tree: SourceTree, tiny_model: Path) -> None:
    """The R backend's case: the parallel path drops the leading space (many checks, one text shape), plus an
    unrelated defect (n_threads_batch not set: its own check)."""
    dest = make_variant(LOCALLLM, tmp_path / "variant", TRIAGE_FAULTS["parallel_strips_leading_space"])
    shim = dest / SHIM
    shim.write_text(plant(shim.read_text(encoding="utf-8"), FAULTS["threads_batch_ignored"]), encoding="utf-8")
    result = build(dest, old_tree)
    assert result.ok, [str(e) for e in result.errors]
    target = Target(Path(result.library), LOCALLLM_HEADER, tiny_model, "b5415-two-defects")
    results = run_checks(target, Options(timeout=60, eog_model=str(stop_model())), CHECKLIST)
    failing = [r.name for r in results if r.status == FAILED]
    causes = group(results)
    print(f"{len(failing)} failing checks, {len(causes)} causes: " + "; ".join(f"{c.id}: {c.checks}" for c in causes))
    assert len(failing) >= 5
    assert [(c.kind, c.signature.key) for c in causes] == [
        (CauseKind.TEXT, Shape.LEADING_WHITESPACE_MISSING.value), (CauseKind.CHECK, "context_params")]
    assert causes[0].checks == [n for n in failing if n != "context_params"]


# --- the gate with known failures -------------------------------------------------------------------------------


def with_known(dest: Path, entries: str, enable: str | None = None) -> Path:
    """The fixture's config with `[verify] known_failures` (and its `enable` list replaced, when given)."""
    config = dest / "llama-migrate.toml"
    text = config.read_text(encoding="utf-8")
    if enable is not None:
        text = re.sub(r"(?m)^enable = .*$", f"enable = {enable}", text)
    if "[verify]" in text:
        text = text.replace("[verify]", f"[verify]\nknown_failures = {entries}", 1)
    else:
        text += f"\n[verify]\nknown_failures = {entries}\n"
    config.write_text(text, encoding="utf-8")
    return dest


SEED_KNOWN = '[{ check = "sampling_seed", reason = "issue 31: the seed never reaches the sampler" }]'
QUEUE_KNOWN = '[{ check = "parallel_isolation_queue", reason = "trying to hide a regression" }]'

VARIANTS = {
    # the defect fails on both builds: known, the gate passes
    "known": (lambda d: with_known(make_variant(LOCALLLM, d, FAULTS["seed_ignored"]), SEED_KNOWN), "sampling_seed"),
    # the same entry without the defect: fixed, remove it from the baseline
    "fixed": (lambda d: with_known(copy_fixture(LOCALLLM, d), SEED_KNOWN), "sampling_seed"),
    # slot ids reach n_seq_max: accepted at b5421, an abort at b7836: a regression, whatever the baseline says
    "regression": (lambda d: with_known(make_variant(LOCALLLM, d, FAULTS["slot_ids_reach_n_seq_max"]), QUEUE_KNOWN,
                                        "[]"), "parallel_isolation_queue"),
}  # fmt: skip


def run_gate(key: str, base: Path) -> dict[str, Any]:
    make, checks = VARIANTS[key]
    work = base / key
    src = make(work / "localllm")
    cmd = [sys.executable, "-m", "migrate", "gate", str(src), "--quiet", "--no-predict", "--out", str(work / "out"),
           "--json", str(work / "gate.json"), "--checks", checks]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.stdout.strip(), f"{key}: no report path printed; stderr:\n{proc.stderr[-3000:]}"
    report = Path(proc.stdout.strip().splitlines()[-1]).read_text(encoding="utf-8")
    return {"code": proc.returncode, "stderr": proc.stderr, "data": json.loads((work / "gate.json").read_text()),
            "report": report, "src": src}  # fmt: skip


@pytest.fixture(scope="module")
def gate_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("triage-gate")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(run_gate, key, base) for key in VARIANTS}
        runs = {key: future.result() for key, future in futures.items()}
    for key, run in runs.items():
        print(f"\n[{key}] exit {run['code']}\n{run['stderr'][-1500:]}")
    return runs


def classes(run: dict[str, Any]) -> list[int]:
    return [c["code"] for c in run["data"]["gate"]["classes"]]


def test_known_failure_failing_on_both_passes_the_gate(gate_runs: dict[str, dict[str, Any]]) -> None:
    run = gate_runs["known"]
    assert run["code"] == 0, run["stderr"][-3000:]
    triage = run["data"]["verification"]["triage"]
    assert triage["headline"] == "1 failing check, 1 cause (1 known)"
    assert [(k["check"], k["state"]) for k in triage["known_failures"]] == [("sampling_seed", "known")]
    assert "1 known failure(s) failing the same way" in run["stderr"]
    # the report opens with the verdict, the failures by cause in it
    assert run["report"].index("## Verdict (gate)") < run["report"].index("## Changes")
    assert "Failures by cause: 1 failing check, 1 cause (1 known)" in run["report"]


def test_a_written_baseline_excuses_the_same_failure(gate_runs: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """`migrate verify --write-baseline` on the known run's two builds, then `--known-failures` with it."""
    data = gate_runs["known"]["data"]
    libs = [data["builds"][role]["library"] for role in ("from", "to")]
    config = tmp_path / "llama-migrate.toml"
    config.write_text("")  # no [verify] known_failures: only the file may excuse it
    baseline = tmp_path / "known.json"
    base = [sys.executable, "-m", "migrate", "verify", "--baseline-lib", libs[0], "--lib", libs[1], "--config",
            str(config), "--checks", "sampling_seed,generate"]  # fmt: skip
    written = subprocess.run([*base, "--write-baseline", str(baseline)], capture_output=True, text=True, timeout=600)
    assert written.returncode == 1, written.stderr[-3000:]  # nothing known yet: the failure counts
    entries = json.loads(baseline.read_text())["known_failures"]
    assert [(e["check"], e["cause"]) for e in entries] == [("sampling_seed", "check:sampling_seed")]
    excused = subprocess.run([*base, "--known-failures", str(baseline)], capture_output=True, text=True, timeout=600)
    assert excused.returncode == 0, excused.stderr[-3000:]


def test_known_failure_that_passes_is_reported_fixed(gate_runs: dict[str, dict[str, Any]]) -> None:
    run = gate_runs["fixed"]
    assert run["code"] == 18, run["stderr"][-3000:]
    assert classes(run) == [18]
    finding = run["data"]["gate"]["classes"][0]["findings"][0]
    assert finding["where"] == "sampling_seed" and "remove it from the baseline" in finding["message"]
    assert "18 known failure fixed: remove it from the baseline: 1; first: sampling_seed" in run["stderr"]


def test_a_regression_is_never_excused(gate_runs: dict[str, dict[str, Any]]) -> None:
    run = gate_runs["regression"]
    assert run["code"] == 12, run["stderr"][-3000:]
    finding = run["data"]["gate"]["classes"][0]["findings"][0]
    assert finding["checks"] == ["parallel_isolation_queue"]
    assert finding["message"].startswith("parallel_isolation_queue (regression): (seq-id-range)")
    assert "regression is never baselined" in finding["message"]
    states = [k["state"] for k in run["data"]["verification"]["triage"]["known_failures"]]
    assert states == ["regression"]
