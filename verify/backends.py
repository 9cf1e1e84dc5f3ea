"""llama.cpp backends loaded at run time, for shims linked against prebuilt libraries (migrate/prebuilt.py).

Such libraries keep their CPU backend in separate files (libggml-cpu-haswell.so ... -zen4.so) that ggml loads only
when asked: a process that never calls `ggml_backend_load_all_from_path` gets "no backends are loaded" from the
model load. Consumers call only `llama_backend_init`, so the harness does it, once per process, before any check
touches the library: the folder comes from the build manifest (`prebuilt.backends_dir`). A library built from
source has its backend linked in and no such entry: nothing is done.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

from verify.manifest import read_manifest

_loaded: dict[str, BackendsLoaded] = {}


@dataclass(frozen=True)
class BackendsLoaded:
    """What loading the backends of one folder did in this process."""

    folder: str
    registered: int  # backends ggml knows after loading (the CPU one, and any GPU ones the folder holds)
    devices: tuple[str, ...]  # their devices' descriptions, e.g. the CPU's name
    variants: tuple[str, ...]  # the backend files ggml kept mapped (the CPU variant it picked for this CPU)


class BackendsError(Exception):
    """The manifest names a backends folder, but its backends could not be loaded."""


def load_backends(library: Path) -> BackendsLoaded | None:
    """Load the run-time backends a library built against prebuilt llama.cpp needs (None: it needs none)."""
    manifest = read_manifest(library)
    prebuilt = manifest.prebuilt if manifest else None
    if not prebuilt:
        return None
    folder = str(prebuilt.get("backends_dir") or "")
    if folder in _loaded:
        return _loaded[folder]
    ggml = _ggml_library(Path(folder), prebuilt.get("release"))
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path.restype = None
    ggml.ggml_backend_load_all_from_path(os.fsencode(folder))
    loaded = BackendsLoaded(folder, _count(ggml, "ggml_backend_reg_count"), _devices(ggml), _mapped(folder))
    if loaded.registered == 0:
        raise BackendsError(f"no llama.cpp backend could be loaded from {folder}")
    _loaded[folder] = loaded
    return loaded


def _ggml_library(folder: Path, release: object) -> ctypes.CDLL:
    """The package's libggml, the very one the shim's RUNPATH resolved (same soname: dlopen returns it)."""
    candidates = [folder / f"libggml.{release}.so"] if release else []
    candidates += sorted(folder.glob("libggml.*.so")) + [folder / "libggml.so"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise BackendsError(f"{folder}: no libggml to load the backends with")
    try:
        return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise BackendsError(f"cannot load {path}: {exc}") from exc


def _mapped(folder: str) -> tuple[str, ...]:
    """The backend libraries of `folder` this process has mapped (ggml unloads the variants it did not pick)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return ()
    names = {Path(line.split()[-1]).name for line in maps.splitlines() if f"{folder}/libggml-" in line}
    return tuple(sorted(n for n in names if n != "libggml-base.so"))


def _count(ggml: ctypes.CDLL, name: str) -> int:
    function = getattr(ggml, name)
    function.restype = ctypes.c_size_t
    return int(function())


def _devices(ggml: ctypes.CDLL) -> tuple[str, ...]:
    get, describe = ggml.ggml_backend_dev_get, ggml.ggml_backend_dev_description
    get.argtypes, get.restype = [ctypes.c_size_t], ctypes.c_void_p
    describe.argtypes, describe.restype = [ctypes.c_void_p], ctypes.c_char_p
    count = _count(ggml, "ggml_backend_dev_count")
    return tuple((describe(get(i)) or b"").decode(errors="replace") for i in range(count))
