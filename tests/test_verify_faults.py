"""Planted faults: each variant of the fixture fails the check named for it, and only the checks it touches.

Variants of the original fixture are built at b5415 (the b5421 stand-in); variants of the migrated fixture
(`migrate apply`, default rules, no kv_unified) at b7836 (the b7785 stand-in). Faults that are harmless at b5421
are also built there, to show the check tells the upgrade's breakage from a defect that was always there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.build import build
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM, LOCALLLM_HEADER
from verify.checks import FAILED, PASSED, CheckResult
from verify.faults import FAULTS, Fault, make_variant, migrate_copy, plant
from verify.runner import run_checks
from verify.session import Options, Target

# Checks a fault in the generation code must leave alone: the library still loads, tokenizes and validates input.
CONTROLS = ["model_load", "tokenize_detokenize", "error_invalid_input"]
OLD_FAULTS = [k for k, f in FAULTS.items() if "b5421" in f.versions]
NEW_ONLY_FAULTS = [k for k, f in FAULTS.items() if f.versions == ("b7785",)]


def build_variant(src: Path, dest: Path, fault: Fault, tree: SourceTree) -> Path:
    result = build(make_variant(src, dest, fault), tree)
    assert result.ok, [str(e) for e in result.errors] or result.log[-2000:]
    return Path(result.library)


def run(library: Path, model: Path, names: list[str], label: str) -> dict[str, CheckResult]:
    target = Target(library, LOCALLLM_HEADER, model, label)
    return {r.name: r for r in run_checks(target, Options(timeout=60), names)}


@pytest.fixture(scope="module")
def migrated_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrate_copy(LOCALLLM, tmp_path_factory.mktemp("migrated") / "localllm")


def test_every_fault_matches_both_sides_of_the_upgrade(migrated_fixture: Path) -> None:
    original = (LOCALLLM / "custom_files" / "localllm_capi.cpp").read_text()
    migrated = (migrated_fixture / "custom_files" / "localllm_capi.cpp").read_text()
    for fault in FAULTS.values():
        assert plant(original, fault) != original
        assert plant(migrated, fault) != migrated


@pytest.mark.parametrize("key", OLD_FAULTS)
def test_fault_fails_its_check_at_b5415(key: str, tmp_path: Path, old_tree: SourceTree, tiny_model: Path) -> None:
    fault = FAULTS[key]
    library = build_variant(LOCALLLM, tmp_path / "variant", fault, old_tree)
    results = run(library, tiny_model, [fault.check, *CONTROLS], f"b5415-{key}")
    assert results[fault.check].status == FAILED, results[fault.check]
    for name in CONTROLS:
        assert results[name].status == PASSED, (name, results[name].message)
    print(f"{key}: {fault.check} failed: {results[fault.check].message[:300]}")


@pytest.mark.parametrize("key", NEW_ONLY_FAULTS)
def test_upgrade_fault_fails_its_check_at_b7836_only(key: str, tmp_path: Path, old_tree: SourceTree,
                                                     new_tree: SourceTree, migrated_fixture: Path,
                                                     tiny_model: Path) -> None:  # fmt: skip
    fault = FAULTS[key]
    new_lib = build_variant(migrated_fixture, tmp_path / "new", fault, new_tree)
    new = run(new_lib, tiny_model, [fault.check, *CONTROLS], f"b7836-{key}")
    assert new[fault.check].status == FAILED, new[fault.check]
    for name in CONTROLS:
        assert new[name].status == PASSED, (name, new[name].message)
    print(f"{key} at b7836: {new[fault.check].message[:300]}")
    if key == "redecode_last_prefix_token":
        return  # at b5421 the re-decoded token attends to its own copy: output may drift, so no claim there
    old_lib = build_variant(LOCALLLM, tmp_path / "old", fault, old_tree)
    old = run(old_lib, tiny_model, [fault.check], f"b5415-{key}")
    assert old[fault.check].status == PASSED, old[fault.check].message


def test_abort_is_reported_with_signal_and_assert_text(tmp_path: Path, new_tree: SourceTree, migrated_fixture: Path,
                                                       tiny_model: Path) -> None:  # fmt: skip
    fault = FAULTS["partial_seq_cp"]
    library = build_variant(migrated_fixture, tmp_path / "new", fault, new_tree)
    result = run(library, tiny_model, [fault.check], "b7836-partial-seq-cp")[fault.check]
    assert result.status == FAILED
    assert result.evidence["signal"] == "SIGABRT", result.evidence
    assert "seq_cp() is only supported for full KV buffers" in result.evidence["stderr_tail"]
