"""Stage "sources": resolve a llama.cpp build tag or commit to a source tree in the cache.

Three ways to a tree, never touching the consumer's own checkout:
- a consumer's llama.cpp git checkout (e.g. its submodule): cloned locally, then the tag checked out;
- a git remote: shallow fetch of the tag;
- offline: the npm package node-llama-cpp ships the llama.cpp release it was built from as a git bundle; which
  version carries which release is discovered from the versions themselves and cached (`NpmCatalogue`).
When the tree provided is not the build requested (an npm stand-in), that is said and recorded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from migrate.paths import cache_root
from migrate.tree import is_llama_tree
from verify.errors import ToolError

DEFAULT_REMOTE = "https://github.com/ggml-org/llama.cpp.git"
NPM_PACKAGE = "node-llama-cpp"
# How far (in build numbers) an npm stand-in may be from the requested build before we refuse to substitute.
MAX_STAND_IN_DISTANCE = 100
BUNDLE_MEMBER = "package/llama/gitRelease.bundle"
INFO_MEMBER = "package/llama/llama.cpp.info.json"
RELEASE_MEMBER = "package/llama/binariesGithubRelease.json"  # {"release": "b7836"}: what each version bundles
CATALOGUE_FILE = "catalogue.json"  # <cache>/npm/: node-llama-cpp version -> llama.cpp release, as read
VERSIONS_MAX_AGE = 24 * 3600  # the registry's version list is asked again after this, when a request needs it
TAG = re.compile(r"^b\d+$")
# llama.cpp's later releases are named v0.4.0, v0.5.0 ... beside the nightly b-tags (its README: "Release" filters
# `v*`, "Nightly" `b*`); node-llama-cpp 3.21.1 bundles v0.4.0. A bundle is one squashed commit, so such a release has
# no build number to measure a distance with: it is served when asked for by name, never as a b-tag's stand-in.
RELEASE_NAME = re.compile(r"^v\d+\.\d+\.\d+$")
COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
STABLE_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
FIRST_VERSION = (3, 0, 0)  # candidates: stable node-llama-cpp versions from 3.0.0 on (each ships gitRelease.bundle)


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


def _is_tag(spec: str) -> bool:
    return bool(TAG.match(spec) or RELEASE_NAME.match(spec))


def _version_key(version: str) -> tuple[int, int, int]:
    match = STABLE_VERSION.match(version)
    if match is None:
        raise ValueError(version)
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


@dataclass(frozen=True)
class Bundle:
    """One node-llama-cpp version and the llama.cpp release its bundle carries."""

    version: str
    release: str


def _read_member(tarball: Path, member: str) -> dict[str, Any]:
    try:
        with tarfile.open(tarball) as archive:
            data = json.load(archive.extractfile(member))  # type: ignore[arg-type]
    except (tarfile.TarError, KeyError, OSError, json.JSONDecodeError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"{tarball} is corrupt or incomplete ({reason}): delete it and retry") from exc
    if not isinstance(data, dict):
        raise SourceError(f"{tarball}: {member} is not a JSON object: delete it and retry")
    return data


def _run_npm(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("npm") is None:
        raise SourceError("npm is not installed and llama.cpp is needed offline: install Node.js/npm and retry")
    return subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True)


def _npm_versions(cache: SourceCache) -> list[str]:
    """Every published version of node-llama-cpp, from the registry (`npm view ... versions`)."""
    proc = _run_npm(["view", NPM_PACKAGE, "versions", "--json"], cache.npm)
    try:
        versions = json.loads(proc.stdout) if proc.returncode == 0 else None
    except json.JSONDecodeError:
        versions = None
    if not isinstance(versions, list):
        raise SourceError(f"npm view {NPM_PACKAGE} versions failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return [str(v) for v in versions]


def _npm_tarball(version: str, cache: SourceCache) -> Path:
    tarball = cache.npm / f"{NPM_PACKAGE}-{version}.tgz"
    if tarball.is_file():
        return tarball
    with tempfile.TemporaryDirectory(dir=cache.npm) as tmp:
        proc = _run_npm(["pack", f"{NPM_PACKAGE}@{version}", "--silent"], Path(tmp))
        produced = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not produced:
            raise SourceError(f"npm pack {NPM_PACKAGE}@{version} failed: {proc.stderr.strip()[-500:]}")
        produced[0].replace(tarball)
    return tarball


class NpmCatalogue:
    """Which node-llama-cpp version bundles which llama.cpp release: discovered, not listed by hand.

    A version's release is read from its tarball (`package/llama/binariesGithubRelease.json`) and kept in
    `<cache>/npm/catalogue.json`, so each tarball is read once. To serve a request the catalogue bisects the
    registry's version list (llama.cpp releases grow with node-llama-cpp versions) and reads only the versions it
    must: a handful of tarballs the first time, none once the neighbours of a tag are known. Tarballs read only to
    learn their release are deleted again; the one chosen stays for `_from_npm`.
    `list_versions` and `fetch` (version -> tarball path) default to npm; tests pass their own.
    """

    def __init__(self, cache: SourceCache, list_versions: Callable[[], list[str]] | None = None,
                 fetch: Callable[[str], Path] | None = None) -> None:  # fmt: skip
        self.cache = cache
        self.path = cache.npm / CATALOGUE_FILE
        self._list_versions = list_versions or (lambda: _npm_versions(cache))
        self._fetch = fetch or (lambda version: _npm_tarball(version, cache))
        self.problems: list[str] = []  # versions that could not be read this time (offline, say): not recorded
        self.probed: list[str] = []  # versions read from the registry in this process
        self._discard: set[Path] = set()  # tarballs downloaded only to read their release
        self.data = self._load()

    # --- the cached map --------------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        data: dict[str, Any] = {"versions": [], "listed_at": 0.0, "releases": {}, "unusable": {}}
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(stored, dict):
                data.update({k: stored[k] for k in data if k in stored and isinstance(stored[k], type(data[k]))})
        except (OSError, json.JSONDecodeError):
            pass
        self._seed(data)
        return data

    def _seed(self, data: dict[str, Any]) -> None:
        """What the cache already knows for free: trees taken from a bundle, tarballs already downloaded."""
        releases = data["releases"]
        for record_file in self.cache.src.glob("*.json"):
            try:
                record = json.loads(record_file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            source = str(record.get("source", ""))
            if source.startswith(f"npm:{NPM_PACKAGE}@"):
                releases.setdefault(source.split("@", 1)[1], str(record.get("provided")))
        for tarball in self.cache.npm.glob(f"{NPM_PACKAGE}-*.tgz"):
            version = tarball.name[len(NPM_PACKAGE) + 1 : -len(".tgz")]
            if version not in releases and STABLE_VERSION.match(version):
                try:
                    releases[version] = self._release_in(tarball)
                except SourceError:
                    continue  # a damaged download: reading it for real says so

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)

    @staticmethod
    def _release_in(tarball: Path) -> str:
        data = _read_member(tarball, RELEASE_MEMBER)
        release = data.get("release")
        if not isinstance(release, str) or not release:
            raise SourceError(f"{tarball}: {RELEASE_MEMBER} names no release: delete it and retry")
        return release

    @property
    def releases(self) -> dict[str, str]:
        """version -> llama.cpp release, for every version read so far."""
        return dict(self.data["releases"])

    def bundles(self) -> list[Bundle]:
        return sorted((Bundle(v, r) for v, r in self.data["releases"].items()), key=lambda b: _version_key(b.version))

    def describe(self) -> str:
        known = ", ".join(f"{b.release} ({NPM_PACKAGE}@{b.version})" for b in self.bundles()) or "none yet"
        return f"bundled builds known: {known}"

    # --- the registry ----------------------------------------------------------------------------------------

    def versions(self, fresh: bool = False) -> list[str]:
        """Candidate versions, oldest first: stable releases from 3.0.0 on. The registry's list is asked once a
        day at most (and only when `fresh`); offline, the versions already read stand in for it."""
        listed = self.data["versions"]
        stale = time.time() - float(self.data["listed_at"]) > VERSIONS_MAX_AGE
        if not listed or (fresh and stale):
            try:
                listed = self._list_versions()
                self.data["versions"], self.data["listed_at"] = listed, time.time()
                self.save()
            except SourceError as exc:
                if not self.data["releases"]:
                    raise
                self.problems.append(f"version list not refreshed ({exc})")
        known = set(listed) | set(self.data["releases"])
        stable = [v for v in known if STABLE_VERSION.match(v) and _version_key(v) >= FIRST_VERSION]
        return sorted((v for v in stable if v not in self.data["unusable"]), key=_version_key)

    def release_of(self, version: str) -> str | None:
        """The release `version` bundles, read from its tarball once; None when it cannot be read now."""
        if version in self.data["releases"]:
            return str(self.data["releases"][version])
        had_tarball = (self.cache.npm / f"{NPM_PACKAGE}-{version}.tgz").is_file()
        try:
            tarball = self._fetch(version)
        except SourceError as exc:  # offline, say: not recorded, asked again next time
            self.problems.append(f"{NPM_PACKAGE}@{version}: {exc}")
            return None
        self.probed.append(version)
        if not had_tarball:
            self._discard.add(tarball)
        try:
            release = self._release_in(tarball)
        except SourceError as exc:  # a version without a readable release file is no candidate, ever
            self.data["unusable"][version] = str(exc)
            self._discard.add(tarball)
            self.save()
            return None
        self.data["releases"][version] = release
        self.save()
        return release

    # --- every version (`migrate sources --list [--probe]`) ------------------------------------------------------

    def probe_all(self) -> list[str]:
        """Read the release of every candidate version not read yet — each one, not a bisection — so every
        bundled release is known (issue 23: each is usable as a tree and as a corpus). Tarballs downloaded only for
        this are deleted again. Returns the versions that could not be read now (offline, say)."""
        failed = []
        try:
            for version in self.versions(fresh=True):
                if self.release_of(version) is None and version not in self.data["unusable"]:
                    failed.append(version)
        finally:
            self._tidy(None)
        return failed

    def listing(self) -> list[tuple[str, str | None]]:
        """Every candidate version, oldest first, with the release it bundles (None: not read yet)."""
        versions = self.versions()
        return [(v, self.data["releases"].get(v)) for v in versions]

    # --- a request -------------------------------------------------------------------------------------------

    def find(self, requested: str) -> Bundle | None:
        """The bundle to provide for `requested`: the same release, else the nearest b-tag within
        MAX_STAND_IN_DISTANCE builds; None when there is none."""
        bundle = None
        try:
            bundle = self._find(requested)
            return bundle
        finally:
            self._tidy(bundle)

    def _find(self, requested: str) -> Bundle | None:
        exact = self._exact(requested)
        if exact is not None or not TAG.match(requested):
            return exact if exact is not None else self._named(requested)
        number = int(requested[1:])
        newest = max((n for r in self.data["releases"].values() if (n := _build_number(r)) is not None), default=-1)
        versions = self.versions(fresh=number > newest)
        lo, hi = self._bracket(versions, number)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            release = self.release_of(versions[mid])
            if release is None:  # unreadable now: leave it out of this search
                versions.pop(mid)
                hi -= 1
                continue
            built = _build_number(release)
            if built is not None and built <= number:
                lo = mid
            else:  # a later build, or a release named otherwise (those came after the b-tags)
                hi = mid
        near = [
            Bundle(versions[i], str(self.data["releases"][versions[i]]))
            for i in (lo, hi)
            if 0 <= i < len(versions) and _build_number(str(self.data["releases"][versions[i]])) is not None
        ]
        near = [b for b in near if abs(int(b.release[1:]) - number) <= MAX_STAND_IN_DISTANCE]
        return min(near, key=lambda b: (abs(int(b.release[1:]) - number), _version_key(b.version)), default=None)

    def _exact(self, requested: str) -> Bundle | None:
        carrying = [b for b in self.bundles() if b.release == requested]
        return carrying[-1] if carrying else None

    def _bracket(self, versions: list[str], number: int) -> tuple[int, int]:
        """Indexes lo < hi with release(lo) <= number < release(hi), narrowed by what is already known."""
        lo, hi = -1, len(versions)
        for index, version in enumerate(versions):
            release = self.data["releases"].get(version)
            if release is None:
                continue
            built = _build_number(release)
            if built is not None and built <= number:
                lo = max(lo, index)
            elif index > lo:
                hi = min(hi, index)
        return lo, max(hi, lo + 1)

    def _named(self, requested: str) -> Bundle | None:
        """A release named otherwise (v0.4.0): newer than every b-tag, so looked for from the newest version down."""
        if not RELEASE_NAME.match(requested):
            return None
        for version in reversed(self.versions(fresh=True)):
            release = self.release_of(version)
            if release == requested:
                return Bundle(version, release)
            if release is not None and TAG.match(release):
                return None  # past the named releases
        return None

    def _tidy(self, chosen: Bundle | None) -> None:
        """Delete the tarballs downloaded only to read their release; the chosen bundle's stays for `_from_npm`."""
        keep = self.cache.npm / f"{NPM_PACKAGE}-{chosen.version}.tgz" if chosen else None
        for tarball in self._discard - {keep}:
            tarball.unlink(missing_ok=True)
        self._discard.clear()


def npm_stand_in(requested: str, cache: str | Path | None = None) -> str | None:
    """The npm-bundled release to provide for a requested tag: the same, or the nearest close enough."""
    if not _is_tag(requested):
        return None
    bundle = NpmCatalogue(SourceCache(cache)).find(requested)
    return bundle.release if bundle else None


def _from_npm(requested: str, bundle: Bundle, cache: SourceCache) -> SourceTree:
    provided, version = bundle.release, bundle.version
    tarball = _npm_tarball(version, cache)
    with tempfile.TemporaryDirectory(dir=cache.npm) as tmp:
        info = _read_member(tarball, INFO_MEMBER)
        try:
            with tarfile.open(tarball) as archive:
                archive.extract(BUNDLE_MEMBER, tmp, filter="data")
        except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SourceError(f"{tarball} is corrupt or incomplete ({reason}): delete it and retry") from exc
        if info.get("tag") != provided:
            raise SourceError(f"{tarball} carries llama.cpp {info.get('tag')}, not {provided}: delete it and retry")
        bundle_file = Path(tmp) / BUNDLE_MEMBER
        commit = _git("bundle", "list-heads", str(bundle_file)).split()[0]
        dest = cache.fresh_dir(f"{provided}-{commit[:12]}")
        _git("clone", "--quiet", str(bundle_file), str(dest))
        _git("-c", "advice.detachedHead=false", "checkout", "--quiet", commit, cwd=dest)
    tree = SourceTree(dest, requested, provided, commit, f"npm:{NPM_PACKAGE}@{version}")
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
    provided = requested if _is_tag(requested) else commit[:12]
    tree = SourceTree(dest, requested, provided, commit, f"checkout:{checkout}")
    cache.store(tree)
    return tree


def _from_remote(requested: str, remote: str, cache: SourceCache) -> SourceTree:
    ref = f"refs/tags/{requested}" if _is_tag(requested) else requested
    with tempfile.TemporaryDirectory(dir=cache.src) as tmp:
        work = Path(tmp) / "tree"
        work.mkdir()
        _git("init", "--quiet", cwd=work)
        try:
            _git("fetch", "--quiet", "--depth", "1", remote, ref, cwd=work)
        except SourceError as exc:
            raise SourceError(
                f"cannot fetch {requested} from {remote} ({exc}); offline, use --via npm "
                f"({NpmCatalogue(cache).describe()}) or --checkout PATH"
            ) from exc
        _git("-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD", cwd=work)
        commit = _head(work)
        dest = cache.fresh_dir(f"{requested}-{commit[:12]}")
        shutil.move(str(work), dest)
    tree = SourceTree(dest, requested, requested if _is_tag(requested) else commit[:12], commit, f"remote:{remote}")
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
    if not str(spec).strip():  # Path("") is the current folder: an unset variable must not resolve to it
        raise SourceError("an empty llama.cpp version: give a build tag (b7785), a commit or a llama.cpp folder")
    path = Path(spec)
    if path.is_dir():
        if not is_llama_tree(path):
            raise SourceError(f"{spec} is a directory but not a llama.cpp tree (no include/llama.h, ggml/)")
        commit = _head(path) or "unknown"
        provided = _describe_tag(path) or commit[:12]
        return SourceTree(path.resolve(), str(path.resolve()), provided, commit, f"path:{path}")
    if not (_is_tag(spec) or COMMIT.match(spec)):
        raise SourceError(f"{spec!r} is neither a build tag (bNNNN), a release (vX.Y.Z), a commit hash nor a "
                          "llama.cpp directory")  # fmt: skip
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
    if via in ("auto", "npm") and _is_tag(spec):
        catalogue = NpmCatalogue(store)
        bundle = catalogue.find(spec)
        if bundle:
            if refresh:
                store.forget(bundle.release)
            cached = store.lookup(bundle.release)
            return _requested(cached, spec) if cached else _from_npm(spec, bundle, store)
        if via == "npm":
            problems = f" ({'; '.join(catalogue.problems[:3])})" if catalogue.problems else ""
            raise SourceError(f"no npm bundle within {MAX_STAND_IN_DISTANCE} builds of {spec}; "
                              f"{catalogue.describe()}{problems}")  # fmt: skip
    elif via == "npm":
        raise SourceError(f"{spec} is not a release name (bNNNN or vX.Y.Z): npm bundles are found by release")
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
