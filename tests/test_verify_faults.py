"""Planted faults: each variant of the fixture fails the check named for it, and exactly the checks the same defect
reaches (declared with the reason beside each fault in verify/faults.py), over the whole checklist.

Variants of the original fixture are built at b5415 (the b5421 stand-in); variants of the migrated fixture
(`migrate apply`, default rules, no kv_unified) at b7836 (the b7785 stand-in). Faults that are harmless at b5421
are also built there, to show the check tells the upgrade's breakage from a defect that was always there.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from migrate.build import build
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM, LOCALLLM_HEADER, stop_model
from verify.checks import CHECK_ORDER, FAILED, PASSED, CheckResult
from verify.faults import BASELINE_B7785, FAULTS, Fault, make_variant, migrate_copy, plant
from verify.runner import run_checks
from verify.session import Options, Target

# The whole checklist but the throughput figure (timing, not behaviour).
CHECKLIST = [name for name in CHECK_ORDER if name != "throughput"]
OLD_FAULTS = [k for k, f in FAULTS.items() if "b5421" in f.versions]
NEW_ONLY_FAULTS = [k for k, f in FAULTS.items() if f.versions == ("b7785",)]


def build_variant(src: Path, dest: Path, fault: Fault, tree: SourceTree) -> Path:
    result = build(make_variant(src, dest, fault), tree)
    assert result.ok, [str(e) for e in result.errors] or result.log[-2000:]
    return Path(result.library)


# the fixture's [verify] table, as `migrate verify` applies it: its [verify.reference] fixed sampling values make the
# oracle judge sampled outputs (without them a value would be assumed and the comparison only reported)
LOCALLLM_VERIFY = tomllib.loads((LOCALLLM / "llama-migrate.toml").read_text()).get("verify", {})


def run(library: Path, model: Path, names: list[str], label: str) -> dict[str, CheckResult]:
    target = Target(library, LOCALLLM_HEADER, model, label, verify=LOCALLLM_VERIFY, config_root=LOCALLLM)
    return {r.name: r for r in run_checks(target, Options(timeout=60, eog_model=str(stop_model())), names)}


def failed(results: dict[str, CheckResult]) -> set[str]:
    return {name for name, r in results.items() if r.status == FAILED}


def messages(results: dict[str, CheckResult]) -> dict[str, str]:
    return {name: r.message[:200] for name, r in results.items() if r.status != PASSED}


@pytest.fixture(scope="module")
def migrated_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrate_copy(LOCALLLM, tmp_path_factory.mktemp("migrated") / "localllm")


def test_every_fault_matches_both_sides_of_the_upgrade(migrated_fixture: Path) -> None:
    original = (LOCALLLM / "custom_files" / "localllm_capi.cpp").read_text()
    migrated = (migrated_fixture / "custom_files" / "localllm_capi.cpp").read_text()
    for fault in FAULTS.values():
        assert plant(original, fault) != original
        assert plant(migrated, fault) != migrated


def test_declared_breaks_name_real_checks_and_the_faults_own() -> None:
    for fault in FAULTS.values():
        assert set(fault.breaks) == set(fault.versions), fault.key
        for version, names in fault.breaks.items():
            assert fault.check in names or (version == "b7785" and fault.check in BASELINE_B7785), fault.key
            assert set(names) <= set(CHECKLIST), (fault.key, set(names) - set(CHECKLIST))


def test_unfaulted_migrated_fixture_fails_only_the_baseline(new_tree: SourceTree, migrated_fixture: Path,
                                                            tiny_model: Path) -> None:  # fmt: skip
    """What every b7836 variant is compared against: default rules leave only the per-sequence context change."""
    result = build(migrated_fixture, new_tree)
    assert result.ok, [str(e) for e in result.errors]
    results = run(Path(result.library), tiny_model, CHECKLIST, "b7836-unfaulted")
    assert failed(results) == set(BASELINE_B7785), messages(results)


@pytest.mark.parametrize("key", OLD_FAULTS)
def test_fault_fails_its_check_at_b5415(key: str, tmp_path: Path, old_tree: SourceTree, tiny_model: Path) -> None:
    fault = FAULTS[key]
    library = build_variant(LOCALLLM, tmp_path / "variant", fault, old_tree)
    results = run(library, tiny_model, CHECKLIST, f"b5415-{key}")
    assert results[fault.check].status == FAILED, results[fault.check]
    assert failed(results) == set(fault.breaks["b5421"]), messages(results)
    print(f"{key}: {fault.check} failed: {results[fault.check].message[:300]}")


@pytest.mark.parametrize("key", NEW_ONLY_FAULTS)
def test_upgrade_fault_fails_its_check_at_b7836_only(key: str, tmp_path: Path, old_tree: SourceTree,
                                                     new_tree: SourceTree, migrated_fixture: Path,
                                                     tiny_model: Path) -> None:  # fmt: skip
    fault = FAULTS[key]
    new_lib = build_variant(migrated_fixture, tmp_path / "new", fault, new_tree)
    new = run(new_lib, tiny_model, CHECKLIST, f"b7836-{key}")
    assert new[fault.check].status == FAILED, new[fault.check]
    assert failed(new) == {*fault.breaks["b7785"], *BASELINE_B7785}, messages(new)
    print(f"{key} at b7836: {new[fault.check].message[:300]}")
    if key == "redecode_last_prefix_token":
        return  # at b5421 the re-decoded token attends to its own copy: output may drift, so no claim there
    old_lib = build_variant(LOCALLLM, tmp_path / "old", fault, old_tree)
    old = run(old_lib, tiny_model, CHECKLIST, f"b5415-{key}")
    assert failed(old) == set(), messages(old)  # harmless at b5421: the whole checklist passes


def test_abort_is_reported_with_signal_and_assert_text(tmp_path: Path, new_tree: SourceTree, migrated_fixture: Path,
                                                       tiny_model: Path) -> None:  # fmt: skip
    fault = FAULTS["partial_seq_cp"]
    library = build_variant(migrated_fixture, tmp_path / "new", fault, new_tree)
    result = run(library, tiny_model, [fault.check], "b7836-partial-seq-cp")[fault.check]
    assert result.status == FAILED
    assert result.evidence["signal"] == "SIGABRT", result.evidence
    assert "seq_cp() is only supported for full KV buffers" in result.evidence["stderr_tail"]
