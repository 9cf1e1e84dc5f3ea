"""Freed heap memory filled with a pattern in every check's process: a dangling pointer reads garbage instead of
yesterday's text, and the check comparing what it read fails.

glibc's MALLOC_PERTURB_ does this, and also fills every fresh allocation, which touches every page of the large
buffers llama.cpp allocates and mostly never uses (a context's logits buffer): measured on fixtures/localllm b5415,
context_params + generate took 3.9 s of CPU with it against 1.1 s without (2.5 s of it in the kernel, faulting pages
in). So each check's process gets a small preloaded `free` instead (compiled here once per process with the C
compiler, `PERTURB_SOURCE`): blocks up to 1 MiB are filled with 0xA5 as they are freed, the fresh ones are left
alone; where no compiler can build it, glibc's MALLOC_PERTURB_ (the same byte) is used instead, slower but the same
guarantee for a dangling read.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PERTURB_BYTE = 0xA5
MALLOC_PERTURB = str(PERTURB_BYTE)  # glibc's equivalent, where the preload cannot be built
LIBRARY_NAME = "libllama-migrate-perturb.so"
# blocks larger than this are not filled: llama.cpp's model and context buffers (pages never touched otherwise)
PERTURB_LIMIT = 1 << 20

PERTURB_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stddef.h>
#include <string.h>

static void (*next_free)(void *);
static __thread int resolving;

/* free() of the process: the block filled with PERTURB_BYTE first (up to PERTURB_LIMIT bytes), then freed */
void free(void *p) {
    if (next_free == NULL) {
        if (resolving) return; /* dlsym freeing while it looks free up: that one block is left */
        resolving = 1;
        next_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
        resolving = 0;
    }
    if (p != NULL) {
        size_t n = malloc_usable_size(p);
        if (n <= PERTURB_LIMIT) memset(p, PERTURB_BYTE, n);
    }
    next_free(p);
}
"""


@functools.lru_cache(maxsize=1)
def perturb_library() -> Path | None:
    """The preload, compiled once per process into a temporary folder removed at exit; None without a compiler."""
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="llama-migrate-perturb-"))
    atexit.register(shutil.rmtree, folder, True)
    source, library = folder / "perturb_free.c", folder / LIBRARY_NAME
    source.write_text(PERTURB_SOURCE)
    cmd = [cc, "-O2", "-shared", "-fPIC", f"-DPERTURB_BYTE={PERTURB_BYTE}", f"-DPERTURB_LIMIT={PERTURB_LIMIT}",
           "-o", str(library), str(source), "-ldl"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return library if proc.returncode == 0 and library.is_file() else None


def with_perturb(env: dict[str, str] | None) -> dict[str, str]:
    """`env` (on top of this process's environment) with freed memory filled: the preload first in LD_PRELOAD, else
    MALLOC_PERTURB_. Left as it is where MALLOC_PERTURB_ is set already: by the user, by `migrate mutate` (glibc's
    malloc debug library, which fills already), or to 0 by a check whose heap figures need the plain allocator."""
    full = dict(os.environ) | (env or {})
    if "MALLOC_PERTURB_" in full:
        return dict(env or {})
    library = perturb_library()
    if library is None:
        return dict(env or {}) | {"MALLOC_PERTURB_": MALLOC_PERTURB}
    preload = [str(library), *(p for p in full.get("LD_PRELOAD", "").split(":") if p)]
    return dict(env or {}) | {"LD_PRELOAD": ":".join(preload)}


def is_perturb_preload(path: str) -> bool:
    return Path(path).name == LIBRARY_NAME
