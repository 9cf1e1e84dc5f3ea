"""Check processes forked from a warm interpreter instead of started from nothing.

Each check runs in a process of its own (verify/runner.py: a crash or hang in the library is that check's failure,
never the harness's). Started as `python -m verify.runner`, every one of them spent ~0.25 s importing the harness
(cffi, yaml, the check modules) before touching the library: a third of a typical check. A zygote is one such
interpreter, started once with the harness imported and nothing of the library under test loaded; each check is a
`fork()` of it, which then runs exactly what `python -m verify.runner …` would.

What stays as it was, and why it holds:
- Isolation: the fork is a new process in a session of its own (killed as a group at the timeout); it loads the
  library itself, after the fork — the zygote never loads one.
- Environment: variables read only when a process starts (the dynamic loader's LD_*, glibc's GLIBC_TUNABLES and
  MALLOC_*, the sanitizers', Python's own) cannot be changed in a fork: each distinct set of them gets a zygote of
  its own, started with them (the free-filling preload, verify/perturb.py, is then loaded in that zygote from its
  start, as in a started process). Every other variable is set in the fork before the check runs (llama.cpp reads
  them when the library is loaded or called).
- Exit: the fork leaves through C `exit()` after Python's exit handlers, so the library's static destructors and
  atexit handlers run as they do when a started interpreter ends (a crash there is still a crash of the check).
- The result, stderr and exit status reach the runner as before (stderr through a file).
Sanitized checks are still started as processes (the sanitizer's leak check runs at the end of a real start).
`LLAMA_MIGRATE_NO_ZYGOTE=1` starts every check as a process, as before.

Protocol (one JSON object per line): runner → zygote `{"id", "argv", "env", "stderr"}`; zygote → runner
`{"id", "pid"}` when forked, `{"id", "status"}` when reaped (`os.waitpid`'s status).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DISABLE_ENV = "LLAMA_MIGRATE_NO_ZYGOTE"
# read by the loader, libc, the sanitizers' runtimes or Python when a process starts: fixed for a zygote's forks
STARTUP_PREFIXES = ("LD_", "GLIBC_", "MALLOC_", "PYTHON", "ASAN_", "UBSAN_", "LSAN_", "TSAN_", "MSAN_")


def startup_part(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The variables of `env` that only a process's start reads: forks of one zygote must agree on all of them."""
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(STARTUP_PREFIXES)))


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "") in ("", "0")


class ZygoteGone(RuntimeError):
    """The zygote ended (or could not start): the caller starts the check as a process instead."""


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None
    status: int | None = None
    forked: threading.Event = field(default_factory=threading.Event)


class Zygote:
    """One warm interpreter (started with `env`) and the forks it made for this process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "verify.zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True)  # fmt: skip
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next = 0
        self._alive = True
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours (something the harness's imports printed): the protocol's lines are JSON
            if not isinstance(message, dict) or "id" not in message:
                continue
            with self._lock:
                pending = self._pending.get(message["id"])
            if pending is None:
                continue
            if "pid" in message:
                pending.pid = message["pid"]
                pending.forked.set()
            else:
                pending.status = message["status"]
                pending.done.set()
        with self._lock:  # the zygote ended: whoever still waits learns it
            self._alive = False
            for pending in self._pending.values():
                pending.forked.set()
                pending.done.set()

    def run(self, argv: list[str], env: dict[str, str], stderr: Path, timeout: float) -> int | None:
        """Run `python -m verify.runner ARGV` as a fork with `env`, its stderr into `stderr`; its exit code
        (negative: the signal), or None when it was killed at `timeout`. ZygoteGone if the zygote could not fork."""
        with self._lock:
            if not self._alive:
                raise ZygoteGone("the zygote has ended")
            ident, self._next = self._next, self._next + 1
            pending = self._pending[ident] = _Pending()
            request = json.dumps({"id": ident, "argv": argv, "env": env, "stderr": str(stderr)}) + "\n"
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(request.encode())
                self.proc.stdin.flush()
            except OSError as exc:
                raise ZygoteGone(f"the zygote took no request: {exc}") from exc
        try:
            pending.forked.wait()
            if pending.pid is None:
                raise ZygoteGone("the zygote ended before it forked")
            if not pending.done.wait(timeout):
                with contextlib.suppress(ProcessLookupError):  # its own session: the check and what it started
                    os.killpg(pending.pid, signal.SIGKILL)
                pending.done.wait()
                return None
            if pending.status is None:  # the zygote ended while its fork ran: the fork's fate is unknown
                raise ZygoteGone("the zygote ended while the check ran")
            return os.waitstatus_to_exitcode(pending.status)
        finally:
            with self._lock:
                self._pending.pop(ident, None)

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Zygotes:
    """The zygotes of one verification (one per set of start-only variables), started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_startup: dict[tuple[tuple[str, str], ...], Zygote] = {}

    def run(self, argv: list[str], env: dict[str, str], stderr: Path, timeout: float) -> int | None:
        key = startup_part(env)
        with self._lock:
            zygote = self._by_startup.get(key)
            if zygote is None:
                try:
                    zygote = self._by_startup[key] = Zygote(env)
                except OSError as exc:
                    raise ZygoteGone(f"the zygote could not start: {exc}") from exc
        return zygote.run(argv, env, stderr, timeout)

    def close(self) -> None:
        with self._lock:
            zygotes, self._by_startup = list(self._by_startup.values()), {}
        for zygote in zygotes:
            zygote.close()

    def __enter__(self) -> Zygotes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the zygote ---------------------------------------------------------------------------------------------------


def _send(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _child(request: dict[str, Any], wake: tuple[int, int]) -> None:
    """In the fork: become what `python -m verify.runner ARGV` would be, run it, leave as it would."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err, 2)
        os.close(null)
        os.close(err)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["verify.runner", *request["argv"]]
        from verify.runner import main

        code = main(request["argv"])
    except SystemExit as exc:  # argparse, or a check that exits
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the harness's own exception: printed, exit 1, as a started process
        traceback.print_exc()
        code = 1
    finally:
        _leave(code)


def _leave(code: int) -> None:
    """Python's exit handlers, then C exit(): the loaded libraries' destructors and atexit handlers run."""
    import atexit

    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        ctypes.CDLL(None).exit(code)
        os._exit(code)


def serve() -> None:
    """Read requests on stdin, fork one process each, report pids and exit statuses on stdout."""
    import verify.runner  # noqa: F401 - the harness, imported once, before any fork

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    children: dict[int, int] = {}
    buffer, open_input = b"", True
    while open_input or children:
        ready, _, _ = select.select([0, wake_r] if open_input else [wake_r], [], [])
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 4096):
                        break
                except BlockingIOError:
                    break
        _reap(children)
        if 0 in ready:
            data = os.read(0, 1 << 16)
            if not data:
                open_input = False
                continue
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(request, (wake_r, wake_w))
                children[pid] = request["id"]
                _send({"id": request["id"], "pid": pid})
        _reap(children)


def _reap(children: dict[int, int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in children:
            _send({"id": children.pop(pid), "status": status})


if __name__ == "__main__":
    serve()
