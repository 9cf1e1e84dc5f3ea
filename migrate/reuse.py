"""Results that depend only on unchanged inputs, served again instead of recomputed (issue 26: warm runs).

Two stages of `migrate run` / `migrate gate` look only at the ORIGINAL consumer, which a warm re-run has not
changed: the old build's checks and the prediction (the original, built traced, replayed against the target's
run-time contract). Each is stored under a key that is the digest of every input it depends on — the library
bytes (and the prebuilt llama.cpp libraries it loads), the header, the consumer tree (its config, adapter and own
tests), the models, the llama.cpp tree's commit, the checks' code and contracts, the options, the check names,
the Python and the CPU — so any change to any of them is a different key and the stage runs again. What is
served is reported as such ("reused from run X, inputs identical"), never passed off as measured now.

Only clean results are stored: every check passed or was skipped. A failure, a hang or a harness error could be
the machine's (a loaded host, a timeout) rather than the consumer's, and must be seen again, not replayed.
Throughput is never stored: it is a measurement of now.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from migrate.paths import cache_root, data_dir

FORMAT_VERSION = 1
IGNORED_DIRS = frozenset({".git", "build", "__pycache__", ".pytest_cache"})
# options that say how a run is organised, not what a check sees (workers at once, where this run's traces go), and
# those only the throughput comparison reads, which is never stored
NOT_INPUTS = frozenset({"jobs", "trace_dir", "tps_floor", "throughput_model", "tps_max_pairs"})
# environment read by the harness or the checks (thresholds, counters); the cache's own location is not an input
ENV_PREFIX = "LLAMA_MIGRATE_"
ENV_NOT_INPUTS = frozenset({"LLAMA_MIGRATE_CACHE"})
DISABLE_ENV = "LLAMA_MIGRATE_NO_REUSE"


class ReusedStage(Enum):
    OLD_CHECKS = "the old build's checks"
    PREDICTION = "the prediction"


@dataclass(frozen=True)
class Reused:
    """One stage's results served from the store: which run made them, when, under which key."""

    stage: ReusedStage
    run: str  # the run folder's name that computed them
    made: str  # UTC time they were stored
    key: str
    items: int  # checks (old build) or traced checks (prediction) it stands for

    def line(self) -> str:
        return (f"{self.stage.value} ({self.items} checks) reused from run {self.run} ({self.made}), inputs "
                f"identical (key {self.key[:12]})")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"stage": self.stage.value}


@dataclass
class Inputs:
    """What a stage's results depend on, as named digests; `key()` is their digest."""

    stage: ReusedStage
    parts: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        text = json.dumps({"format": FORMAT_VERSION, "stage": self.stage.name, **self.parts}, sort_keys=True,
                          default=str)  # fmt: skip
        return hashlib.sha256(text.encode()).hexdigest()


# --- digests -----------------------------------------------------------------------------------------------------

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, within one process


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (memoised per process by size and mtime: a model is read once per run)."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_DIGESTS[memo] = digest.hexdigest()
    return _FILE_DIGESTS[memo]


def tree_digest(root: Path, suffixes: Iterable[str] | None = None) -> str:
    """sha256 over every file's relative path and bytes under `root` (build folders, VCS and caches left out)."""
    wanted = set(suffixes) if suffixes is not None else None
    digest = hashlib.sha256()
    for path in sorted(_files(root)):
        if wanted is not None and path.suffix not in wanted:
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0" + file_digest(path).encode() + b"\n")
    return digest.hexdigest()


def _files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in IGNORED_DIRS and not d.startswith("build-")]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                yield path


def optional_digest(path: str | Path | None) -> str:
    return file_digest(Path(path)) if path and Path(path).is_file() else ""


def library_digest(library: Path) -> dict[str, str]:
    """The shim library, and the llama.cpp libraries it loads at run time when they came prebuilt (a source build
    links llama.cpp in statically: its bytes are the library's)."""
    from verify.manifest import read_manifest

    parts = {"library": file_digest(library)}
    manifest = read_manifest(library)
    backends = (manifest.prebuilt or {}).get("backends_dir") if manifest else None
    if backends and Path(backends).is_dir():
        parts["prebuilt"] = tree_digest(Path(backends))
    return parts


def code_digest() -> str:
    """The checks' code and data: the verify package (checks, harness, driver, tracer) and the contracts."""
    import verify

    package = Path(verify.__file__).resolve().parent
    parts = [tree_digest(package, {".py", ".c", ".h", ".cpp", ".yaml", ".json", ".toml"})]
    contracts = data_dir("contracts")
    if contracts.is_dir():
        parts.append(tree_digest(contracts))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def machine() -> dict[str, str]:
    """What the same code on the same bytes may still depend on: Python, OS, CPU model and features."""
    cpu = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() in ("model name", "flags") and name.strip() not in cpu:
                cpu[name.strip()] = value.strip()
    except OSError:
        pass
    return {"python": sys.version, "platform": platform.platform(), "machine": platform.machine(),
            "cpu": hashlib.sha256(json.dumps(cpu, sort_keys=True).encode()).hexdigest(),
            "cores": str(os.cpu_count())}  # fmt: skip


def environment() -> dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIX) and k not in ENV_NOT_INPUTS}


def options_inputs(options: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(options).items() if k not in NOT_INPUTS}


def check_inputs(stage: ReusedStage, target: Any, options: Any, names: list[str] | None, tree_commit: str,
                 extra: dict[str, Any] | None = None) -> Inputs:  # fmt: skip
    """The inputs of running `names` (None: the whole checklist) on one build (`verify.session.Target`)."""
    parts: dict[str, Any] = {
        **library_digest(Path(target.library)),
        "header": optional_digest(target.header),
        "model": optional_digest(target.model),
        "eog_model": optional_digest(getattr(options, "eog_model", "")),
        "consumer": tree_digest(Path(target.config_root)) if target.config_root else "",
        "verify_table": json.dumps(target.verify, sort_keys=True, default=str),
        "llama_tree": [str(target.llama_tree), tree_commit],
        "options": options_inputs(options),
        "names": names,
        "code": code_digest(),
        "machine": machine(),
        "environment": environment(),
    }
    return Inputs(stage, parts | (extra or {}))


# --- the store ---------------------------------------------------------------------------------------------------


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").lower() not in ("1", "yes", "true", "on")


def store_dir(cache: str | None) -> Path:
    return cache_root(cache) / "reuse"


def _path(cache: str | None, key: str) -> Path:
    return store_dir(cache) / f"{key}.pickle"


def lookup(cache: str | None, inputs: Inputs) -> tuple[Any, Reused] | None:
    """The stored value and where it came from, or None (never stored, unreadable, or made by other inputs)."""
    key = inputs.key()
    path = _path(cache, key)
    if not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            record = pickle.load(handle)  # written by `store` below with this code (the key covers the code)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or record.get("stage") != inputs.stage.name:
        return None
    reused = Reused(inputs.stage, record["run"], record["made"], key, record["items"])
    return record["value"], reused


def store(cache: str | None, inputs: Inputs, value: Any, run: str, items: int) -> None:
    """Keep `value` under the inputs' key (written whole, then renamed: a concurrent reader sees all or nothing)."""
    key = inputs.key()
    path = _path(cache, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"key": key, "stage": inputs.stage.name, "run": run, "items": items, "value": value,
              "made": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()), "inputs": inputs.parts}  # fmt: skip
    tmp = path.with_suffix(f".{os.getpid()}.part")
    with tmp.open("wb") as handle:
        pickle.dump(record, handle)
    tmp.replace(path)


def clean(results: Iterable[Any]) -> bool:
    """Only results every one of which passed or was skipped are kept (a failure may be the machine's)."""
    from verify.checks import PASSED, SKIPPED

    return all(r.status in (PASSED, SKIPPED) for r in results)
