"""The shim built the way the consumer's own CMake builds it: linked to llama.cpp's `llama` and `common` targets
(their include directories, definitions and link dependencies), llama.cpp's src/ after the consumer's own include
directories, and the consumer's `[build]` settings (flags, include_dirs, defines, sources, link_libraries) and
environment CXXFLAGS. Real CMake builds against the cached llama.cpp trees."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from migrate import llama_targets
from migrate.build import BuildOptions, build, build_llama, llama_build_dir
from migrate.build_settings import BuildSettings
from migrate.cli.arguments import add_build_arguments, build_settings
from migrate.config import load_config
from migrate.sources import SourceTree
from verify.errors import ToolError
from verify.manifest import read_manifest

REPO = Path(__file__).resolve().parent.parent
TODAY = REPO / "fixtures" / "localllm-today"
TODAY_NEXT = REPO / "fixtures" / "localllm-today-next"


def _exported(library: str) -> str:
    return subprocess.run(["nm", "-D", "--defined-only", library], capture_output=True, text=True, check=True).stdout


# --- the new fixture ---------------------------------------------------------------------------------------------


def test_today_fixture_builds_at_b5421_with_its_config_alone(old_tree: SourceTree, tmp_path: Path) -> None:
    copy = shutil.copytree(TODAY, tmp_path / "localllm-today")
    result = build(copy, old_tree)
    assert result.ok, result.log[-3000:]
    assert " T localllm_generate_parallel" in _exported(result.library)
    manifest = read_manifest(Path(result.library))
    assert manifest is not None and manifest.build["flags"] == ["-include", "filesystem"]


def test_today_fixture_needs_its_build_flags(old_tree: SourceTree, tmp_path: Path) -> None:
    """Without `[build] flags` the shim's std::filesystem calls do not compile: the config's flags are what fix it."""
    copy = shutil.copytree(TODAY, tmp_path / "localllm-today")
    config = copy / "llama-migrate.toml"
    config.write_text(config.read_text().replace('flags = ["-include", "filesystem"]', ""))
    result = build(copy, old_tree)
    assert not result.ok and result.stage == "shim"
    assert any("filesystem" in e.message for e in result.errors), [str(e) for e in result.errors]


def test_today_next_builds_at_b7785_with_vendor_and_internals(new_tree: SourceTree, tmp_path: Path) -> None:
    """The migrated shim includes common/chat.h (nlohmann/json_fwd.hpp from common's PUBLIC ../vendor at b7836) and
    llama-arch.h from src/: both come from llama.cpp's targets and tree, nothing listed by hand."""
    copy = shutil.copytree(TODAY_NEXT, tmp_path / "localllm-today-next")
    result = build(copy, new_tree)
    assert result.ok, result.log[-3000:]
    assert " T localllm_generate_parallel" in _exported(result.library)


# --- llama.cpp's targets ----------------------------------------------------------------------------------------


def test_common_targets_usage_requirements_are_exported(new_tree: SourceTree) -> None:
    libs, log = build_llama(new_tree, BuildOptions())
    assert libs is not None and libs.targets_file is not None, log[-2000:]
    text = libs.targets_file.read_text()
    assert "add_library(llama_migrate::common STATIC IMPORTED)" in text
    assert str(new_tree.path / "common" / "../vendor") in text  # common's PUBLIC include directory
    assert libs.targets_file.parent == llama_build_dir(new_tree, BuildOptions())
    assert "Threads" in llama_targets.required_packages(libs.targets_file)


CHAT_SHIM = """\
#include "llama.h"
#include "chat.h"
#include "llama-arch.h"
extern "C" int chat_probe(void) {
    common_chat_msg msg;
    msg.role = "user";
    return static_cast<int>(msg.role.size()) + static_cast<int>(LLM_ARCH_UNKNOWN > 0);
}
"""


def test_shim_including_common_chat_builds_at_b7836(new_tree: SourceTree, tmp_path: Path) -> None:
    (tmp_path / "chat_shim.cpp").write_text(CHAT_SHIM)
    result = build(tmp_path, new_tree)
    assert result.ok, result.log[-3000:]
    assert " T chat_probe" in _exported(result.library)


def test_internals_come_after_the_consumers_own_headers(old_tree: SourceTree, tmp_path: Path) -> None:
    """A consumer header named like one of llama.cpp's src/ headers wins; src/ is searched last."""
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "llama-arch.h").write_text("#pragma once\n#define OWN_LLAMA_ARCH 1\n")
    (tmp_path / "shim.cpp").write_text('#include "llama.h"\n#include "llama-arch.h"\n'
                                       "#ifndef OWN_LLAMA_ARCH\n#error src/ came first\n#endif\n"
                                       'extern "C" int own_first(void) { return OWN_LLAMA_ARCH; }\n')  # fmt: skip
    (tmp_path / "llama-migrate.toml").write_text('[build]\ninclude_dirs = ["own"]\n')
    result = build(tmp_path, old_tree)
    assert result.ok, result.log[-3000:]


def test_includes_spelled_from_the_tree_root_still_found(old_tree: SourceTree, tmp_path: Path) -> None:
    """`#include "common/common.h"` (a path from llama.cpp's root) built before the targets were used; it still does."""
    (tmp_path / "shim.cpp").write_text('#include "llama.h"\n#include "common/common.h"\n'
                                       'extern "C" int root_probe(void) { return common_params().n_predict; }\n')
    result = build(tmp_path, old_tree)
    assert result.ok, result.log[-3000:]


# --- [build]: each setting has an effect ------------------------------------------------------------------------

SHIM = """\
#include "llama.h"
#include "extra.h"
#ifndef NEED_DEFINE
#error NEED_DEFINE not defined
#endif
#ifndef FIRST_INCLUDED
#error first.h not force-included
#endif
#ifndef SECOND_INCLUDED
#error second.h not force-included
#endif
extern "C" int helper_from_source(void);
extern "C" int helper_from_library(void);
extern "C" int settings_probe(void) { return EXTRA_VALUE + NEED_DEFINE + helper_from_source() + helper_from_library(); }
"""
SETTINGS = {
    "flags": '["-include", "first.h", "-include", "second.h"]',
    "include_dirs": '["inc"]',
    "defines": '["NEED_DEFINE=2"]',
    "sources": '["helpers/helper.cpp"]',
    "link_libraries": '["lib/libhelper.a"]',
}


def _consumer(root: Path, without: str | None = None) -> Path:
    """A shim that builds only with every [build] setting: each one leaves a distinct error when missing."""
    root.mkdir(parents=True)
    (root / "shim.cpp").write_text(SHIM)
    (root / "first.h").write_text("#define FIRST_INCLUDED 1\n")
    (root / "second.h").write_text("#define SECOND_INCLUDED 1\n")
    (root / "inc").mkdir()
    (root / "inc" / "extra.h").write_text("#define EXTRA_VALUE 1\n")
    (root / "helpers").mkdir()
    (root / "helpers" / "helper.cpp").write_text('extern "C" int helper_from_source(void) { return 3; }\n')
    (root / "lib").mkdir()
    (root / "lib" / "helper.c").write_text("int helper_from_library(void) { return 4; }\n")
    subprocess.run(["cc", "-fPIC", "-c", "helper.c", "-o", "helper.o"], cwd=root / "lib", check=True)
    subprocess.run(["ar", "rcs", "libhelper.a", "helper.o"], cwd=root / "lib", check=True)
    table = "\n".join(f"{key} = {value}" for key, value in SETTINGS.items() if key != without)
    # -include names a file relative to the compile's folder: the build runs elsewhere, so the flags say where
    table = table.replace('"first.h"', f'"{root / "first.h"}"').replace('"second.h"', f'"{root / "second.h"}"')
    (root / "llama-migrate.toml").write_text(f"[build]\n{table}\n")
    return root


def test_every_build_setting_applied_and_recorded(old_tree: SourceTree, tmp_path: Path) -> None:
    result = build(_consumer(tmp_path / "all"), old_tree)
    assert result.ok, result.log[-3000:]
    assert " T settings_probe" in _exported(result.library)
    recorded = read_manifest(Path(result.library)).build
    assert recorded["defines"] == ["NEED_DEFINE=2"] and recorded["flags"][0] == "-include"
    assert recorded["include_dirs"] == [str((tmp_path / "all" / "inc").resolve())]
    assert recorded["sources"] == [str((tmp_path / "all" / "helpers" / "helper.cpp").resolve())]
    assert recorded["link_libraries"] == [str((tmp_path / "all" / "lib" / "libhelper.a").resolve())]
    assert str(tmp_path / "all" / "helpers" / "helper.cpp") in result.sources


MISSING = {
    "flags": "first.h not force-included",
    "include_dirs": "extra.h",
    "defines": "NEED_DEFINE not defined",
    "sources": "helper_from_source",
    "link_libraries": "helper_from_library",
}


@pytest.mark.parametrize("setting", sorted(MISSING))
def test_each_build_setting_has_an_effect(setting: str, old_tree: SourceTree, tmp_path: Path) -> None:
    result = build(_consumer(tmp_path / setting, without=setting), old_tree)
    assert not result.ok
    assert any(MISSING[setting] in e.message for e in result.errors), [str(e) for e in result.errors]


def test_command_line_settings_add_to_the_config(old_tree: SourceTree, tmp_path: Path) -> None:
    root = _consumer(tmp_path / "cli", without="defines")
    parser = argparse.ArgumentParser()
    add_build_arguments(parser)
    args = parser.parse_args(["--build-define", "NEED_DEFINE=5", "--build-flag=-DUNUSED_FLAG=1"])
    settings = build_settings(args)
    assert settings.defines == ("NEED_DEFINE=5",) and settings.flags == ("-DUNUSED_FLAG=1",)
    result = build(root, old_tree, BuildOptions(settings=settings))
    assert result.ok, result.log[-3000:]
    recorded = read_manifest(Path(result.library)).build
    assert recorded["defines"] == ["NEED_DEFINE=5"] and "-DUNUSED_FLAG=1" in recorded["flags"]


def test_environment_cxxflags_still_honoured(old_tree: SourceTree, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "shim.cpp").write_text('#include "llama.h"\n#ifndef FROM_ENVIRONMENT\n#error no CXXFLAGS\n#endif\n'
                                       'extern "C" int env_probe(void) { return FROM_ENVIRONMENT; }\n')  # fmt: skip
    monkeypatch.setenv("CXXFLAGS", "-DFROM_ENVIRONMENT=7")
    result = build(tmp_path, old_tree)
    assert result.ok, result.log[-3000:]
    assert read_manifest(Path(result.library)).build["environment"] == {"CXXFLAGS": "-DFROM_ENVIRONMENT=7"}
    monkeypatch.delenv("CXXFLAGS")
    again = build(tmp_path, old_tree)  # the same shim folder, configured again without the flag
    assert not again.ok and any("no CXXFLAGS" in e.message for e in again.errors)


# --- the config table --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "named"), [
    ('[build]\nnope = ["x"]\n', "build.nope"),
    ('[build]\nflags = "-O2"\n', "build.flags"),
    ('[build]\ndefines = ["1BAD"]\n', "1BAD"),
    ('build = 3\n', "build must be a table"),
])  # fmt: skip
def test_build_table_validated(table: str, named: str, tmp_path: Path) -> None:
    (tmp_path / "llama-migrate.toml").write_text(table)
    with pytest.raises(ToolError, match=named.replace(".", r"\.")):
        load_config(tmp_path)


def test_build_table_paths_resolved_against_the_tree(tmp_path: Path) -> None:
    (tmp_path / "llama-migrate.toml").write_text('[build]\ninclude_dirs = ["inc"]\nlink_libraries = ["z", '
                                                 '"lib/libx.a", "-lm"]\n')  # fmt: skip
    settings = load_config(tmp_path).build
    assert settings.include_dirs == (str((tmp_path / "inc").resolve()),)
    assert settings.link_libraries == ("z", str((tmp_path / "lib" / "libx.a").resolve()), "-lm")


def test_settings_rebased_onto_the_migrated_copy(tmp_path: Path) -> None:
    original, copy = tmp_path / "src", tmp_path / "copy"
    settings = BuildSettings(include_dirs=(str(original / "inc"), "/usr/include/x"), sources=(str(original / "a.c"),))
    moved = settings.rebased(original, copy)
    assert moved.include_dirs == (str(copy.resolve() / "inc"), "/usr/include/x")
    assert moved.sources == (str(copy.resolve() / "a.c"),)
    assert json.loads(json.dumps(moved.to_json()))["sources"] == [str(copy.resolve() / "a.c")]
