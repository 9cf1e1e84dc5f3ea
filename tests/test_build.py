"""The build stage on real llama.cpp trees: the fixture builds at b5415, fails at b7836 only on old API."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from migrate.build import SOURCES_RECORD, BuildResult, build, find_shim_sources, parse_errors, prune_stale_shims
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM

# What the b7836 compiler may complain about in the unchanged b5421 fixture: the removed KV API,
# the bool flash_attn field, and the re-signatured common sampler helpers.
OLD_API = re.compile(r"llama_kv_self_\w+|llama_kv_cache_\w+|flash_attn|common_sampler_(get_candidates|init)")


def test_find_shim_sources_skips_trees_builds_and_backups(tmp_path: Path) -> None:
    (tmp_path / "custom_files").mkdir()
    shim = tmp_path / "custom_files" / "capi.cpp"
    shim.write_text('#include "llama.h"\nint f() { return 0; }\n')
    (tmp_path / "custom_files" / "capi.cpp.orig").write_text('#include "llama.h"\n')
    (tmp_path / "custom_files" / "util.cpp").write_text("int g() { return 1; }\n")
    vendored = tmp_path / "backend" / "llama.cpp"
    (vendored / "include").mkdir(parents=True)
    (vendored / "ggml").mkdir()
    (vendored / "include" / "llama.h").write_text("")
    (vendored / "examples.cpp").write_text('#include "llama.h"\n')
    (tmp_path / "build-release").mkdir()
    (tmp_path / "build-release" / "gen.cpp").write_text('#include <llama.h>\n')
    assert find_shim_sources(tmp_path) == [shim.resolve()]


def test_fixture_sources_found() -> None:
    names = [p.name for p in find_shim_sources(LOCALLLM)]
    assert names == ["localllm_capi.cpp"]


def test_fixture_builds_against_source_version(localllm_old_build: BuildResult) -> None:
    assert localllm_old_build.ok and Path(localllm_old_build.library).is_file()
    assert localllm_old_build.llama["requested"] == "b5421"
    assert localllm_old_build.llama["provided"] == "b5415"
    nm = subprocess.run(["nm", "-D", "--defined-only", localllm_old_build.library], capture_output=True, text=True)
    assert " T localllm_generate_parallel" in nm.stdout
    assert " T llama_kv_self_seq_pos_max" in nm.stdout  # libllama exported whole for the harness


def test_unchanged_fixture_fails_at_target_only_on_old_api(new_tree: SourceTree) -> None:
    result = build(LOCALLLM, new_tree)
    assert not result.ok and result.stage == "shim"
    assert result.errors, result.log[-2000:]
    for error in result.errors:
        assert error.file.endswith("localllm_capi.cpp"), error
        assert OLD_API.search(error.message), f"error not about the old API: {error}"
    named = {m.group(0) for e in result.errors for m in [OLD_API.search(e.message)] if m}
    assert {"llama_kv_self_clear", "llama_kv_self_seq_rm", "llama_kv_self_seq_cp", "flash_attn"} <= named


def test_changed_shim_rebuild_reuses_llama_libraries(tmp_path: Path, old_tree: SourceTree,
                                                     localllm_old_build: BuildResult) -> None:  # fmt: skip
    copy = tmp_path / "localllm"
    shutil.copytree(LOCALLLM, copy)
    first = build(copy, old_tree)
    assert first.ok and first.llama_reused and first.llama_objects_rebuilt == 0
    shim = copy / "custom_files" / "localllm_capi.cpp"
    # unique to this run: a changed shim compiled before (an earlier run, same cache) would be served, not compiled
    shim.write_text(shim.read_text() + '\nextern "C" int localllm_test_marker(void) { return 7; }\n'
                    + f"// {time.time_ns()}\n")
    second = build(copy, old_tree)
    assert second.ok and second.llama_reused and second.llama_objects_rebuilt == 0
    assert "Building CXX object" in second.log  # the shim itself was recompiled
    nm = subprocess.run(["nm", "-D", "--defined-only", second.library], capture_output=True, text=True)
    assert "localllm_test_marker" in nm.stdout
    print(f"rebuild of a changed shim: {second.seconds:.1f} s (llama.cpp check {second.llama_seconds:.1f} s)")


def test_failed_build_is_a_result_with_file_line_errors(tmp_path: Path, old_tree: SourceTree) -> None:
    shim = tmp_path / "broken.cpp"
    shim.write_text('#include "llama.h"\nint broken() { return llama_no_such_function(1); }\n')
    result = build(tmp_path, old_tree)
    assert not result.ok and result.library is None
    assert [(Path(e.file).name, e.line) for e in result.errors] == [("broken.cpp", 2)]
    assert "llama_no_such_function" in result.errors[0].message


def test_cli_build_json(tmp_path: Path, localllm_old_build: BuildResult) -> None:
    out = tmp_path / "build.json"
    cmd = [sys.executable, "-m", "migrate", "build", str(LOCALLLM), "--llama", "b5421", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["library"] == proc.stdout.strip() == localllm_old_build.library
    assert data["llama"]["requested"] == "b5421" and data["llama"]["provided"] == "b5415"
    assert len(data["llama"]["commit"]) == 40 and data["errors"] == [] and data["seconds"] > 0
    log = Path(data["log_path"]).read_text()  # the shim compiled here, or served from the compiled shims (a new
    # folder: a fresh clone's fixture path) and the log says which
    if data["shim_reused"]:
        assert f"served from the compiled shims (identical inputs, key {data['shim_reused']})" in log
    else:
        assert f"$ cmake --build {Path(data['library']).parent}" in log


def test_parse_errors_formats() -> None:
    log = (
        "/src/a.cpp:12:5: error: 'llama_kv_self_clear' was not declared in this scope\n"
        "/src/a.cpp:12:5: error: 'llama_kv_self_clear' was not declared in this scope\n"
        "/src/b.c:3: error: something\n"
        "/usr/bin/ld: a.o: in function `f':\n"
        "a.cpp:(.text+0x1): undefined reference to `missing_fn'\n"
        "/src/a.cpp:13:1: warning: not an error\n"
    )
    assert [str(e) for e in parse_errors(log)] == [
        "/src/a.cpp:12: 'llama_kv_self_clear' was not declared in this scope",
        "/src/b.c:3: something",
        "a.cpp:0: undefined reference to `missing_fn'",
    ]


def test_shim_builds_of_vanished_copies_are_pruned(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    kept_source = tmp_path / "kept.cpp"
    kept_source.write_text("// still here\n")
    for name, sources in {"gone": [str(tmp_path / "vanished.cpp")], "kept": [str(kept_source)]}.items():
        (cache / "shim" / name).mkdir(parents=True)
        (cache / "shim" / name / SOURCES_RECORD).write_text(json.dumps(sources))
    (cache / "shim" / "unrecorded").mkdir()  # no record: not ours to judge, kept
    (cache / "shim" / "being-written").mkdir()  # another run's record, truncated and not yet written: kept
    (cache / "shim" / "being-written" / SOURCES_RECORD).write_text("")
    removed = prune_stale_shims(cache)
    assert [p.name for p in removed] == ["gone"]
    assert sorted(p.name for p in (cache / "shim").iterdir()) == ["being-written", "kept", "unrecorded"]
