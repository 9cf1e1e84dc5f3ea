"""Checks that misbehave on purpose, so the runner's crash isolation can be tested without a broken library.

Imported only by a child asked for a `selftest_*` check; never part of the checklist.
"""

from __future__ import annotations

import ctypes
import os
import time

from verify.checks import Verdict, check
from verify.session import Session, Skip


@check("selftest_pass", "selftest", "passes")
def selftest_pass(s: Session) -> Verdict:
    return Verdict(True, {"pid": os.getpid()})


@check("selftest_abort", "selftest", "aborts like a GGML_ASSERT")
def selftest_abort(s: Session) -> Verdict:
    os.write(2, b"GGML_ASSERT(seq_id >= 0 && (size_t) seq_id < seq_to_stream.size()) failed\n")
    os.abort()


@check("selftest_segfault", "selftest", "dereferences NULL")
def selftest_segfault(s: Session) -> Verdict:
    ctypes.string_at(0)
    return Verdict(True, {})


@check("selftest_hang", "selftest", "never returns")
def selftest_hang(s: Session) -> Verdict:
    while True:
        time.sleep(1)


@check("selftest_raise", "selftest", "raises a Python exception")
def selftest_raise(s: Session) -> Verdict:
    raise RuntimeError("boom")


@check("selftest_skip", "selftest", "cannot run here")
def selftest_skip(s: Session) -> Verdict:
    raise Skip("no GPU on this machine")


@check("selftest_crash_on_free", "selftest", "passes, then the process dies while freeing")
def selftest_crash_on_free(s: Session) -> Verdict:
    s.close = lambda: os.abort()  # type: ignore[method-assign]
    return Verdict(True, {"note": "the check itself passed"})


@check("selftest_env", "selftest", "reports the environment variables a GPU hide sets")
def selftest_env(s: Session) -> Verdict:
    names = ("CUDA_VISIBLE_DEVICES", "LLAMA_MIGRATE_GPU")
    return Verdict(True, {"env": {n: os.environ.get(n) for n in names}})
