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


@check("selftest_crash_at_exit", "selftest", "passes, then the process dies in a C exit handler")
def selftest_crash_at_exit(s: Session) -> Verdict:
    # as a library's static destructor or atexit handler failing when the process ends: a crash of the check, whether
    # the process was started or forked from a zygote (verify/zygote.py leaves through C exit() for this)
    libc = ctypes.CDLL(None)  # atexit() itself is not exported by glibc: __cxa_atexit is what it calls
    libc.__cxa_atexit(ctypes.cast(libc.abort, ctypes.c_void_p), None, None)
    return Verdict(True, {"note": "the check itself passed"})


@check("selftest_process", "selftest", "reports what its process looks like")
def selftest_process(s: Session) -> Verdict:
    names = ("LLAMA_MIGRATE_SELFTEST", "LD_PRELOAD", "MALLOC_PERTURB_")
    return Verdict(True, {"env": {n: os.environ.get(n) for n in names}, "pid": os.getpid(), "sid": os.getsid(0),
                          "ppid": os.getppid()})  # fmt: skip
