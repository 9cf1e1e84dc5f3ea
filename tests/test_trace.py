"""The call tracer and the prediction: traced builds of the fixture (`migrate build --traced`), each planted fault's
violation predicted from the OLD build (b5415) with the fixture's file:line and values, and carried by the same
fault's failing check on the NEW build (b7836) in JSON, JUnit and the report.

Seven traced shim builds (the fixture itself, cached across runs, and three faults at b5415; the three faults on
the migrated copy at b7836), two at a time, llama.cpp reused from the cache; each test then runs one or a few
checks.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from migrate import gate
from migrate.build import BuildOptions, build
from migrate.pipeline import RunOutcome
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM
from verify.checks import FAILED, CheckResult
from verify.contract import Assume, predict, require_contract, trace_file
from verify.faults import FAULTS, SHIM, make_variant, migrate_copy
from verify.report import RunReport, junit_xml, markdown_section
from verify.runner import run_checks
from verify.session import Options, Target
from verify.trace import Call, Trace, events, is_traced, read_trace, tracer_config

CONTRACT = require_contract("b7785")
HEADER = Path("custom_files") / "localllm_capi.h"

# fault -> (the check that reaches it, the clause it breaks at b7785, where: a regex whose match ends on the
# breaking call's line in the original and the migrated shim, values the violation shows)
PLANTED = {
    "slot_ids_reach_n_seq_max": (
        "parallel_isolation_queue", "seq-id-range",
        r"may still hold cells of an earlier prompt\n\s*llama_(?:kv_self_seq_rm\(ctx|memory_seq_rm\(mem)",
        {"argument": "seq", "seq_id": 3, "n_seq_max": 3, "bound": 3, "kv_unified": False},
    ),
    "partial_seq_cp": (
        "parallel_isolation_shared_prefix", "seq-cp-partial",
        r"llama_(?:kv_self_seq_cp\(ctx|memory_seq_cp\(mem), 0, slot\.seq_id",
        {"src": 0, "dst": 1, "p0": 0, "p1": 10, "stream_cells": 256},
    ),
    "redecode_last_prefix_token": (
        "parallel_isolation_shared_prefix", "positions-continue",
        r"\{slot\.seq_id\}, i == n_tokens - 1\);\n\s*\}\n\s*if \(llama_decode",
        {"seq_id": 1, "last_pos": 9, "batch_first_pos": 9, "required_pos": 10},
    ),
}  # fmt: skip


def line_of(shim: Path, pattern: str) -> str:
    """`custom_files/localllm_capi.cpp:N`, N the line the pattern's (single) match ends on."""
    text = shim.read_text(encoding="utf-8")
    found = list(re.finditer(pattern, text))
    assert len(found) == 1, f"/{pattern}/ matches {shim} {len(found)} times"
    return f"{SHIM}:{text[: found[0].end()].count(chr(10)) + 1}"


def traced(src: Path, tree: SourceTree) -> Path:
    result = build(src, tree, BuildOptions(traced=True))
    assert result.ok, [str(e) for e in result.errors] or result.log[-2000:]
    return Path(result.library)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, old_tree: SourceTree, new_tree: SourceTree) -> dict[str, Path]:
    """Consumer trees (`old:KEY`, `new:KEY`, `old:clean`) -> their traced library."""
    base = tmp_path_factory.mktemp("traced")
    migrated = migrate_copy(LOCALLLM, base / "migrated" / "localllm")
    trees = {"old:clean": (LOCALLLM, old_tree)}  # the fixture itself: its traced build stays in the cache
    for key in PLANTED:
        trees[f"old:{key}"] = (make_variant(LOCALLLM, base / "old" / key / "localllm", FAULTS[key]), old_tree)
        trees[f"new:{key}"] = (make_variant(migrated, base / "new" / key / "localllm", FAULTS[key]), new_tree)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(traced, src, tree) for name, (src, tree) in trees.items()}
        libraries = {name: future.result() for name, future in futures.items()}
    return libraries | {f"src:{name}": src for name, (src, _) in trees.items()}


def run_traced(builds: dict[str, Path], name: str, checks: list[str], model: Path, tmp_path: Path,
               label: str) -> list[CheckResult]:  # fmt: skip
    target = Target(builds[name], builds[f"src:{name}"] / HEADER, model, label)
    return run_checks(target, Options(trace_dir=str(tmp_path), contract="b7785"), checks)


def prediction_of(builds: dict[str, Path], name: str, checks: list[str], model: Path, tmp_path: Path,
                  assume: Assume = Assume()):  # noqa: ANN201, B008  # fmt: skip
    results = run_traced(builds, name, checks, model, tmp_path, "old")
    return predict(CONTRACT, [(r.name, trace_file(tmp_path, "old", r.name)) for r in results], builds[name],
                   "old", assume)  # fmt: skip


# --- no build ---------------------------------------------------------------------------------------------------


def test_tracer_follows_each_tree_s_own_llama_h(old_tree: SourceTree, new_tree: SourceTree) -> None:
    old = tracer_config(old_tree.path / "include" / "llama.h")
    new = tracer_config(new_tree.path / "include" / "llama.h")
    assert {"llama_decode", "llama_init_from_model", "llama_kv_self_seq_rm", "llama_kv_self_seq_cp"} <= set(old.wrapped)
    assert not any(n.startswith("llama_memory_") for n in old.wrapped)
    assert {"llama_decode", "llama_get_memory", "llama_memory_seq_rm", "llama_memory_clear"} <= set(new.wrapped)
    assert not any(n.startswith(("llama_kv_self_", "llama_kv_cache_")) for n in new.wrapped)
    assert not {"TRACE_HAS_KV_UNIFIED", "TRACE_HAS_FLASH_ATTN_TYPE"} & set(old.defines)
    assert {"TRACE_HAS_KV_UNIFIED", "TRACE_HAS_FLASH_ATTN_TYPE", "TRACE_HAS_N_CTX_SEQ"} <= set(new.defines)
    assert "-Wl,--wrap=llama_decode" in new.link_flags()


def test_a_trace_cut_by_an_abort_keeps_the_call_it_died_in(tmp_path: Path) -> None:
    path = tmp_path / "t.trace"
    path.write_text('{"ev":"open","tracer":1,"pid":7,"obj":"/x.so"}\n'
                    '{"i":1,"ev":"call","fn":"llama_init_from_model","off":16,"n_ctx":512,"n_seq_max":2}\n'
                    '{"i":1,"ev":"ret","ctx":"0x1","n_ctx_actual":512}\n'
                    '{"i":2,"ev":"call","fn":"llama_memory_seq_cp","off":32,"mem":"0x9","src":0,"dst":1,"p0":0,"p1":5}\n'
                    '{"i":3,"ev":"call","fn":"llama_dec')  # fmt: skip
    trace = read_trace(path)
    assert trace.truncated and trace.pid == 7 and [c.fn for c in trace.calls] == ["llama_init_from_model",
                                                                                   "llama_memory_seq_cp"]
    assert trace.last_unreturned.args["p1"] == 5
    found = events(trace)
    assert [(e.op, e.ctx, e.returned) for e in found] == [("context", "0x1", True), ("seq_cp", "mem:0x9", False)]


def test_predicted_breaks_are_gate_class_16() -> None:
    from verify.contract import check_events, group

    calls = [Call(1, "llama_init_from_model", {"n_ctx": 512, "n_seq_max": 2}, 0, True, None, {"ctx": "0x1"}),
             Call(2, "llama_kv_self_seq_keep", {"ctx": "0x1", "seq": 2}, 0, True, where="a.cpp:9")]
    groups = group(check_events(CONTRACT, events(Trace("x", 1, calls), "generate_parallel")))
    prediction = SimpleNamespace(contract="b7785", breaks=lambda: groups)
    outcome = RunOutcome(src=Path("/c"), migrated=Path("/m/c"), trees={}, prediction=prediction)
    findings = gate.classify(outcome, gate.Thresholds())
    assert gate.exit_code(findings) == 16
    assert findings[0].where == "a.cpp:9" and "(seq-id-range) llama_kv_self_seq_keep(ctx, 2)" in findings[0].message
    assert "the process aborts" in findings[0].message


# --- the old build predicts ---------------------------------------------------------------------------------------


def test_traced_builds_are_marked(builds: dict[str, Path], localllm_old_build) -> None:  # noqa: ANN001
    assert is_traced(builds["old:clean"]) and is_traced(builds["new:partial_seq_cp"])
    assert not is_traced(Path(localllm_old_build.library))


@pytest.mark.parametrize("key", list(PLANTED))
def test_old_build_predicts_the_planted_violation(key: str, builds: dict[str, Path], tiny_model: Path,
                                                  tmp_path: Path) -> None:  # fmt: skip
    check, clause, where_pattern, values = PLANTED[key]
    prediction = prediction_of(builds, f"old:{key}", [check], tiny_model, tmp_path)
    where = line_of(LOCALLLM / SHIM, where_pattern)
    found = [(g.clause, g.where) for g in prediction.breaks()]
    assert found == [(clause, where)], [g.line() for g in prediction.breaks()]
    first = prediction.breaks()[0].first
    assert {k: first.values.get(k) for k in values} == values, first.values
    assert first.check == check and not first.after_break


def test_clean_fixture_predicts_no_break(builds: dict[str, Path], tiny_model: Path, tmp_path: Path) -> None:
    checks = sorted({check for check, *_ in PLANTED.values()} | {"generate", "generate_parallel"})
    prediction = prediction_of(builds, "old:clean", checks, tiny_model, tmp_path)
    assert prediction.breaks() == [] and prediction.consequential() == [], [g.line() for g in prediction.groups]
    assert prediction.calls > 100 and sorted(prediction.checks) == checks
    assert {g.clause for g in prediction.notes()} == {"memory-clear-data"}  # behaves differently, no break


def test_per_sequence_capacity_is_predicted_and_kv_unified_remedies_it(builds: dict[str, Path], tiny_model: Path,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    """The one change the unfaulted fixture meets at b7785 (faults.BASELINE_B7785), remedied by the opt-in rule."""
    plain = prediction_of(builds, "old:clean", ["parallel_isolation_capacity"], tiny_model, tmp_path)
    assert {g.clause for g in plain.breaks()} == {"per-sequence-capacity"}
    first = plain.breaks()[0].first
    assert first.values["n_ctx_seq"] == 256 and first.values["cells"] > 256
    assumed = prediction_of(builds, "old:clean", ["parallel_isolation_capacity"], tiny_model, tmp_path,
                            Assume(kv_unified=True))  # fmt: skip
    assert assumed.breaks() == [] and [g.where for g in assumed.remedied] == [g.where for g in plain.breaks()]


def test_verify_predict_exits_4_and_refuses_an_untraced_library(builds: dict[str, Path], localllm_old_build,  # noqa: ANN001
                                                                tmp_path: Path) -> None:  # fmt: skip
    base = [sys.executable, "-m", "migrate", "verify", "--predict", "b7785", "--checks", "parallel_isolation_queue"]
    proc = subprocess.run([*base, "--lib", localllm_old_build.library], capture_output=True, text=True)
    assert proc.returncode == 2 and "--traced" in proc.stderr, proc.stderr[-2000:]
    out = tmp_path / "v.json"
    proc = subprocess.run([*base, "--lib", str(builds["old:slot_ids_reach_n_seq_max"]), "--json", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 4, proc.stderr[-3000:]
    breaks = json.loads(out.read_text())["prediction"]["breaks"]
    assert [b["clause"] for b in breaks] == ["seq-id-range"]
    assert "PREDICTED RUN-TIME BREAK at b7785" in proc.stderr


# --- the new build's failures carry it ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(PLANTED))
def test_new_build_failure_carries_the_violation(key: str, builds: dict[str, Path], tiny_model: Path,
                                                 tmp_path: Path) -> None:  # fmt: skip
    check, clause, where_pattern, values = PLANTED[key]
    [result] = run_traced(builds, f"new:{key}", [check], tiny_model, tmp_path, "new")
    assert result.status == FAILED, result.message
    where = line_of(builds[f"src:new:{key}"] / SHIM, where_pattern)  # the migrated copy's line
    first = result.evidence["contract"]["first_break"]
    assert (first["clause"], first["where"]) == (clause, where)
    assert {k: first["values"].get(k) for k in values} == values
    note = f"[contract b7785: {where}: ({clause}) "
    assert note in result.message
    # JSON, JUnit and the report
    target = Target(builds[f"new:{key}"], builds[f"src:new:{key}"] / HEADER, tiny_model, "new")
    report = RunReport([target], {"new": [result]}, Options(), 1.0)
    data = report.to_json()["results"]["new"][0]
    assert data["evidence"]["contract"]["first_break"]["where"] == where
    failure = re.search(r'<failure message="([^"]*)"', junit_xml(report))
    assert failure and note in failure.group(1)
    section = markdown_section(report)
    assert "### Run-time contract" in section and f"| new | `{check}` | `{where}` | {clause} |" in section


def test_traced_old_vs_new_does_not_measure_throughput(builds: dict[str, Path], tiny_model: Path,
                                                       tmp_path: Path) -> None:  # fmt: skip
    from verify.cli import make_prediction, run_verification

    old = Target(builds["old:clean"], LOCALLLM / HEADER, tiny_model, "old")
    new = Target(builds["new:partial_seq_cp"], builds["src:new:partial_seq_cp"] / HEADER, tiny_model, "new")
    options = Options(trace_dir=str(tmp_path), contract="b7785")
    report = run_verification([old, new], options, ["generate", "throughput"])
    rows = {c.name: (c.classification, c.new.message) for c in report.differential.comparisons}
    assert list(rows) == ["generate", "throughput"] and rows["generate"][0] == "passes on both"
    assert rows["throughput"][0] == "skipped on both" and "runs traced" in rows["throughput"][1]
    prediction = make_prediction(report, "old", "b7785")
    assert prediction.checks == ["generate"] and prediction.breaks() == []
