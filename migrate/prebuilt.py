"""Prebuilt llama.cpp libraries as a source of builds (`migrate build --llama-build prebuilt|auto`).

node-llama-cpp publishes, beside each version, a platform package (`@node-llama-cpp/linux-x64@<version>`) holding
the shared libraries of the llama.cpp release that version bundles: libllama.<tag>.so, libggml.<tag>.so,
libggml-base.so and the CPU backend variants (libggml-cpu-haswell.so ... -zen4.so). A shim then needs only llama.cpp's
`common` compiled from the tree (and itself), instead of every ggml kernel.

Provenance: the package's build metadata (`bins/<platform>/_nlcBuildMetadata.json`) names the llama.cpp release it
was built from; it must be exactly the release of the tree the shim is compiled against (never a nearby one), and
a CPU package must say it is not a GPU build. The metadata names a release tag, not a commit hash: the tag is the
commit (the tree's commit is the one that tag's bundle holds); the libraries' own `ggml_commit()` is node-llama-cpp's
checkout, not llama.cpp's, so it proves nothing and is not used.

Those libraries load their CPU backend at run time: a process must call `ggml_backend_load_all_from_path(<bins>)`
before loading a model, or llama.cpp says "no backends are loaded". Consumers never do (they call
`llama_backend_init` only), so the build records the folder in the manifest and the harness loads the backends
(verify/backends.py) in every process that loads such a shim.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.paths import cache_root
from migrate.sources import NPM_PACKAGE, NpmCatalogue, SourceCache, SourceTree, _run_npm
from verify.errors import ToolError

if TYPE_CHECKING:
    from migrate.build import BuildOptions, LlamaLibs

METADATA_FILE = "_nlcBuildMetadata.json"
# host (system, machine) -> the platform package's name suffix and its bins/ folder name
PLATFORMS = {("Linux", "x86_64"): "linux-x64", ("Linux", "aarch64"): "linux-arm64"}
PACKAGE_SCOPE = "@node-llama-cpp"
NPM_VERSION = re.compile(rf"^npm:{re.escape(NPM_PACKAGE)}@(?P<version>\d+\.\d+\.\d+)$")
# llama.cpp's own libraries come from the package: these targets are never compiled for a prebuilt build
PREBUILT_TARGETS = re.compile(r"(^|/)lib(llama|ggml[^/]*)\.a$")


class LlamaBuild(StrEnum):
    """Where llama.cpp's libraries come from (`migrate build --llama-build`)."""

    SOURCE = "source"  # compiled from the tree (static, in the cache)
    PREBUILT = "prebuilt"  # a registry package's shared libraries of the same release; an error where there is none
    AUTO = "auto"  # prebuilt where a package of this release exists for this platform and options, else source


class PrebuiltError(ToolError):
    """No usable prebuilt libraries for this tree and options; the message says why (auto falls back to source)."""


@dataclass(frozen=True)
class Prebuilt:
    """A platform package's libraries, unpacked in the cache, checked against the tree's release."""

    package: str  # "@node-llama-cpp/linux-x64"
    version: str  # "3.15.1"
    release: str  # the llama.cpp release its metadata names ("b7836")
    bins: Path  # the folder holding the libraries and the CPU backend variants
    libraries: tuple[Path, ...]  # what the shim links: libllama.<tag>.so, libggml.<tag>.so, libggml-base.so
    # llama.cpp's common as a shared library, where the package ships it (libllama-common.so, b10361's): then nothing
    # of llama.cpp is compiled at all; else common is compiled from the tree
    common: Path | None
    backends: tuple[str, ...]  # the CPU backend variants, loaded at run time (the best for the CPU wins)
    metadata: dict[str, Any]

    def linked(self) -> tuple[Path, ...]:
        """Every shared library the shim links, libllama first."""
        return self.libraries + ((self.common,) if self.common else ())

    def describe(self) -> dict[str, Any]:
        """What the manifest, the build's JSON and the report say about these libraries."""
        return {"package": f"{self.package}@{self.version}", "release": self.release, "bins": str(self.bins),
                "libraries": [p.name for p in self.linked()], "backends": list(self.backends),
                "common": "prebuilt" if self.common else "compiled from the tree",
                "backends_dir": str(self.bins), "metadata": self.metadata}  # fmt: skip


def platform_name(system: str | None = None, machine: str | None = None) -> str | None:
    """The package platform of this host (linux-x64), or None where node-llama-cpp publishes none we know."""
    return PLATFORMS.get((system or platform.system(), machine or platform.machine()))


def package_version(tree: SourceTree, cache: str | Path | None = None) -> str | None:
    """The node-llama-cpp version that bundles exactly the tree's release: the one it came from, else the one the
    catalogue knows for that release (never a nearby release)."""
    found = NPM_VERSION.match(tree.source)
    if found:
        return found["version"]
    releases = NpmCatalogue(SourceCache(cache)).releases()
    matching = sorted((v for v, r in releases.items() if r == tree.provided), key=_version_key)
    return matching[-1] if matching else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def find_prebuilt(tree: SourceTree, backend: str, cache: str | Path | None = None) -> Prebuilt:
    """The checked prebuilt libraries of the tree's release for this platform; PrebuiltError says why there are
    none (no such platform or backend, no package of that release, metadata naming another release)."""
    if backend != "cpu":
        raise PrebuiltError(f"no prebuilt libraries are used for backend {backend!r} (only cpu is supported)")
    name = platform_name()
    if name is None:
        raise PrebuiltError(f"no prebuilt llama.cpp package for {platform.system()} {platform.machine()}")
    version = package_version(tree, cache)
    if version is None:
        raise PrebuiltError(f"no {NPM_PACKAGE} version bundles {tree.provided} (the catalogue knows none)")
    package = f"{PACKAGE_SCOPE}/{name}"
    folder = _unpacked(package, version, cache)
    return check(folder / "package" / "bins" / name, package, version, tree)


def check(bins: Path, package: str, version: str, tree: SourceTree) -> Prebuilt:
    """Read and check the package's build metadata against the tree (exact release, CPU build)."""
    metadata_file = bins / METADATA_FILE
    if not metadata_file.is_file():
        raise PrebuiltError(f"{package}@{version} has no {METADATA_FILE}: its provenance cannot be checked")
    try:
        metadata = json.loads(metadata_file.read_text())
        options = metadata["buildOptions"]
        release = str(options["llamaCpp"]["release"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PrebuiltError(f"{metadata_file}: unreadable build metadata ({exc})") from exc
    if release != tree.provided:
        raise PrebuiltError(f"{package}@{version} was built from llama.cpp {release}, not {tree.provided}: refused "
                            "(only the exact release is used)")  # fmt: skip
    if options.get("gpu") not in (False, None, "false"):
        raise PrebuiltError(f"{package}@{version} is a {options.get('gpu')} build, not a CPU one")
    libraries = tuple(_one(bins, pattern) for pattern in (f"libllama.{release}.so", f"libggml.{release}.so",
                                                          "libggml-base.so"))  # fmt: skip
    backends = tuple(sorted(p.name for p in bins.glob("libggml-cpu*.so")))
    if not backends:
        raise PrebuiltError(f"{bins}: no CPU backend (libggml-cpu*.so) in the package")
    common = next((p for p in (bins / "libllama-common.so", bins / "libcommon.so") if p.is_file()), None)
    return Prebuilt(package, version, release, bins, libraries, common, backends, metadata)


def _one(bins: Path, name: str) -> Path:
    path = bins / name
    if not path.is_file():
        raise PrebuiltError(f"{bins}: {name} missing from the package")
    return path


def _unpacked(package: str, version: str, cache: str | Path | None) -> Path:
    """`<cache>/prebuilt/<name>-<version>/`: the package tarball (npm pack, kept in <cache>/npm/) unpacked once."""
    root = cache_root(cache) / "prebuilt"
    folder = root / f"{package.removeprefix(PACKAGE_SCOPE + '/')}-{version}"
    if (folder / "package" / "package.json").is_file():
        return folder
    tarball = _tarball(package, version, SourceCache(cache).npm)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        try:
            with tarfile.open(tarball) as archive:
                archive.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as exc:
            tarball.unlink(missing_ok=True)
            raise PrebuiltError(f"{tarball}: cannot unpack ({exc}); it was removed, retry") from exc
        if not folder.exists():  # another process may have unpacked it meanwhile
            Path(tmp).rename(folder)
            Path(tmp).mkdir()  # for TemporaryDirectory's cleanup
    return folder


def _tarball(package: str, version: str, npm_dir: Path) -> Path:
    name = f"{package.removeprefix('@').replace('/', '-')}-{version}.tgz"
    tarball = npm_dir / name
    if tarball.is_file():
        return tarball
    with tempfile.TemporaryDirectory(dir=npm_dir) as tmp:
        try:
            proc = _run_npm(["pack", f"{package}@{version}", "--silent"], Path(tmp))
        except ToolError as exc:  # npm missing: no package to fetch (auto builds from source)
            raise PrebuiltError(str(exc)) from exc
        produced = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not produced:
            if "ETARGET" in proc.stderr or "E404" in proc.stderr:
                raise PrebuiltError(f"{package}@{version} is not published")
            raise PrebuiltError(f"npm pack {package}@{version} failed: {proc.stderr.strip()[-300:]}")
        produced[0].replace(tarball)
    return tarball


# --- common from the tree -----------------------------------------------------------------------------------


def common_archives(build_dir: Path, targets: tuple[str, ...], log: list[str], jobs: str) -> tuple[list[Path], int]:
    """Compile only the objects of llama.cpp's `common` targets (and the static libraries they need that the
    package does not provide, e.g. cpp-httplib) in a configured tree, and archive them: building the targets
    themselves would build libllama and ggml first (CMake orders a library after the ones it links). Returns
    (archives, objects compiled)."""
    archives: dict[Path, list[str]] = {}
    pending = [_archive_of(build_dir, t) for t in targets]
    while pending:
        archive = pending.pop()
        if archive in archives or PREBUILT_TARGETS.search(archive):
            continue
        objects, needed = _inputs(build_dir, archive)
        archives[archive] = objects
        pending.extend(needed)
    objects = [o for objs in archives.values() for o in objs]
    proc = subprocess.run(["ninja", "-C", str(build_dir), "-j", jobs, *objects], capture_output=True, text=True)
    log.append(f"$ ninja -C {build_dir} <{len(objects)} objects of {', '.join(archives)}>\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise PrebuiltError(f"compiling llama.cpp's common failed (see the log): {proc.stdout.strip()[-300:]}")
    compiled = len(re.findall(r"^\[\d+/\d+\] Building (?:C|CXX) object", proc.stdout, re.MULTILINE))
    made = []
    for archive, members in archives.items():
        path = build_dir / archive
        made.append(path)
        if path.is_file() and compiled == 0:  # up to date: the shim need not relink
            continue
        path.unlink(missing_ok=True)
        ar = subprocess.run(["ar", "qcs", str(path), *members], cwd=build_dir, capture_output=True, text=True)
        if ar.returncode != 0:
            raise PrebuiltError(f"ar {archive} failed: {ar.stderr.strip()[-300:]}")
    return made, compiled


def _query(build_dir: Path, target: str) -> list[str]:
    """The inputs ninja lists for a target (`ninja -t query`): objects, and `|| X` for what it is ordered after."""
    proc = subprocess.run(["ninja", "-C", str(build_dir), "-t", "query", target], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PrebuiltError(f"ninja cannot tell what {target} is made of: {proc.stdout.strip()[-200:]}")
    lines = proc.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("  input:")), len(lines))
    end = next((i for i, line in enumerate(lines) if line.startswith("  outputs:")), len(lines))
    return [line.strip() for line in lines[start + 1 : end]]


def _archive_of(build_dir: Path, target: str) -> str:
    """The static library a CMake target makes (`common` -> common/libcommon.a)."""
    found = [i for i in _query(build_dir, target) if i.endswith(".a") and not i.startswith("||")]
    if len(found) != 1:
        raise PrebuiltError(f"target {target} makes no single static library ({found})")
    return found[0]


def _inputs(build_dir: Path, archive: str) -> tuple[list[str], list[str]]:
    """An archive's object files, and the static libraries it is ordered after (those it links)."""
    entries = _query(build_dir, archive)
    objects = [e for e in entries if e.endswith(".o") and not e.startswith("||")]
    needed = [e.removeprefix("||").strip() for e in entries if e.startswith("||") and e.endswith(".a")]
    return objects, needed


def common_build_dir(tree: SourceTree, prebuilt: Prebuilt, options: BuildOptions, cache: str | Path | None) -> Path:
    """Beside the source builds, never one of them (their cache key is unchanged)."""
    name = f"{tree.provided}-{tree.commit[:12]}-prebuilt-{prebuilt.version}-{options.key()}"
    return cache_root(cache) / "build" / name


def build_common(tree: SourceTree, prebuilt: Prebuilt, options: BuildOptions,
                 cache: str | Path | None = None) -> tuple[LlamaLibs | None, str]:  # fmt: skip
    """The tree configured as for a source build, only `common` compiled; the libraries to link are the
    package's. Returns (libs or None on failure, log), like build.build_llama."""
    from migrate.build import LlamaLibs, _jobs, _locked, _run, llama_targets

    build_dir = common_build_dir(tree, prebuilt, options, cache)
    log: list[str] = [f"llama.cpp libraries: {prebuilt.package}@{prebuilt.version} (prebuilt {prebuilt.release}, "
                      f"{prebuilt.bins}); common from {tree.path}"]  # fmt: skip
    started = time.monotonic()
    if prebuilt.common is not None:  # the package has common too: nothing to compile
        build_dir.mkdir(parents=True, exist_ok=True)
        log.append(f"common: {prebuilt.common.name} from the package")
        return LlamaLibs(tree=tree.path, build_dir=build_dir, archives=[], targets_file=None,
                         include_dirs=_includes(tree), backend=options.backend, reused=True, seconds=0.0,
                         objects_rebuilt=0, prebuilt=prebuilt), "\n".join(log)  # fmt: skip
    with _locked(build_dir.parent / f"{build_dir.name}.lock"):
        stamp = build_dir / "llama-migrate-complete.json"
        reused = stamp.is_file()
        if not (build_dir / "build.ninja").is_file():
            cmd = ["cmake", "-S", str(tree.path), "-B", str(build_dir), "-G", "Ninja", *options.llama_cmake_args()]
            if _run(cmd, None, log) != 0:
                return None, "\n".join(log)
        common = tuple(t for t in llama_targets(tree.path) if t != "llama")
        try:
            archives, compiled = common_archives(build_dir, common, log, _jobs(options))
        except PrebuiltError as exc:
            log.append(str(exc))
            return None, "\n".join(log)
        stamp.write_text(json.dumps({"commit": tree.commit, "prebuilt": prebuilt.describe()}, indent=1))
    libs = LlamaLibs(tree=tree.path, build_dir=build_dir, archives=archives, targets_file=None,
                     include_dirs=_includes(tree),
                     backend=options.backend, reused=reused, seconds=time.monotonic() - started,
                     objects_rebuilt=compiled, prebuilt=prebuilt)  # fmt: skip
    return libs, "\n".join(log)


def _includes(tree: SourceTree) -> list[Path]:
    """No imported targets here (those of the configured folder would name libllama.a and ggml's archives, never
    built): the include directories a consumer of llama and common gets, common's PUBLIC vendor/ among them."""
    return [tree.path / d for d in ("include", "ggml/include", "common", ".", "vendor") if (tree.path / d).is_dir()]


# --- the hook of migrate/build.py -------------------------------------------------------------------------------


def llama_libraries(tree: SourceTree, options: BuildOptions, cache: str | Path | None,
                    build_llama: Callable[..., tuple[LlamaLibs | None, str]],
                    ) -> tuple[LlamaLibs | None, str]:  # fmt: skip
    """llama.cpp's libraries for `options.llama_build` prebuilt or auto: the package's (common compiled from the
    tree); where there are none, auto builds from source (`build_llama`) and says why, prebuilt fails saying why."""
    mode = LlamaBuild(options.llama_build)
    try:
        prebuilt = find_prebuilt(tree, options.backend, cache)
    except PrebuiltError as exc:
        if mode is LlamaBuild.PREBUILT:
            return None, f"--llama-build prebuilt: {exc}"
        libs, log = build_llama(tree, options, cache)
        return libs, f"llama.cpp built from source (no prebuilt libraries: {exc})\n{log}"
    return build_common(tree, prebuilt, options, cache)
