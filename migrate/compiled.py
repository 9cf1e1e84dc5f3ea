"""Compiled shims served again: the same inputs compile to the same library, wherever the sources lie.

`migrate run` migrates into a fresh copy of the consumer every run, so the migrated shim's build folder (keyed by
its sources' paths, migrate/build.py `shim_build_dir`) is new each time and the shim was compiled again although
not a byte of it changed. Here a plain shim library is stored under a key of everything its compile and link read:
the shim's CMakeLists.txt with the consumer's root written as a placeholder, every file under that root (relative
path and bytes: a header added beside the sources could change what an include finds), llama.cpp's libraries the
shim links (path, size, mtime), the compiler (`c++ --version`, CC/CXX) and the library's name. A hit copies the
library into the run's build folder instead of configuring and compiling.

Only where that key is the whole story:
- a plain shim (not traced, not sanitized: their debug information and symbolisation name the sources' paths);
- every include directory, extra source and link input of the consumer's `[build]` inside the consumer's root, and
  no flag naming a file outside it (their bytes would not be in the key); no shared library of the consumer's linked
  by path (the shim's RUNPATH would name the copy it was built from);
- no consumer file spelling `__FILE__`, `__builtin_FILE` or `source_location` (the copy's path would be compiled in:
  a reused library would carry another copy's path);
- no `-g` among the flags (debug information names the paths too).
Elsewhere the shim is compiled as before, and `reason` says why.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from migrate.build_settings import BuildSettings
from migrate.paths import cache_root
from migrate.reuse import file_digest, tree_digest

ROOT_PLACEHOLDER = "@CONSUMER_ROOT@"
FORMAT_VERSION = 1
KEEP_ENTRIES = 24  # the most recently used libraries kept; older ones are removed when one is stored
PATH_MACROS = re.compile(rb"__FILE__|__builtin_FILE|source_location")
CODE_SUFFIXES = {".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".hxx", ".inc", ".ipp", ".tcc"}


@dataclass(frozen=True)
class CompiledKey:
    """The key of one plain shim's inputs (`key` None: not reusable here, `reason` says why)."""

    key: str | None
    reason: str = ""


def _compiler_identity() -> str:
    """The C/C++ compilers CMake would pick (CC/CXX, else cc/c++) and what they say they are."""
    return _identity_of(os.environ.get("CC") or "cc", os.environ.get("CXX") or "c++")


@functools.lru_cache(maxsize=8)
def _identity_of(cc: str, cxx: str) -> str:
    """Asked once per process and pair of compilers: a run builds several shims, each key needs it."""
    parts = []
    for variable, compiler in (("CC", cc), ("CXX", cxx)):
        try:
            version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            version = "unavailable"
        parts.append(f"{variable}={compiler}:{shutil.which(compiler)}:{version}")
    return "\n".join(parts)


def _outside(path: str, root: Path) -> bool:
    candidate = Path(path)
    return candidate.is_absolute() and not candidate.resolve().is_relative_to(root)


def _not_reusable(root: Path, settings: BuildSettings, sources: list[Path]) -> str:
    """Why a library compiled from `sources` under `root` cannot be served from another copy's inputs ('' if it can)."""
    for source in sources:
        if not source.resolve().is_relative_to(root):
            return f"the source {source} lies outside the consumer's root {root}"
    for name in ("include_dirs", "sources", "link_libraries"):
        for item in getattr(settings, name):
            if _outside(item, root):
                return f"[build] {name} names {item}, outside the consumer's root"
    for item in settings.link_libraries:
        if ".so" in Path(item).name and "/" in item:
            return f"[build] link_libraries names the shared library {item}: the shim's RUNPATH would name this copy"
    flags = [*settings.flags, *" ".join(settings.environment.values()).split()]
    for flag in flags:
        if flag.startswith("-g"):
            return f"the flag {flag} writes the sources' paths into the library"
        if _outside(flag, root) and Path(flag).exists():
            return f"the flag {flag} names a file outside the consumer's root"
    for path in _code_files(root):
        if PATH_MACROS.search(path.read_bytes()):
            return f"{path.relative_to(root)} uses the source's path (__FILE__ or source_location)"
    return ""


def _code_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in CODE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))  # fmt: skip


def compiled_key(cmake_text: str, root: Path | None, settings: BuildSettings, sources: list[Path],
                 linked: list[Path], name: str) -> CompiledKey:  # fmt: skip
    """The key of a plain shim built from `cmake_text` (its CMakeLists.txt) out of the consumer at `root`."""
    if root is None:
        return CompiledKey(None, "the consumer's root is not known")
    root = root.resolve()
    reason = _not_reusable(root, settings, sources)
    if reason:
        return CompiledKey(None, reason)
    digest = hashlib.sha256()
    for part in (
        f"format {FORMAT_VERSION}",
        cmake_text.replace(str(root), ROOT_PLACEHOLDER),
        tree_digest(root),
        json.dumps([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in linked if p.exists()]),
        _compiler_identity(),
        name,
    ):
        digest.update(part.encode() + b"\0")
    return CompiledKey(digest.hexdigest()[:24])


def store_dir(cache: Path | str | None) -> Path:
    return cache_root(cache) / "compiled"


def lookup(cache: Path | str | None, key: str, library: Path) -> bool:
    """Copy the library stored under `key` to `library` (a copy, not a link: a later link in that folder rewrites
    it); False when none is stored or its bytes do not match what was stored (a damaged entry is removed)."""
    entry = store_dir(cache) / key
    stored, record = entry / library.name, entry / "entry.json"
    try:
        expected = json.loads(record.read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return False
    if not stored.is_file() or file_digest(stored) != expected:
        shutil.rmtree(entry, ignore_errors=True)
        return False
    library.parent.mkdir(parents=True, exist_ok=True)
    tmp = library.with_name(f".{library.name}.{os.getpid()}.part")
    tmp.unlink(missing_ok=True)
    shutil.copy2(stored, tmp)
    tmp.replace(library)
    os.utime(record)  # most recently used
    return True


def store(cache: Path | str | None, key: str, library: Path) -> None:
    """Keep `library` under `key` (written whole, then renamed: a concurrent run sees all of it or nothing)."""
    root = store_dir(cache)
    entry = root / key
    if (entry / "entry.json").is_file():
        return
    tmp = root / f".{key}.{os.getpid()}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(library, tmp / library.name)
    (tmp / "entry.json").write_text(json.dumps({"sha256": file_digest(tmp / library.name), "stored": time.time()}))
    try:
        tmp.rename(entry)
    except OSError:  # another run stored the same key first
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(root)


def _prune(root: Path) -> None:
    entries = sorted((e for e in root.iterdir() if (e / "entry.json").is_file()),
                     key=lambda e: (e / "entry.json").stat().st_mtime, reverse=True)  # fmt: skip
    for old in entries[KEEP_ENTRIES:]:
        shutil.rmtree(old, ignore_errors=True)
