"""cffi bindings (ABI mode) made from the consumer's own header, not retyped.

The header goes through the C preprocessor with attributes and export macros defined away; only the
declarations that come from the consumer's header files are kept (system headers contribute types cffi
already knows, such as int32_t and size_t, and syntax it cannot read).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cffi

from verify.backends import BackendsError, load_backends
from verify.errors import ToolError

LINE_MARKER = re.compile(r'^# (\d+) "(.*)"')
EXPORT_MACRO = re.compile(r"^\s*#\s*define\s+(\w+_API)\b", re.MULTILINE)


class BindingError(ToolError):
    """The header could not be turned into cffi declarations, or the library not loaded."""


def export_macros(header_text: str) -> list[str]:
    """Export macros the header defines (FOO_API), so they can be defined empty for cffi."""
    return sorted(set(EXPORT_MACRO.findall(header_text)))


def preprocess_header(header: Path, include_dirs: list[Path] | None = None) -> str:
    """The header's own declarations after the preprocessor, as C (so `extern "C"` guards vanish)."""
    if not header.is_file():
        raise BindingError(f"{header}: header not found")
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise BindingError("no C compiler (gcc/cc) to preprocess the header with")
    text = header.read_text(encoding="utf-8", errors="replace")
    cmd = [compiler, "-E", "-x", "c", "-D__attribute__(x)=", "-D__declspec(x)="]
    cmd += [f"-D{macro}=" for macro in export_macros(text)]
    cmd += [f"-I{d}" for d in include_dirs or []]
    cmd.append(str(header))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BindingError(f"preprocessing {header} failed:\n{proc.stderr.strip()}")
    return _own_lines(proc.stdout, header.parent.resolve())


def _own_lines(preprocessed: str, own_dir: Path) -> str:
    """Keep the lines that the preprocessor attributes to files under the consumer's header folder."""
    kept: list[str] = []
    own = False
    for line in preprocessed.splitlines():
        marker = LINE_MARKER.match(line)
        if marker:
            name = marker.group(2)
            own = not name.startswith("<") and Path(name).resolve().is_relative_to(own_dir)
            continue
        if own and line.strip():
            kept.append(line)
    return "\n".join(kept) + "\n"


@dataclass
class Bindings:
    ffi: cffi.FFI
    lib: object
    library_path: Path
    header: Path


def load(
    library: Path, header: Path, include_dirs: list[Path] | None = None, declarations: str | None = None
) -> Bindings:
    """dlopen the built library with declarations taken from its header.

    `declarations`: the header already preprocessed (`preprocess_header`), e.g. by a parent process that
    starts many children on the same build; None preprocesses it here.
    """
    ffi = cffi.FFI()
    if declarations is None:
        declarations = preprocess_header(header, include_dirs)
    try:
        ffi.cdef(declarations)
    except cffi.CDefError as exc:
        raise BindingError(f"cffi cannot read the declarations of {header}: {exc}") from exc
    if not library.is_file():
        raise BindingError(f"{library}: library not found (build it with `migrate build`)")
    try:
        lib = ffi.dlopen(str(library))
    except OSError as exc:
        raise BindingError(f"cannot load {library}: {exc}") from exc
    try:  # a shim on prebuilt llama.cpp: its CPU backend is loaded at run time, here, before any model load
        load_backends(library)
    except BackendsError as exc:
        raise BindingError(f"{library}: {exc}") from exc
    return Bindings(ffi=ffi, lib=lib, library_path=library, header=header)


def find_header(src: Path, library_sources: list[Path] | None = None) -> Path:
    """The consumer's C API header: the .h beside the shim sources that declares exported functions."""
    candidates: list[Path] = []
    roots = sorted({p.parent for p in library_sources}) if library_sources else [src]
    for root in roots:
        candidates += sorted(root.rglob("*.h")) if root.is_dir() else []
    exporting = [h for h in candidates if export_macros(h.read_text(encoding="utf-8", errors="replace"))]
    if len(exporting) != 1:
        names = ", ".join(str(h) for h in exporting) or "none"
        raise BindingError(f"cannot pick the C API header under {src} (candidates: {names}); set `header` in "
                           "llama-migrate.toml or pass --header")
    return exporting[0]
