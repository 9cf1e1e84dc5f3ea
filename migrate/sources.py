"""Stage "sources": resolve a llama.cpp build tag or commit to a source tree in the cache.

Three ways to a tree, never touching the consumer's own checkout:
- a consumer's llama.cpp git checkout (e.g. its submodule): cloned locally, then the tag checked out;
- a git remote: shallow fetch of the tag;
- offline: the npm package node-llama-cpp ships the llama.cpp release it was built from as a git bundle.
When the tree provided is not the build requested (an npm stand-in), that is said and recorded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from migrate.paths import cache_root
from migrate.tree import is_llama_tree
from verify.errors import ToolError

DEFAULT_REMOTE = "https://github.com/ggml-org/llama.cpp.git"
# node-llama-cpp releases whose bundled llama.cpp release was checked (tag in package/llama/llama.cpp.info.json).
NPM_BUNDLES: dict[str, str] = {"b5415": "3.8.1", "b7836": "3.15.1"}
# How far (in build numbers) an npm stand-in may be from the requested build before we refuse to substitute.
MAX_STAND_IN_DISTANCE = 100
BUNDLE_MEMBER = "package/llama/gitRelease.bundle"
INFO_MEMBER = "package/llama/llama.cpp.info.json"
TAG = re.compile(r"^b\d+$")
COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


class SourceError(ToolError):
    """A source tree could not be provided; the message says what to do."""


@dataclass
class SourceTree:
    path: Path
    requested: str
    provided: str  # the tag (or commit) actually in the tree
    commit: str
    source: str  # "npm:node-llama-cpp@3.8.1", "checkout:/path", "remote:URL", "path:/dir"

    @property
    def substituted(self) -> bool:
        return self.requested != self.provided and not self.requested.startswith("/")

    def describe(self) -> dict[str, str | None]:
        return {
            "requested": self.requested,
            "provided": self.provided,
            "commit": self.commit,
            "source": self.source,
            "path": str(self.path),
            "stand_in": "yes" if self.substituted else "no",
        }

    def summary(self) -> str:
        text = f"llama.cpp {self.provided} ({self.commit[:9]}) from {self.source} at {self.path}"
        if self.substituted:
            text += f"\nSTAND-IN: {self.requested} was requested; {self.provided} is provided instead"
        return text


def _git(*args: str, cwd: Path | None = None) -> str:
    if shutil.which("git") is None:
        raise SourceError("git is not installed: install it (e.g. apt-get install git) and retry")
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SourceError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


class SourceCache:
    """`<cache>/src/<tag>-<commit12>/` trees, each with a record `<name>.json` written once the tree is complete."""

    def __init__(self, cache: str | Path | None = None) -> None:
        self.root = cache_root(cache)
        self.src = self.root / "src"
        self.npm = self.root / "npm"
        self.src.mkdir(exist_ok=True)
        self.npm.mkdir(exist_ok=True)

    def record_path(self, name: str) -> Path:
        return self.src / f"{name}.json"

    def lookup(self, provided: str) -> SourceTree | None:
        """A complete cached tree for this tag or commit, or None; a record whose tree is damaged is an error."""
        for record_file in sorted(self.src.glob("*.json")):
            record = json.loads(record_file.read_text())
            if provided not in (record["provided"], record["commit"]) and not record["commit"].startswith(provided):
                continue
            path = Path(record["path"])
            if not is_llama_tree(path) or _head(path) != record["commit"]:
                raise SourceError(
                    f"cached llama.cpp tree {path} is damaged (missing files or HEAD moved); "
                    f"remove it and its record ({record_file}) or rerun with --refresh"
                )
            return SourceTree(path, record["provided"], record["provided"], record["commit"], record["source"])
        return None

    def store(self, tree: SourceTree) -> None:
        data = asdict(tree)
        data["path"] = str(tree.path)
        data.pop("requested")
        tmp = self.record_path(tree.path.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.record_path(tree.path.name))

    def forget(self, provided: str) -> None:
        for record_file in self.src.glob("*.json"):
            record = json.loads(record_file.read_text())
            if provided in (record["provided"], record["commit"]):
                shutil.rmtree(record["path"], ignore_errors=True)
                record_file.unlink()

    def fresh_dir(self, name: str) -> Path:
        """A clean target dir for a new tree; a leftover without a record is a partial earlier attempt."""
        path = self.src / name
        if path.exists():
            shutil.rmtree(path)
        return path


def _head(path: Path) -> str:
    try:
        return _git("rev-parse", "HEAD", cwd=path)
    except SourceError:
        return ""


def _build_number(tag: str) -> int | None:
    return int(tag[1:]) if TAG.match(tag) else None


def npm_stand_in(requested: str) -> str | None:
    """The npm-bundled build to provide for a requested tag: the same, or the nearest close enough."""
    if requested in NPM_BUNDLES:
        return requested
    number = _build_number(requested)
    if number is None:
        return None
    nearest = min(NPM_BUNDLES, key=lambda tag: abs(int(tag[1:]) - number))
    return nearest if abs(int(nearest[1:]) - number) <= MAX_STAND_IN_DISTANCE else None


def _npm_tarball(version: str, cache: SourceCache) -> Path:
    tarball = cache.npm / f"node-llama-cpp-{version}.tgz"
    if tarball.is_file():
        return tarball
    if shutil.which("npm") is None:
        raise SourceError("npm is not installed and llama.cpp is needed offline: install Node.js/npm and retry")
    with tempfile.TemporaryDirectory(dir=cache.npm) as tmp:
        proc = subprocess.run(
            ["npm", "pack", f"node-llama-cpp@{version}", "--silent"], cwd=tmp, capture_output=True, text=True
        )
        produced = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not produced:
            raise SourceError(f"npm pack node-llama-cpp@{version} failed: {proc.stderr.strip()[-500:]}")
        produced[0].replace(tarball)
    return tarball


def _from_npm(requested: str, provided: str, cache: SourceCache) -> SourceTree:
    version = NPM_BUNDLES[provided]
    tarball = _npm_tarball(version, cache)
    with tempfile.TemporaryDirectory(dir=cache.npm) as tmp:
        try:
            with tarfile.open(tarball) as archive:
                info = json.load(archive.extractfile(INFO_MEMBER))  # type: ignore[arg-type]
                archive.extract(BUNDLE_MEMBER, tmp, filter="data")
        except (tarfile.TarError, KeyError, OSError, json.JSONDecodeError, EOFError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SourceError(f"{tarball} is corrupt or incomplete ({reason}): delete it and retry") from exc
        if info.get("tag") != provided:
            raise SourceError(f"{tarball} carries llama.cpp {info.get('tag')}, not {provided}: delete it and retry")
        bundle = Path(tmp) / BUNDLE_MEMBER
        commit = _git("bundle", "list-heads", str(bundle)).split()[0]
        dest = cache.fresh_dir(f"{provided}-{commit[:12]}")
        _git("clone", "--quiet", str(bundle), str(dest))
        _git("-c", "advice.detachedHead=false", "checkout", "--quiet", commit, cwd=dest)
    tree = SourceTree(dest, requested, provided, commit, f"npm:node-llama-cpp@{version}")
    cache.store(tree)
    return tree


def _from_checkout(requested: str, checkout: Path, cache: SourceCache) -> SourceTree:
    """Clone the consumer's checkout locally (its own work tree and HEAD stay as they are), check out the tag."""
    from git import GitCommandError, InvalidGitRepositoryError, NoSuchPathError, Repo

    try:
        repo = Repo(checkout)
    except (InvalidGitRepositoryError, NoSuchPathError) as exc:
        raise SourceError(f"{checkout} is not a git checkout of llama.cpp: {exc}") from exc
    try:
        commit = repo.commit(requested).hexsha
    except (GitCommandError, ValueError, Exception) as exc:  # gitdb raises BadName, a ValueError
        raise SourceError(f"{checkout} has no tag or commit {requested!r}: fetch it there first") from exc
    dest = cache.fresh_dir(f"{requested}-{commit[:12]}")
    clone = Repo.clone_from(repo.git_dir, dest, no_checkout=True)
    clone.git.checkout(commit, quiet=True)
    provided = requested if TAG.match(requested) else commit[:12]
    tree = SourceTree(dest, requested, provided, commit, f"checkout:{checkout}")
    cache.store(tree)
    return tree


def _from_remote(requested: str, remote: str, cache: SourceCache) -> SourceTree:
    ref = f"refs/tags/{requested}" if TAG.match(requested) else requested
    with tempfile.TemporaryDirectory(dir=cache.src) as tmp:
        work = Path(tmp) / "tree"
        work.mkdir()
        _git("init", "--quiet", cwd=work)
        try:
            _git("fetch", "--quiet", "--depth", "1", remote, ref, cwd=work)
        except SourceError as exc:
            raise SourceError(
                f"cannot fetch {requested} from {remote} ({exc}); offline, use --via npm "
                f"(bundled builds: {', '.join(NPM_BUNDLES)}) or --checkout PATH"
            ) from exc
        _git("-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD", cwd=work)
        commit = _head(work)
        dest = cache.fresh_dir(f"{requested}-{commit[:12]}")
        shutil.move(str(work), dest)
    tree = SourceTree(dest, requested, requested if TAG.match(requested) else commit[:12], commit, f"remote:{remote}")
    cache.store(tree)
    return tree


def resolve(
    spec: str,
    via: str = "auto",
    checkout: str | Path | None = None,
    remote: str = DEFAULT_REMOTE,
    cache: str | Path | None = None,
    refresh: bool = False,
) -> SourceTree:
    """Resolve a tag (bNNNN), commit or existing directory to a llama.cpp SourceTree.

    via: "auto" (cache, then the consumer's checkout if given, then npm, then the remote), "checkout",
    "npm" or "remote".
    """
    path = Path(spec)
    if path.is_dir():
        if not is_llama_tree(path):
            raise SourceError(f"{spec} is a directory but not a llama.cpp tree (no include/llama.h, ggml/)")
        commit = _head(path) or "unknown"
        provided = _describe_tag(path) or commit[:12]
        return SourceTree(path.resolve(), str(path.resolve()), provided, commit, f"path:{path}")
    if not (TAG.match(spec) or COMMIT.match(spec)):
        raise SourceError(f"{spec!r} is neither a build tag (bNNNN), a commit hash nor a llama.cpp directory")
    store = SourceCache(cache)
    if via not in ("auto", "checkout", "npm", "remote"):
        raise SourceError(f"unknown source {via!r}: use auto, checkout, npm or remote")
    if refresh:
        store.forget(spec)
    if via in ("auto", "checkout") and checkout:
        cached = store.lookup(spec)
        return _requested(cached, spec) if cached else _from_checkout(spec, Path(checkout), store)
    if via == "checkout":
        raise SourceError("--via checkout needs --checkout PATH (the consumer's llama.cpp checkout)")
    if via in ("auto", "npm"):
        stand_in = npm_stand_in(spec)
        if stand_in:
            if refresh:
                store.forget(stand_in)
            cached = store.lookup(stand_in)
            return _requested(cached, spec) if cached else _from_npm(spec, stand_in, store)
        if via == "npm":
            raise SourceError(
                f"no npm bundle within {MAX_STAND_IN_DISTANCE} builds of {spec}; bundled: {', '.join(NPM_BUNDLES)}"
            )
    cached = store.lookup(spec)
    return _requested(cached, spec) if cached else _from_remote(spec, remote, store)


def _requested(tree: SourceTree, requested: str) -> SourceTree:
    tree.requested = requested
    return tree


def _describe_tag(path: Path) -> str | None:
    try:
        return _git("describe", "--tags", "--exact-match", cwd=path)
    except SourceError:
        return None
