"""The fixture after `migrate apply`, built at b7836, against the original built at b5415 (differential mode).

With the opt-in kv-unified rule every check passes on both builds. With the default rules the harness shows the
real behaviour change of b7785 (each sequence gets n_ctx / n_seq_max cells) as a regression of exactly the
near-capacity check, and its message names the fix (kv_unified).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from migrate.build import BuildResult, build
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM, LOCALLLM_HEADER, fixture_verify, stop_model
from verify.cli import run_verification
from verify.differential import BOTH_PASS, REGRESSION
from verify.faults import migrate_copy
from verify.report import markdown_section
from verify.session import Options, Target


def migrated_build(dest: Path, tree: SourceTree, enable: tuple[str, ...] = ()) -> Path:
    result = build(migrate_copy(LOCALLLM, dest, enable), tree)
    assert result.ok, [str(e) for e in result.errors] or result.log[-2000:]
    return Path(result.library)


@pytest.fixture(scope="module")
def old_target(localllm_old_build: BuildResult, tiny_model: Path) -> Target:
    return Target(Path(localllm_old_build.library), LOCALLLM_HEADER, tiny_model, "old")


def test_migrated_with_kv_unified_passes_every_check(tmp_path: Path, new_tree: SourceTree, old_target: Target) -> None:
    library = migrated_build(tmp_path / "localllm", new_tree, enable=("kv-unified",))
    # both bound as `migrate run` binds them, with the fixture's [verify] table (see test_verify's whole checklist)
    old = dataclasses.replace(old_target, verify=fixture_verify(), config_root=LOCALLLM)
    new = Target(library, tmp_path / "localllm" / "custom_files" / "localllm_capi.h", old_target.model, "new",
                 verify=fixture_verify(tmp_path / "localllm"), config_root=tmp_path / "localllm")  # fmt: skip
    report = run_verification([old, new], Options(eog_model=str(stop_model())))
    diff = report.differential
    assert diff is not None
    not_passing = {c.name: (c.classification, c.new.message if c.new else "") for c in diff.comparisons
                   if c.classification != BOTH_PASS}  # fmt: skip
    assert not not_passing, not_passing
    assert all(g.verdict in ("identical", "near-tie") for g in diff.greedy), diff.greedy
    print(f"\ndifferential b5415 vs migrated b7836: {report.seconds:.1f} s; throughput {diff.throughput}")
    print(markdown_section(report))


def test_default_migration_shows_the_per_sequence_context_change(tmp_path: Path, new_tree: SourceTree,
                                                                  old_target: Target) -> None:  # fmt: skip
    library = migrated_build(tmp_path / "localllm", new_tree)
    new = Target(library, tmp_path / "localllm" / "custom_files" / "localllm_capi.h", old_target.model, "new")
    names = ["memory_cleared", "parallel_isolation_queue", "parallel_isolation_capacity"]
    diff = run_verification([old_target, new], Options(), names).differential
    assert diff is not None
    classes = {c.name: c.classification for c in diff.comparisons}
    assert classes == {"memory_cleared": BOTH_PASS, "parallel_isolation_queue": BOTH_PASS,
                       "parallel_isolation_capacity": REGRESSION}  # fmt: skip
    capacity = next(c for c in diff.comparisons if c.name == "parallel_isolation_capacity")
    assert capacity.new is not None
    assert capacity.new.evidence["context"]["n_ctx_seq"] == 256
    assert "kv_unified" in capacity.new.message
