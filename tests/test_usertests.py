"""The consumer's own checks (verify/pytest_plugin.py, verify/usertests.py): pytest tests over both builds.

End to end on copies of fixtures/localllm with its example user checks (tests/llama/test_chat_template.py, which
calls `localllm_apply_chat_template`, a function the checklist does not know): `migrate run` runs them on both
builds; a regression planted in the new build only, seen by no built-in check, fails `migrate gate` (class 12)
with the test's own message; a user test that aborts the process is a failed test with the signal; plain `pytest`
with the plugin's options runs the same tests. Builds reuse the cached llama.cpp libraries (two shim compiles a run).
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

from migrate.build import BuildResult
from tests.conftest import LOCALLLM, REPO
from verify.faults import SHIM, copy_fixture
from verify.session import Target
from verify.usertests import UserTestsError, collect, configured, is_user_test

USER_TESTS = LOCALLLM / "tests" / "llama"
EXAMPLE = "tests/llama/test_chat_template.py"
# llama.h defines it at b7836, not at b5415: code under it is in the migrated (new) build only
NEW_BUILD_ONLY = "LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY"


def with_config_tests(root: Path) -> Path:
    """The copy's llama-migrate.toml with `[verify] tests = ["tests/llama"]` (the fixture's own config has none)."""
    config = root / "llama-migrate.toml"
    text = config.read_text(encoding="utf-8")
    assert "[verify]" not in text, "the fixture grew a [verify] table: add `tests` to it instead"
    config.write_text(text + '\n[verify]\ntests = ["tests/llama"]\n', encoding="utf-8")
    return root


def chat_template_regression(root: Path) -> Path:
    """The new build's chat prompt loses its last character: no built-in check calls apply_chat_template."""
    shim = root / SHIM
    text = shim.read_text(encoding="utf-8")
    anchor = "        *result_out = dup_cstring(std::string(buf.data(), static_cast<size_t>(n)));\n"
    assert text.count(anchor) == 1, "the fixture's apply_chat_template changed under this variant"
    planted = f"#ifdef {NEW_BUILD_ONLY}\n        n -= 1;\n#endif\n"
    shim.write_text(text.replace(anchor, planted + anchor), encoding="utf-8")
    return root


def migrate_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migrate", *args], capture_output=True, text=True, timeout=1200,
                          cwd=REPO, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], Any]]:
    """`migrate run` on the fixture with its user tests configured, and `migrate gate` on the planted variant
    (user tests by --tests), two at a time."""
    base = tmp_path_factory.mktemp("usertests")
    plain = with_config_tests(copy_fixture(LOCALLLM, base / "run" / "localllm"))
    planted = chat_template_regression(copy_fixture(LOCALLLM, base / "gate" / "localllm"))
    jobs = {
        "run": ["run", str(plain), "--checks", "generate", "--no-predict", "--quiet", "--json", str(base / "run.json")],
        "gate": ["gate", str(planted), "--checks", "generate", "--no-predict", "--quiet", "--tests",
                 str(planted / "tests" / "llama"), "--json", str(base / "gate.json")],
    }  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(jobs, pool.map(lambda args: migrate_cmd(*args), jobs.values()), strict=True))
    return {key: (proc, json.loads((base / f"{key}.json").read_text()) if (base / f"{key}.json").is_file() else None)
            for key, proc in procs.items()}  # fmt: skip


def comparisons(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in data["verification"]["differential"]["checks"]}


@pytest.mark.slow
def test_migrate_run_runs_the_user_tests_on_both_builds(pipeline_runs: dict[str, Any]) -> None:
    proc, data = pipeline_runs["run"]
    assert data is not None, proc.stderr[-3000:]
    found = comparisons(data)
    user = {name: c for name, c in found.items() if is_user_test(name)}
    assert set(user) == {f"{EXAMPLE}::{t}" for t in ("test_chatml_template_is_applied",
                                                     "test_unknown_template_is_refused_with_a_message",
                                                     "test_eos_ends_generation")}  # fmt: skip
    for name, c in user.items():
        assert (c["old"]["status"], c["new"]["status"]) == ("passed", "passed"), (name, c)
        assert (c["old"]["build"], c["new"]["build"]) == ("old", "new")
        assert c["classification"] == "passes on both"
    # the evidence the test recorded travels with the result
    chatml = user[f"{EXAMPLE}::test_chatml_template_is_applied"]["new"]["evidence"]
    assert chatml["recorded"]["text"].startswith("<|im_start|>system")
    assert found["generate"]["classification"] == "passes on both"


@pytest.mark.slow
def test_a_regression_only_a_user_test_sees_fails_the_gate_with_its_message(pipeline_runs: dict[str, Any]) -> None:
    proc, data = pipeline_runs["gate"]
    assert proc.returncode == 12, proc.stderr[-3000:]
    assert data is not None
    name = f"{EXAMPLE}::test_chatml_template_is_applied"
    c = comparisons(data)[name]
    assert c["classification"] == "regression", c
    assert "chatml prompt is" in c["new"]["message"] and c["old"]["status"] == "passed"
    # the gate's finding is the test with its own message; the one-screen summary names the test
    finding = next(f for k in data["gate"]["classes"] if k["code"] == 12 for f in k["findings"])
    assert name in finding["checks"] and "chatml prompt is" in finding["message"], finding
    assert "test_chatml_template_is_applied: regression: chatml" in proc.stderr
    assert comparisons(data)["generate"]["classification"] == "passes on both"  # the checklist saw nothing


ABORTING = '''
def test_freeing_a_pointer_the_library_never_gave(llama_lib, llama_ffi):
    """localllm_free_string on a pointer into the middle of a buffer: glibc aborts the process"""
    buffer = llama_ffi.new("char[256]")
    llama_lib.localllm_free_string(buffer + 32)


def test_after_the_abort_the_next_test_runs(llama_lib, llama_model):
    assert llama_lib.localllm_n_vocab(llama_model) > 0
'''


@pytest.mark.slow
def test_a_user_test_that_aborts_is_a_failed_test_with_the_signal(localllm_old_build: BuildResult, tiny_model: Path,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_abort.py").write_text(ABORTING, encoding="utf-8")
    out = tmp_path / "verify.json"
    proc = migrate_cmd("verify", "--lib", str(localllm_old_build.library), "--model", str(tiny_model), "--checks",
                       "generate", "--tests", str(tests), "--json", str(out))  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]  # a check failed on the build under test
    results = {r["name"]: r for r in json.loads(out.read_text())["results"]["build"]}
    aborted = next(r for n, r in results.items() if n.endswith("test_freeing_a_pointer_the_library_never_gave"))
    assert aborted["status"] == "failed"
    assert aborted["evidence"]["signal"] == "SIGABRT", aborted
    assert "killed by signal SIGABRT" in aborted["message"]
    assert "free()" in aborted["evidence"]["stderr_tail"]  # glibc's own words, not a Python stack
    after = next(r for n, r in results.items() if n.endswith("test_after_the_abort_the_next_test_runs"))
    assert after["status"] == "passed"


@pytest.mark.slow
def test_plain_pytest_runs_the_same_tests_on_both_builds(localllm_old_build: BuildResult, tiny_model: Path) -> None:
    lib = str(localllm_old_build.library)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "verify.pytest_plugin", "--llama-migrate-lib", lib,
                           "--llama-migrate-lib", lib, "--llama-migrate-model", str(tiny_model), "-v",
                           str(USER_TESTS)], capture_output=True, text=True, timeout=600, cwd=LOCALLLM,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"test_chatml_template_is_applied\[old\] PASSED", proc.stdout)
    assert re.search(r"test_chatml_template_is_applied\[new\] PASSED", proc.stdout)
    assert "6 passed" in proc.stdout and "3 passes on both" in proc.stdout


# --- without builds --------------------------------------------------------------------------------------------


def test_the_repo_suite_never_collects_the_fixtures_user_tests() -> None:
    import tomllib

    assert tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"] == [
        "tests"]  # fmt: skip


def test_without_its_options_the_plugin_skips_user_tests_and_leaves_others_alone(tmp_path: Path) -> None:
    (tmp_path / "test_mixed.py").write_text("def test_user(llama_api):\n    raise AssertionError('ran')\n\n"
                                            "def test_plain():\n    assert True\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "verify.pytest_plugin", "-rs", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 passed, 1 skipped" in proc.stdout and "--llama-migrate-lib" in proc.stdout


def test_collection_lists_only_tests_that_use_the_fixtures(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("import pytest\n\ndef test_user(llama_model):\n    pass\n\n"
                                                   "@pytest.mark.parametrize('n', [1, 2])\n"
                                                   "def test_param(llama_api, n):\n    pass\n\n"
                                                   "def test_plain():\n    pass\n")  # fmt: skip
    target = Target(Path("x.so"), Path("x.h"), Path("m.gguf"), verify={"tests": ["tests"]}, config_root=tmp_path)
    tests = configured(target)
    assert tests is not None and tests.root == tmp_path.resolve()
    assert collect(tests) == ["tests/test_a.py::test_user", "tests/test_a.py::test_param[1]",
                              "tests/test_a.py::test_param[2]"]  # fmt: skip


def test_bad_user_test_paths_and_modules_are_one_line_usage_errors(tmp_path: Path) -> None:
    missing = Target(Path("x.so"), Path("x.h"), Path("m.gguf"), verify={"tests": ["nope"]}, config_root=tmp_path)
    with pytest.raises(UserTestsError, match="user tests not found: .*nope"):
        configured(missing)
    (tmp_path / "test_broken.py").write_text("def test_x(llama_api:\n")
    broken = Target(Path("x.so"), Path("x.h"), Path("m.gguf"), verify={"tests": ["test_broken.py"]},
                    config_root=tmp_path)  # fmt: skip
    with pytest.raises(UserTestsError, match="pytest could not collect .*test_broken.py: .*SyntaxError|invalid"):
        collect(configured(broken))  # type: ignore[arg-type]


def test_plain_pytest_without_a_model_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "verify.pytest_plugin", "--llama-migrate-lib",
                           str(tmp_path / "lib.so"), str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
    assert "--llama-migrate-model GGUF is required" in proc.stderr


LEAKING = '''
def tokenize(lib, ffi, model, free):
    out, n, err = ffi.new("int32_t **"), ffi.new("size_t *"), ffi.new("const char **")
    assert lib.localllm_tokenize(model, b"hello world, a few more words", True, out, n, err) == 0
    if free:
        lib.localllm_free_tokens(out[0])


def test_tokens_freed(llama_heap, llama_lib, llama_ffi, llama_model):
    assert llama_heap.leak(lambda: tokenize(llama_lib, llama_ffi, llama_model, True)) is None


def test_tokens_never_freed(llama_heap, llama_lib, llama_ffi, llama_model):
    found = llama_heap.leak(lambda: tokenize(llama_lib, llama_ffi, llama_model, False))
    assert found is None, found
'''


@pytest.mark.slow
def test_a_leak_fails_the_user_test_with_the_heap_growth(localllm_old_build: BuildResult, tiny_model: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    (tmp_path / "test_leak.py").write_text(LEAKING, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "verify.pytest_plugin", "--llama-migrate-lib",
                           str(localllm_old_build.library), "--llama-migrate-model", str(tiny_model), "-rf",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          check=False)  # fmt: skip
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    assert re.search(r"FAILED test_leak.py::test_tokens_never_freed\[build\] - \[build\] the heap grew", proc.stdout)


# seed 159 draws exactly one of the 511 mutants of the original operators (`--kinds`) that `--all-functions` makes:
# apply_chat_template's `result_out == nullptr` turned into `!=`, which no built-in check reaches (the test says so
# if the fixture's mutants change). The realistic families are strata of their own: without --kinds, --max 1 draws
# one of each.
MUTANT_SEED = "159"
ORIGINAL_KINDS = "comparison,constant,position,memory_call,params_field,loop_exit,argument_swap"


@pytest.mark.slow
def test_mutate_counts_a_mutant_killed_by_a_user_test(tmp_path: Path) -> None:
    sample = ["mutate", str(LOCALLLM), "--all-functions", "--kinds", ORIGINAL_KINDS, "--max", "1",
              "--seed", MUTANT_SEED]  # fmt: skip
    listed = migrate_cmd(*sample, "--list")
    assert ":localllm_apply_chat_template:" in listed.stdout, f"the sample moved: {listed.stdout}"
    assert len(listed.stdout.splitlines()) == 1, listed.stdout
    out = tmp_path / "mutate.json"
    proc = migrate_cmd(*sample, "--checks", "generate", "--tests", str(USER_TESTS), "--json", str(out),
                       "--out", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["killed"] == 1 and data["results"][0]["status"] == "killed"
    assert data["kills_by_check"] == {f"{EXAMPLE}::test_chatml_template_is_applied": 1}
