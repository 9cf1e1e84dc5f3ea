"""The sources stage: npm stand-ins said and recorded, consumer checkouts untouched, clear errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from migrate.sources import CATALOGUE_FILE, NpmCatalogue, SourceCache, SourceError, npm_stand_in, resolve


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
    assert npm_stand_in("b7825") == "b7836"  # the real consumer's bump
    assert npm_stand_in("b5500") == "b5415"
    assert npm_stand_in("b10361") == "b10361"
    assert npm_stand_in("deadbeef") is None


# --- the catalogue, discovered: a fake registry of tarballs carrying only the release files ---------------------


def _tarball(path: Path, release: str | None, tag: str | None = None) -> Path:
    members = {} if release is None else {"package/llama/binariesGithubRelease.json": json.dumps({"release": release})}
    members["package/llama/llama.cpp.info.json"] = json.dumps({"tag": tag or release})
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


class FakeRegistry:
    """node-llama-cpp versions and the release each bundles; counts what was asked."""

    def __init__(self, cache: SourceCache, releases: dict[str, str | None], extra: tuple[str, ...] = ()) -> None:
        self.cache, self.releases, self.extra = cache, releases, extra
        self.fetched: list[str] = []
        self.listed = 0

    def versions(self) -> list[str]:
        self.listed += 1
        return [*self.extra, *self.releases]

    def fetch(self, version: str) -> Path:
        self.fetched.append(version)
        return _tarball(self.cache.npm / f"node-llama-cpp-{version}.tgz", self.releases[version])

    def catalogue(self) -> NpmCatalogue:
        return NpmCatalogue(self.cache, self.versions, self.fetch)


RELEASES: dict[str, str | None] = {f"3.{minor}.0": f"b{1000 + 100 * minor}" for minor in range(0, 40)}
RELEASES["3.40.0"] = "v0.4.0"  # later versions name llama.cpp releases otherwise
RELEASES["3.41.0"] = "v0.5.0"


def test_catalogue_bisects_reads_few_versions_and_caches_the_map(tmp_path: Path) -> None:
    registry = FakeRegistry(SourceCache(tmp_path), RELEASES, extra=("2.8.0", "3.0.0-beta.4"))
    bundle = registry.catalogue().find("b2310")
    assert bundle is not None and (bundle.version, bundle.release) == ("3.13.0", "b2300")
    assert 0 < len(registry.fetched) <= 8  # log2(42) probes (+ neighbours), not the 42 versions
    assert "2.8.0" not in registry.fetched and "3.0.0-beta.4" not in registry.fetched
    stored = json.loads((tmp_path / "npm" / CATALOGUE_FILE).read_text())
    assert stored["releases"]["3.13.0"] == "b2300"
    # probe downloads are deleted; the chosen bundle's tarball stays for the tree
    assert sorted(p.name for p in (tmp_path / "npm").glob("*.tgz")) == ["node-llama-cpp-3.13.0.tgz"]
    again = FakeRegistry(SourceCache(tmp_path), RELEASES)
    assert again.catalogue().find("b2310") == bundle
    assert again.fetched == [] and again.listed == 0  # the cached map and version list answer it


def test_catalogue_nearest_exact_too_far_and_named_releases(tmp_path: Path) -> None:
    registry = FakeRegistry(SourceCache(tmp_path), RELEASES)
    catalogue = registry.catalogue()
    assert catalogue.find("b1700").release == "b1700"  # exact
    assert catalogue.find("b1760").release == "b1800"  # nearest above
    assert catalogue.find("b1740").release == "b1700"  # nearest below
    assert catalogue.find("b4950").release == "b4900"  # the newest b-tag, though later versions carry v-names
    assert catalogue.find("b9000") is None  # too far from any bundle
    assert catalogue.find("v0.5.0").version == "3.41.0"  # a named release is served by its name only
    assert catalogue.find("v9.9.9") is None


def test_catalogue_skips_versions_without_a_release_file(tmp_path: Path) -> None:
    releases = dict(RELEASES)
    releases["3.20.0"] = None  # no binariesGithubRelease.json in that version
    registry = FakeRegistry(SourceCache(tmp_path), releases)
    assert registry.catalogue().find("b3000").release in ("b2900", "b3100")
    stored = json.loads((tmp_path / "npm" / CATALOGUE_FILE).read_text())
    if "3.20.0" in registry.fetched:
        assert "3.20.0" in stored["unusable"]


def test_catalogue_offline_uses_what_it_knows(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path)
    (cache.npm / CATALOGUE_FILE).write_text(json.dumps({"releases": {"3.8.1": "b5415", "3.9.0": "b5590"}}))

    def offline() -> list[str]:
        raise SourceError("npm view failed: offline")

    catalogue = NpmCatalogue(cache, offline, lambda v: (_ for _ in ()).throw(SourceError("offline")))
    assert catalogue.find("b5421").release == "b5415"
    assert catalogue.find("b9000") is None
    assert any("offline" in problem for problem in catalogue.problems)


def test_catalogue_is_seeded_from_trees_and_tarballs_already_cached(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path)
    _tarball(cache.npm / "node-llama-cpp-3.20.0.tgz", "b10361")
    record = {"path": "x", "provided": "b5415", "commit": "0" * 40, "source": "npm:node-llama-cpp@3.8.1"}
    cache.record_path("b5415-000000000000").write_text(json.dumps(record))
    assert NpmCatalogue(cache, lambda: [], lambda v: tmp_path).releases == {"3.20.0": "b10361", "3.8.1": "b5415"}


def _seeded(tmp_path: Path, releases: dict[str, str]) -> SourceCache:
    """A cache whose catalogue already knows these versions (no registry asked)."""
    cache = SourceCache(tmp_path)
    catalogue = {"versions": list(releases), "listed_at": 4e9, "releases": releases}
    (cache.npm / CATALOGUE_FILE).write_text(json.dumps(catalogue))
    return cache


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
    _seeded(tmp_path, {"3.8.1": "b5415", "3.15.1": "b7836"})
    with pytest.raises(SourceError, match=r"no npm bundle within 100 builds of b6500; bundled builds known: b5415"):
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
    cache = _seeded(tmp_path, {"3.8.1": "b5415"})
    (cache.npm / "node-llama-cpp-3.8.1.tgz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(SourceError, match="corrupt or incomplete.*delete it and retry"):
        resolve("b5421", cache=tmp_path)


def test_tarball_with_another_release_is_refused(tmp_path: Path) -> None:
    cache = _seeded(tmp_path, {"3.8.1": "b5415"})
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
