"""The sources stage: npm stand-ins said and recorded, consumer checkouts untouched, clear errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from migrate.sources import SourceCache, SourceError, npm_stand_in, resolve


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_fake_llama_repo(path: Path, tags: dict[str, str]) -> Path:
    """A git repo shaped like llama.cpp (include/llama.h, ggml/), one commit per tag."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "master", cwd=path)
    git("config", "user.email", "t@example.invalid", cwd=path)
    git("config", "user.name", "test", cwd=path)
    (path / "ggml").mkdir()
    (path / "ggml" / "CMakeLists.txt").write_text("# ggml\n")
    (path / "include").mkdir()
    for tag, body in tags.items():
        (path / "include" / "llama.h").write_text(body)
        git("add", "-A", cwd=path)
        git("commit", "-q", "-m", tag, cwd=path)
        git("tag", tag, cwd=path)
    return path


def test_stand_in_table() -> None:
    assert npm_stand_in("b5421") == "b5415"
    assert npm_stand_in("b7785") == "b7836"
    assert npm_stand_in("b7836") == "b7836"
    assert npm_stand_in("b6500") is None  # too far from any bundled build to substitute
    assert npm_stand_in("deadbeef") is None


def test_npm_stand_in_is_said_and_recorded() -> None:
    tree = resolve("b5421")  # shared cache: .ci/run has fetched it
    assert (tree.provided, tree.requested, tree.substituted) == ("b5415", "b5421", True)
    assert tree.source == "npm:node-llama-cpp@3.8.1"
    assert "STAND-IN: b5421 was requested; b5415 is provided instead" in tree.summary()
    assert tree.describe()["commit"] == tree.commit and len(tree.commit) == 40
    assert git("rev-parse", "HEAD", cwd=tree.path) == tree.commit
    assert (tree.path / "models" / "ggml-vocab-llama-spm.gguf").is_file()


def test_exact_bundle_is_not_a_stand_in() -> None:
    tree = resolve("b7836")
    assert tree.provided == "b7836" and not tree.substituted


def test_cli_sources_prints_path_and_stand_in() -> None:
    proc = subprocess.run([sys.executable, "-m", "migrate", "sources", "b7785"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip(), "include", "llama.h").is_file()
    assert "STAND-IN: b7785 was requested; b7836 is provided instead" in proc.stderr


def test_checkout_is_cloned_never_changed(tmp_path: Path) -> None:
    consumer = make_fake_llama_repo(tmp_path / "llama.cpp", {"b100": "// v100\n", "b200": "// v200\n"})
    head_before = git("rev-parse", "HEAD", cwd=consumer)
    (consumer / "local-change.txt").write_text("uncommitted work of the consumer\n")
    tree = resolve("b100", checkout=consumer, cache=tmp_path / "cache")
    assert (tree.path / "include" / "llama.h").read_text() == "// v100\n"
    assert tree.source == f"checkout:{consumer}" and not tree.substituted
    assert git("rev-parse", "HEAD", cwd=consumer) == head_before
    assert (consumer / "include" / "llama.h").read_text() == "// v200\n"
    assert (consumer / "local-change.txt").is_file()
    assert not (consumer / ".git" / "worktrees").exists()
    again = resolve("b100", checkout=consumer, cache=tmp_path / "cache")  # from the cache now
    assert again.path == tree.path and again.commit == tree.commit


def test_checkout_without_the_tag(tmp_path: Path) -> None:
    consumer = make_fake_llama_repo(tmp_path / "llama.cpp", {"b100": "// v100\n"})
    with pytest.raises(SourceError, match="no tag or commit 'b999'.*fetch it there first"):
        resolve("b999", checkout=consumer, cache=tmp_path / "cache")


def test_remote_shallow_fetch(tmp_path: Path) -> None:
    upstream = make_fake_llama_repo(tmp_path / "upstream", {"b100": "// v100\n", "b200": "// v200\n"})
    tree = resolve("b100", via="remote", remote=f"file://{upstream}", cache=tmp_path / "cache")
    assert (tree.path / "include" / "llama.h").read_text() == "// v100\n"
    assert git("rev-parse", "--is-shallow-repository", cwd=tree.path) == "true"
    assert tree.source == f"remote:file://{upstream}"


def test_unreachable_remote_names_the_offline_way(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="--via npm"):
        resolve("b100", via="remote", remote=f"file://{tmp_path}/nothing", cache=tmp_path / "cache")


def test_bad_spec_and_far_tag(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="neither a build tag"):
        resolve("not-a-tag", cache=tmp_path)
    with pytest.raises(SourceError, match="no npm bundle within"):
        resolve("b6500", via="npm", cache=tmp_path)


def test_damaged_cache_entry_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path)
    tree_dir = cache.src / "b5415-0123456789ab"
    tree_dir.mkdir()
    record = {"path": str(tree_dir), "provided": "b5415", "commit": "0123456789ab" * 3, "source": "npm:x"}
    cache.record_path(tree_dir.name).write_text(json.dumps(record))
    with pytest.raises(SourceError, match="damaged.*--refresh"):
        resolve("b5421", cache=tmp_path)


def test_corrupt_npm_tarball_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path)
    (cache.npm / "node-llama-cpp-3.8.1.tgz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(SourceError, match="corrupt or incomplete.*delete it and retry"):
        resolve("b5421", cache=tmp_path)


def test_tarball_with_another_release_is_refused(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in {"package/llama/llama.cpp.info.json": b'{"tag": "b1"}',
                           "package/llama/gitRelease.bundle": b"x"}.items():  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (cache.npm / "node-llama-cpp-3.8.1.tgz").write_bytes(buffer.getvalue())
    with pytest.raises(SourceError, match="carries llama.cpp b1, not b5415"):
        resolve("b5421", cache=tmp_path)


def test_missing_npm_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SourceError, match="npm is not installed"):
        resolve("b5421", cache=tmp_path / "cache")
