"""The toolkit's one libclang setup: the index, and gcc's own headers for the system include path.

The PyPI libclang wheel ships no compiler resource headers (stddef.h, stdbool.h, stdarg.h), so gcc's go on the
system include path. `verify` holds it because it is the lowest layer: the rewriter and the API diff import it
from here, and `verify` reads the consumer's C API header with it.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import clang.cindex as ci

from verify.errors import ToolError


class ClangUnavailable(ToolError):
    """libclang's shared library could not be loaded."""


@functools.cache
def gcc_include_dir() -> str | None:
    """gcc's own header dir (stddef.h, stdarg.h); None when gcc is not installed."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        return None
    proc = subprocess.run([compiler, "-print-file-name=include"], capture_output=True, text=True)
    path = proc.stdout.strip()
    return path if proc.returncode == 0 and Path(path).is_dir() else None


@functools.cache
def index() -> ci.Index:
    try:
        return ci.Index.create()
    except Exception as exc:  # the wheel's shared library failed to load
        raise ClangUnavailable(f"libclang cannot be loaded ({exc}); reinstall the 'libclang' package") from exc


def system_args() -> list[str]:
    """Flags every parse needs: gcc's headers on the system include path."""
    include = gcc_include_dir()
    return ["-isystem", include] if include else []
