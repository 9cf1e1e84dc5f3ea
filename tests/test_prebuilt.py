"""Prebuilt llama.cpp libraries (migrate/prebuilt.py): provenance refused unless exact, auto falls back to source
where no package exists, and a prebuilt build of one release behaves as the source build of it (the equivalence
of issue 26: every check's status and every greedy output identical)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrate.build import BuildOptions, build, build_llama
from migrate.prebuilt import PrebuiltError, check, find_prebuilt, llama_libraries, package_version, platform_name
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM, stop_model
from verify.checks import checklist
from verify.differential import compare_greedy
from verify.faults import migrate_copy
from verify.manifest import read_manifest
from verify.runner import run_builds
from verify.session import Options, Target

TREE = SourceTree(Path("/nonexistent"), "b7785", "b7836", "41d38364e69805827ed0a87927d4f535ad830b02",
                  "npm:node-llama-cpp@3.15.1")  # fmt: skip


def _bins(tmp_path: Path, release: str = "b7836", gpu: object = False, files: tuple[str, ...] | None = None) -> Path:
    bins = tmp_path / "bins"
    bins.mkdir()
    metadata = {"buildOptions": {"platform": "linux", "arch": "x64", "gpu": gpu,
                                 "llamaCpp": {"repo": "ggml-org/llama.cpp", "release": release}}}  # fmt: skip
    (bins / "_nlcBuildMetadata.json").write_text(json.dumps(metadata))
    default = (f"libllama.{release}.so", f"libggml.{release}.so", "libggml-base.so", "libggml-cpu-x64.so")
    for name in default if files is None else files:
        (bins / name).write_bytes(b"\x7fELF")
    return bins


def test_the_exact_release_is_accepted(tmp_path: Path) -> None:
    found = check(_bins(tmp_path), "@node-llama-cpp/linux-x64", "3.15.1", TREE)
    assert [p.name for p in found.libraries] == ["libllama.b7836.so", "libggml.b7836.so", "libggml-base.so"]
    assert found.backends == ("libggml-cpu-x64.so",)
    assert found.describe()["package"] == "@node-llama-cpp/linux-x64@3.15.1"


def test_a_nearby_release_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PrebuiltError, match="built from llama.cpp b7835, not b7836"):
        check(_bins(tmp_path, release="b7835"), "@node-llama-cpp/linux-x64", "3.15.1", TREE)


@pytest.mark.parametrize("problem", ["gpu", "no metadata", "no backend", "no libllama"])
def test_what_cannot_be_checked_or_linked_is_refused(tmp_path: Path, problem: str) -> None:
    files = {"no backend": ("libllama.b7836.so", "libggml.b7836.so", "libggml-base.so"),
             "no libllama": ("libggml.b7836.so", "libggml-base.so", "libggml-cpu-x64.so")}.get(problem)  # fmt: skip
    bins = _bins(tmp_path, gpu="cuda" if problem == "gpu" else False, files=files)
    if problem == "no metadata":
        (bins / "_nlcBuildMetadata.json").unlink()
    with pytest.raises(PrebuiltError):
        check(bins, "@node-llama-cpp/linux-x64", "3.15.1", TREE)


def test_platform_backend_and_package_version() -> None:
    assert platform_name("Linux", "x86_64") == "linux-x64" and platform_name("Windows", "AMD64") is None
    assert package_version(TREE) == "3.15.1"
    with pytest.raises(PrebuiltError, match="only cpu"):
        find_prebuilt(TREE, "cuda")


def test_auto_builds_from_source_where_no_package_exists(old_tree: SourceTree) -> None:
    # node-llama-cpp 3.8.1 bundles b5415, but no @node-llama-cpp/linux-x64@3.8.1 was ever published
    options = BuildOptions(llama_build="auto")
    libs, log = llama_libraries(old_tree, options, None, build_llama)
    assert libs is not None and libs.prebuilt is None
    assert log.startswith("llama.cpp built from source (no prebuilt libraries:")
    refused, why = llama_libraries(old_tree, BuildOptions(llama_build="prebuilt"), None, build_llama)
    assert refused is None and why.startswith("--llama-build prebuilt:")


# --- equivalence on the real libraries -------------------------------------------------------------------------


def test_prebuilt_and_source_builds_of_one_release_agree(tmp_path: Path, new_tree: SourceTree,
                                                         tiny_model: Path) -> None:  # fmt: skip
    """The migrated fixture at b7836 linked against the package's libraries and against the source build: every
    check (throughput aside: timing) has the same status on both, and every greedy output is token-identical."""
    copy = migrate_copy(LOCALLLM, tmp_path / "localllm", ("kv-unified",))
    source = build(copy, new_tree)
    prebuilt = build(copy, new_tree, BuildOptions(llama_build="prebuilt"))
    assert source.ok and prebuilt.ok, (source.errors, prebuilt.errors, prebuilt.log[-2000:])
    assert source.llama_build == "source" and prebuilt.llama_build == "prebuilt"
    manifest = read_manifest(Path(prebuilt.library or ""))
    assert manifest is not None and manifest.prebuilt and manifest.prebuilt["release"] == new_tree.provided
    header = copy / "custom_files" / "localllm_capi.h"
    builds = {"source": source, "prebuilt": prebuilt}
    targets = [Target(Path(r.library or ""), header, tiny_model, label) for label, r in builds.items()]
    names = [n for n in checklist(0) if n != "throughput"]
    results = run_builds(targets, Options(jobs=2, eog_model=str(stop_model())), names)
    statuses = {label: {r.name: r.status for r in rs} for label, rs in results.items()}
    differing = {n: (statuses["source"][n], statuses["prebuilt"][n]) for n in names
                 if statuses["source"][n] != statuses["prebuilt"][n]}  # fmt: skip
    assert not differing, differing
    reference = {label: next(r for r in rs if r.name == "generate_matches_reference") for label, rs in results.items()}
    greedy = compare_greedy(reference["source"], reference["prebuilt"], tie_margin=0.0)
    assert greedy and all(g.verdict == "identical" for g in greedy), greedy
