"""The store of compiled shims (migrate/compiled.py): the same inputs in another folder are served the same library,
any change to them compiles again, and what the key cannot see is never served."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from migrate import compiled
from migrate.build import BuildResult, build
from migrate.build_settings import BuildSettings
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM

CMAKE = "add_library(shim SHARED {root}/src/a.cpp)\ntarget_include_directories(shim PRIVATE {root}/src)\n"


def _consumer(root: Path, text: str = "int f() { return 1; }\n") -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.cpp").write_text(text)
    (root / "src" / "a.h").write_text("int f();\n")
    return root


def _key(root: Path, settings: BuildSettings | None = None) -> compiled.CompiledKey:
    return compiled.compiled_key(CMAKE.format(root=root), root, settings or BuildSettings(), [root / "src" / "a.cpp"],
                                 [], "shim")  # fmt: skip


def test_the_same_consumer_in_two_folders_has_one_key(tmp_path: Path) -> None:
    first, second = _consumer(tmp_path / "run-1"), _consumer(tmp_path / "run-2")
    assert _key(first).key is not None and _key(first) == _key(second)


def test_a_changed_or_added_file_changes_the_key(tmp_path: Path) -> None:
    base = _key(_consumer(tmp_path / "a"))
    assert _key(_consumer(tmp_path / "b", "int f() { return 2; }\n")) != base
    added = _consumer(tmp_path / "c")
    (added / "src" / "llama.h").write_text("// would shadow the tree's header\n")
    assert _key(added) != base


@pytest.mark.parametrize("spelling", ["__FILE__", "__builtin_FILE()", "std::source_location::current()"])
def test_a_consumer_that_compiles_its_own_path_in_is_not_served(tmp_path: Path, spelling: str) -> None:
    root = _consumer(tmp_path / "c", f"const char *where() {{ return {spelling}; }}\n")
    key = _key(root)
    assert key.key is None and "a.cpp" in key.reason


def test_inputs_outside_the_root_and_debug_information_are_not_served(tmp_path: Path) -> None:
    root, outside = _consumer(tmp_path / "c"), tmp_path / "elsewhere"
    outside.mkdir()
    assert "include_dirs" in _key(root, BuildSettings(include_dirs=(str(outside),))).reason
    assert "-g" in _key(root, BuildSettings(flags=("-g",))).reason
    assert "-g" in _key(root, BuildSettings(environment={"CXXFLAGS": "-O2 -g"})).reason
    own = root / "lib" / "libown.so"
    assert "RUNPATH" in _key(root, BuildSettings(link_libraries=(str(own),))).reason
    assert compiled.compiled_key("", None, BuildSettings(), [], [], "shim").key is None


def test_store_and_lookup_round_trip_and_a_damaged_entry_is_dropped(tmp_path: Path) -> None:
    cache, library = tmp_path / "cache", tmp_path / "built" / "libshim.so"
    library.parent.mkdir()
    library.write_bytes(b"\x7fELF library bytes")
    compiled.store(cache, "k1", library)
    served = tmp_path / "run" / "out" / "libshim.so"
    assert compiled.lookup(cache, "k1", served) and served.read_bytes() == library.read_bytes()
    assert not compiled.lookup(cache, "k2", tmp_path / "other" / "libshim.so")
    (compiled.store_dir(cache) / "k1" / "libshim.so").write_bytes(b"damaged")
    assert not compiled.lookup(cache, "k1", tmp_path / "again" / "libshim.so")
    assert not (compiled.store_dir(cache) / "k1").exists()


def test_old_entries_are_pruned(tmp_path: Path) -> None:
    library = tmp_path / "libshim.so"
    library.write_bytes(b"x")
    for i in range(compiled.KEEP_ENTRIES + 3):
        compiled.store(tmp_path / "cache", f"k{i}", library)
    assert len(list(compiled.store_dir(tmp_path / "cache").iterdir())) == compiled.KEEP_ENTRIES


def test_a_copy_of_a_built_consumer_is_served_and_a_changed_copy_compiles(
    localllm_old_build: BuildResult, old_tree: SourceTree, tmp_path: Path
) -> None:
    first, second = tmp_path / "copy-1", tmp_path / "copy-2"
    shutil.copytree(LOCALLLM, first)
    shutil.copytree(LOCALLLM, second)
    served = [build(first, old_tree), build(second, old_tree)]
    assert all(r.ok for r in served) and served[1].shim_reused is not None
    assert served[1].shim_seconds < 5 and "served from the compiled shims" in served[1].log
    assert Path(served[1].library or "").read_bytes() == Path(served[0].library or "").read_bytes()
    assert Path(served[1].library or "").parent != Path(served[0].library or "").parent
    changed = tmp_path / "copy-3"
    shutil.copytree(LOCALLLM, changed)
    source = changed / "custom_files" / "localllm_capi.cpp"
    source.write_text(source.read_text() + f"\n// changed: {time.time_ns()}\n")  # never stored by an earlier run
    rebuilt = build(changed, old_tree)
    assert rebuilt.ok and rebuilt.shim_reused is None and rebuilt.shim_reused != served[1].shim_reused
    again = build(changed, old_tree)  # a folder compiled before is brought up to date by its own ninja, not served
    assert again.ok and again.shim_reused is None and "cmake --build" in again.log
