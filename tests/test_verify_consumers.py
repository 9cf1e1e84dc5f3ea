"""The checklist on consumers of other shapes, with no Python written per consumer: fixtures/localllm-next (error
out-parameter on every call, token-id prompts, separate sampling arguments, a params struct and `char***` for
generate_parallel, the context handle is llama_context itself) and fixtures/textgen (plain C, another prefix,
opaque handles, caller buffers, a last-error function). Real builds at b5415 and b7836, real model."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from migrate.build import build
from migrate.sources import SourceTree
from tests.conftest import REPO, stop_model
from verify.checks import CHECK_ORDER, ERROR, FAILED, PASSED, SKIPPED
from verify.faults import FAULTS, make_variant, migrate_copy
from verify.runner import run_checks
from verify.session import Options, Target

NEXT = REPO / "fixtures" / "localllm-next"
TEXTGEN = REPO / "fixtures" / "textgen"
NEXT_HEADER = NEXT / "custom_files" / "localllm_capi.h"
TEXTGEN_HEADER = TEXTGEN / "src" / "textgen.h"
CHECKLIST = [name for name in CHECK_ORDER if name != "throughput"]

pytestmark = pytest.mark.slow


def migrate_run(fixture: Path, tmp_path: Path) -> dict:
    out = tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "migrate.cli", "run", str(fixture), "--quiet", "--json", str(out),
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


# the one honest skip: each header declares no function besides the operations, so exported_functions has none to call
NO_EXPORTED = {"exported_functions": "skipped: the header exports no function besides the operations"}
EXPECTED_SKIPS = {NEXT: NO_EXPORTED, TEXTGEN: NO_EXPORTED}


@pytest.mark.parametrize("fixture", [NEXT, TEXTGEN], ids=["localllm-next", "textgen"])
def test_other_api_shapes_pass_the_checklist_at_both_versions(fixture: Path, tmp_path: Path) -> None:
    data = migrate_run(fixture, tmp_path)
    expected_skips = EXPECTED_SKIPS[fixture]
    for build_label in ("old", "new"):
        results = data["verification"]["results"][build_label]
        not_passed = {r["name"]: (r["status"], r["message"]) for r in results if r["status"] != PASSED}
        assert not_passed == {name: (SKIPPED, reason) for name, reason in expected_skips.items()}, (build_label,
                                                                                                  not_passed)
    binding = data["verification"]["bindings"]["new"]
    assert set(binding["operations"]) >= {"model_load", "context_create", "tokenize", "generate", "generate_parallel"}
    report = next(tmp_path.glob("*.md")).read_text()
    assert "C API binding" in report and binding["operations"]["generate"]["function"] in report


@pytest.fixture(scope="module")
def textgen_old(old_tree: SourceTree) -> Path:
    result = build(TEXTGEN, old_tree)
    assert result.ok, [str(e) for e in result.errors] or result.log[-2000:]
    return Path(result.library)


def test_opaque_handle_without_accessor_skips_observations_with_the_reason(textgen_old: Path, tmp_path: Path,
                                                                          tiny_model: Path) -> None:  # fmt: skip
    header = tmp_path / "textgen.h"
    header.write_text("\n".join(line for line in TEXTGEN_HEADER.read_text().splitlines()
                                if "tg_session_llama" not in line) + "\n")  # fmt: skip
    target = Target(textgen_old, header, tiny_model, "old")
    results = {r.name: r for r in run_checks(target, Options(), ["memory_cleared", "generate", "context_create"])}
    assert results["memory_cleared"].status == SKIPPED
    reason = results["memory_cleared"].message
    assert "opaque" in reason and "llama_context.function" in reason
    assert results["generate"].status == PASSED and results["context_create"].status == PASSED


def test_a_wrong_config_makes_harness_errors_not_failures(textgen_old: Path, tiny_model: Path) -> None:
    # buf_size bound to the prompt role: the harness passes a string where a size goes, and cffi refuses it
    wrong = {"generate": {"params": {"buf_size": "prompt"}}}
    target = Target(textgen_old, TEXTGEN_HEADER, tiny_model, "old", verify=wrong)
    result = run_checks(target, Options(), ["generate"])[0]
    assert result.status == ERROR, result
    assert "harness could not drive the API" in result.message


@pytest.fixture(scope="module")
def next_migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrate_copy(NEXT, tmp_path_factory.mktemp("next-migrated") / "localllm-next")


# the fixture's [verify] table (its [verify.reference] fixed sampling values: the oracle judges sampled outputs)
NEXT_VERIFY = tomllib.loads((NEXT / "llama-migrate.toml").read_text()).get("verify", {})


def run(library: Path, header: Path, model: Path, names: list[str], label: str) -> dict:
    options = Options(timeout=60, eog_model=str(stop_model()))
    target = Target(library, header, model, label, verify=NEXT_VERIFY, config_root=NEXT)
    return {r.name: r for r in run_checks(target, options, names)}


FAULT_CHECKS = sorted({f.check for f in FAULTS.values() if "localllm-next" in f.elsewhere})


def test_unfaulted_next_fixture_passes_what_the_faults_must_fail(old_tree: SourceTree, new_tree: SourceTree,
                                                                 next_migrated: Path, tiny_model: Path) -> None:
    """Without a fault the named checks pass on both builds (default rules, no kv_unified, at b7836): so each
    failure below is the fault's."""
    for src, tree in ((NEXT, old_tree), (next_migrated, new_tree)):
        result = build(src, tree)
        assert result.ok, [str(e) for e in result.errors]
        results = run(Path(result.library), NEXT_HEADER, tiny_model, FAULT_CHECKS, tree.provided)
        assert {n for n, r in results.items() if r.status != PASSED} == set(), {
            n: r.message[:200] for n, r in results.items()}


NEXT_FAULTS = [k for k, f in FAULTS.items() if "localllm-next" in f.elsewhere]


def test_the_original_faults_are_all_planted_in_the_next_fixture_too() -> None:
    originals = ["generate_keeps_memory", "slots_share_sequence", "first_token_wrong_logits",
                 "slot_ids_reach_n_seq_max", "redecode_last_prefix_token", "partial_seq_cp"]  # fmt: skip
    assert set(originals) <= set(NEXT_FAULTS)


@pytest.mark.parametrize("key", NEXT_FAULTS)
def test_planted_faults_fail_their_checks_on_the_next_fixture(key: str, tmp_path: Path, old_tree: SourceTree,
                                                              new_tree: SourceTree, next_migrated: Path,
                                                              tiny_model: Path) -> None:  # fmt: skip
    fault = FAULTS[key]
    src, tree = (NEXT, old_tree) if "b5421" in fault.versions else (next_migrated, new_tree)
    result = build(make_variant(src, tmp_path / "variant", fault, "localllm-next"), tree)
    assert result.ok, [str(e) for e in result.errors] or result.log[-2000:]
    results = run(Path(result.library), NEXT_HEADER, tiny_model, [fault.check], f"{tree.provided}-{key}")
    assert results[fault.check].status == FAILED, results[fault.check]
    print(f"{key} on localllm-next at {tree.provided}: {results[fault.check].message[:300]}")


ADAPTER = '''\
"""A consumer's adapter: generate through its own code (here the same function, called by hand)."""
from verify.driver import Call


def generate(driver, ctx, prompt, sampling):
    ffi = driver.ffi
    opts = ffi.new("tg_options *")
    opts.max_new_tokens, opts.temp, opts.top_k = sampling.max_tokens, sampling.temperature, sampling.top_k
    opts.top_p, opts.repeat_penalty, opts.seed = sampling.top_p, sampling.repeat_penalty, sampling.seed
    buf = ffi.new("char[]", 4096)
    raw = ffi.NULL if prompt is None else ffi.new("char[]", prompt.encode())
    rc = driver.lib.tg_generate(ctx, raw, opts, buf, 4096)
    if rc != 0:
        return Call(rc, None, ffi.string(driver.lib.tg_last_error()).decode(), False)
    return Call(0, "[adapter] " + ffi.string(buf).decode(), "", True)
'''


def test_an_adapter_module_replaces_an_operation(textgen_old: Path, tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "adapter.py").write_text(ADAPTER)
    target = Target(textgen_old, TEXTGEN_HEADER, tiny_model, "old", verify={"adapter": "adapter.py"},
                    config_root=tmp_path)  # fmt: skip
    result = run_checks(target, Options(), ["generate"])[0]
    assert result.status == PASSED, result
    assert result.evidence["text"].startswith("[adapter] ")
