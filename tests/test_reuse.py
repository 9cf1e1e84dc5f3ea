"""Results served again when every input is unchanged (migrate/reuse.py): a changed input is a different key and
the stage runs again; only clean results are kept; the differential runs only the new build when the old build's
results are given; end to end, a second `migrate run` says what it reused and a changed consumer re-runs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import verify.runner as runner
from migrate import reuse
from migrate.reuse import ReusedStage, check_inputs, clean, lookup, store
from tests.test_parallel_checks import FakeChildren
from verify.checks import FAILED, PASSED, SKIPPED, CheckResult
from verify.differential import run_differential
from verify.session import Options, Prepared, Target

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def build(tmp_path: Path) -> Target:
    """A target made of real files (a library, header, model and consumer tree) whose bytes the key reads."""
    tree = tmp_path / "consumer"
    tree.mkdir()
    (tree / "llama-migrate.toml").write_text("[verify]\n")
    (tree / "shim.cpp").write_text("int f() { return 1; }\n")
    for name, data in (("lib.so", b"\x7fELF library"), ("api.h", b"int f(void);\n"), ("m.gguf", b"GGUF model")):
        (tmp_path / name).write_bytes(data)
    return Target(tmp_path / "lib.so", tmp_path / "api.h", tmp_path / "m.gguf", "old", tmp_path / "llama",
                  {"known_failures": []}, tree)  # fmt: skip


def key(target: Target, options: Options | None = None, names: list[str] | None = None,
        commit: str = "abc") -> str:  # fmt: skip
    return check_inputs(ReusedStage.OLD_CHECKS, target, options or Options(), names, commit).key()


def test_the_same_inputs_give_the_same_key(build: Target) -> None:
    assert key(build) == key(build)
    # how the run is organised is not an input: workers at once, where this run's traces go, throughput settings
    assert key(build, Options(jobs=4, trace_dir="/tmp/x", tps_floor=0.75, tps_max_pairs=30)) == key(build)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


# each input changed in turn: (the target, options, names, commit) the key is then taken with
CHANGES = {
    "library": lambda t: _write(t.library, "ELF library, rebuilt"),
    "header": lambda t: _write(t.header, "int f(void); /* changed */\n"),
    "model": lambda t: _write(t.model, "GGUF another model"),
    "consumer source": lambda t: _write(t.config_root / "shim.cpp", "int f() { return 2; }\n"),
    "consumer config": lambda t: _write(t.config_root / "llama-migrate.toml", '[verify]\nnormalise = "strip"\n'),
    "new consumer file": lambda t: _write(t.config_root / "tests.py", "def test_x(): pass\n"),
    "verify table": lambda t: (replace(t, verify={"known_failures": [{"check": "generate", "reason": "r"}]}),),
    "option": lambda t: (t, Options(max_tokens=13)),
    "names": lambda t: (t, Options(), ["generate"]),
    "commit": lambda t: (t, Options(), None, "abd"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_any_changed_input_is_another_key(build: Target, change: str) -> None:
    before = key(build)
    changed = CHANGES[change](build) or (build,)
    reuse._FILE_DIGESTS.clear()  # a rewrite within one mtime tick must not hide behind the per-process memo
    assert key(*changed) != before


def test_the_harness_environment_is_an_input(build: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    before = key(build)
    monkeypatch.setenv("LLAMA_MIGRATE_REUSE_PROBE", "off")
    assert key(build) != before
    monkeypatch.setenv("LLAMA_MIGRATE_CACHE", "/elsewhere")  # where the cache lives is not
    monkeypatch.delenv("LLAMA_MIGRATE_REUSE_PROBE")
    assert key(build) == before


def test_stored_results_come_back_only_under_their_own_key(build: Target, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    inputs = check_inputs(ReusedStage.OLD_CHECKS, build, Options(), None, "abc")
    results = {"generate": CheckResult("generate", PASSED, {"text": "hi"}, build="old")}
    assert lookup(cache, inputs) is None
    store(cache, inputs, results, "localllm-20260101-000000-1", 1)
    value, reused = lookup(cache, inputs)
    assert value["generate"].status == PASSED and value["generate"].evidence == {"text": "hi"}
    assert (reused.run, reused.items, reused.stage) == ("localllm-20260101-000000-1", 1, ReusedStage.OLD_CHECKS)
    assert "inputs identical" in reused.line() and "localllm-20260101-000000-1" in reused.line()
    other = check_inputs(ReusedStage.OLD_CHECKS, build, Options(max_tokens=5), None, "abc")
    assert lookup(cache, other) is None
    prediction = check_inputs(ReusedStage.PREDICTION, build, Options(), None, "abc")
    assert lookup(cache, prediction) is None  # the same inputs for another stage are another key


def test_an_unreadable_record_is_a_miss(build: Target, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    inputs = check_inputs(ReusedStage.OLD_CHECKS, build, Options(), None, "abc")
    store(cache, inputs, {}, "run", 1)
    (tmp_path / "cache" / "reuse" / f"{inputs.key()}.pickle").write_bytes(b"not a pickle")
    assert lookup(cache, inputs) is None


def test_only_clean_results_are_kept() -> None:
    assert clean([CheckResult("a", PASSED), CheckResult("b", SKIPPED, message="skipped: no GPU")])
    assert not clean([CheckResult("a", PASSED), CheckResult("b", FAILED, message="hang: no result after 60 s")])


def test_the_differential_runs_only_the_new_build_when_the_old_results_are_given(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    children = FakeChildren(seconds=0.01)
    monkeypatch.setattr(runner, "_run_task", children.run)
    monkeypatch.setattr(runner, "prepare", lambda target: Prepared())
    targets = [Target(Path(f"/x/{k}.so"), Path("/x/h.h"), Path("/x/m.gguf"), k) for k in ("old", "new")]
    names = ["model_load", "generate"]
    given = {n: CheckResult(n, PASSED, {"from": "store"}, build="old") for n in names}
    diff = run_differential(*targets, Options(jobs=2), names, reused_old=given)
    assert children.order == ["new:model_load", "new:generate"]
    assert [c.old.evidence for c in diff.comparisons] == [{"from": "store"}] * 2
    assert all(c.classification == "passes on both" for c in diff.comparisons)
    children.order.clear()  # a name the store lacks: both builds run, nothing is mixed
    run_differential(*targets, Options(jobs=2), [*names, "tokenize_detokenize"], reused_old=given)
    assert sorted(children.order) == sorted(f"{b}:{n}" for b in ("old", "new")
                                            for n in [*names, "tokenize_detokenize"])  # fmt: skip


# --- end to end: `migrate run` twice on a copy of the fixture, then with a changed consumer -------------------------

CHECKS = ("backend_init", "model_load", "generate")


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from migrate.pipeline import RunRequest, run

    work = tmp_path_factory.mktemp("reuse")
    src = work / "localllm"
    shutil.copytree(REPO / "fixtures" / "localllm", src, ignore=shutil.ignore_patterns("build", "build-*"))
    (src / "NOTES.txt").write_text(f"{work}\n")  # this session's own consumer: nothing stored by an earlier one
    runs: dict[str, dict] = {}
    for name in ("first", "second", "changed", "no_reuse"):
        if name == "changed":  # a file of the consumer's tree the checks could read (its own tests, an adapter)
            # unique to this session too: an earlier suite's "changed" run on this cache must not have stored it
            (src / "NOTES.txt").write_text(f"changed between runs: {work}\n")
        out = work / name
        request = RunRequest(src=str(src), checks=CHECKS, quiet=True, out=str(out), json_path=str(out / "r.json"),
                             reuse=name != "no_reuse")  # fmt: skip
        out.mkdir()
        code = run(request)
        runs[name] = json.loads((out / "r.json").read_text()) | {"code": code, "report": _report_text(out)}
    return runs


def _report_text(out: Path) -> str:
    return next(out.glob("*.md")).read_text()


def _statuses(run: dict) -> list[tuple[str, str, str]]:
    return [(c["name"], c["old"]["status"], c["new"]["status"]) for c in run["verification"]["differential"]["checks"]]


def test_a_second_run_reuses_and_says_so(pipeline_runs: dict[str, dict]) -> None:
    first, second = pipeline_runs["first"], pipeline_runs["second"]
    assert first["code"] == second["code"] == 0
    assert {r["stage"] for r in second["reused"]} == {ReusedStage.OLD_CHECKS.value, ReusedStage.PREDICTION.value}
    assert all(r["run"] == Path(first["migrated"]).parent.name for r in second["reused"])
    assert "## Reused results" in second["report"] and "inputs identical" in second["report"]
    assert _statuses(second) == _statuses(first)
    assert second["prediction"] == first["prediction"]


def test_a_changed_input_runs_again(pipeline_runs: dict[str, dict]) -> None:
    changed = pipeline_runs["changed"]
    assert changed["code"] == 0 and changed["reused"] == []
    assert "## Reused results" not in changed["report"]
    assert _statuses(changed) == _statuses(pipeline_runs["first"])


def test_no_reuse_recomputes(pipeline_runs: dict[str, dict]) -> None:
    assert pipeline_runs["no_reuse"]["reused"] == []
