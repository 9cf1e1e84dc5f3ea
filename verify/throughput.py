"""Old vs new tokens/s with a confidence statement, and instruction counts per call where the CPU can be counted.

Both builds stay resident: one worker process per build (the crash isolation of the checklist: a crash or a hang
fails that build's `throughput`, not the run) binds the library through the generic driver, loads the model and
creates one context once, warms up, then answers "call generate" / "call generate_parallel" one at a time. The
parent alternates the two workers call by call (old then new, new then old: the order flips every pair, so a
machine that speeds up or slows down over the run hits both builds alike), in blocks each from freshly started
workers (a process's memory layout can bias one build for as long as it lives), and keeps the paired ratio

    new tokens/s / old tokens/s   (per pair, same call, back to back)

The statistic is the median of the paired ratios with a two-level percentile-bootstrap 95 % confidence interval
(blocks, then pairs within them; a fixed seed: the same timings give the same interval). A call's time is its wall
time less the time its thread waited for a CPU (schedstat): other processes' share of a busy runner is not the
build's. At least `pairs` (30) pairs in `blocks` (3) blocks; while a call's interval is wider than
±`target_halfwidth` (5 %) a block of `step` (15) more is added, up to `max_pairs` (90). The verdict is the
caller's (migrate/gate.py): a regression only when the whole interval lies below 1 - threshold, inconclusive when
it straddles that floor.

Instruction counts (noise-free, but not time; reported beside the timing, never gating: docs/ci-gate.md): the
kernel's hardware counter around every timed call (perf_event_open) where it is exposed; else, when asked
(LLAMA_MIGRATE_INSTRUCTIONS=callgrind), valgrind's callgrind in a third worker per build, instrumentation switched
on only around the consumer's call (a tiny helper built from valgrind's callgrind.h; the driver's marshalling,
the same for both builds, is inside the count).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from verify.checks import ERROR, FAILED, PASSED, SKIPPED, THROUGHPUT_TOKENS, CheckResult, _count_generated
from verify.prompts import PROMPT_A, SHARED_PREFIX
from verify.session import Options, Prepared, Target, prepare

CALLS = ("generate", "generate_parallel")
CHECK = "throughput"
CONFIDENCE = 0.95
BOOTSTRAP = 2000
# instruction counts: "auto" (default) counts with perf_event_open where the kernel offers it (free: the timed calls
# themselves); "callgrind" also runs valgrind where it cannot (a third worker per build: a minute or two); "off"
INSTRUCTIONS_ENV = "LLAMA_MIGRATE_INSTRUCTIONS"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    pairs: int = 30  # paired calls per call kind, at least
    max_pairs: int = 90
    step: int = 15  # pairs added at a time while an interval is wider than the target
    # the first `pairs` come in this many blocks, each from freshly started workers: a process's memory layout can
    # make one build consistently faster or slower for as long as the process lives (seen: a whole run of
    # generate_parallel 20 % off), which pairs inside one process cannot show; the interval resamples blocks
    blocks: int = 3
    target_halfwidth: float = 0.05  # stop adding pairs once every interval is within +-5 % of its median
    seed: int = 42
    instructions: bool = True  # count instructions per call where perf can (CPU runs only)
    callgrind: bool = False  # where perf cannot, count under valgrind's callgrind (slow: opt-in)
    instruction_calls: int = 1  # calls counted per kind (deterministic: more calls show the same count)
    # sequential decision (the gate's): with a `floor` (1 - allowed tokens/s loss), pairs are added while a call's
    # interval straddles it, up to `decide_max_pairs` pairs or `decide_seconds` of measuring (or `decide_wall_seconds`
    # of wall clock), whichever comes first.
    # Every look at the data is a chance to stop on a fluke, so each look's interval is taken at confidence
    # 1 - `error_rate` / `looks` (Bonferroni over the planned looks): the chance that any look of a run excludes the
    # true ratio, so that a regression or a pass is declared wrongly, is at most `error_rate`
    floor: float | None = None
    decide_max_pairs: int = 240
    # the budget counts measuring: the timed calls' own seconds (each less the time its thread waited for a CPU),
    # both builds. Counted in wall time, a loaded host (load 18 on 2 cores: run 7 of the unchanged gate series in
    # docs/performance.md) spent it on the first 30 pairs' queueing and worker start-ups, and a straddling interval
    # was left at 17 without one more pair. The planned looks, hence the error rate, are the same either way: the
    # Bonferroni bound holds for any stopping rule within them. A wall-clock cap still bounds a CI job.
    decide_seconds: float = 180.0
    decide_wall_seconds: float = 900.0
    error_rate: float = 1 - CONFIDENCE

    @classmethod
    def from_env(cls, floor: float | None = None) -> Settings:
        value = os.environ.get(INSTRUCTIONS_ENV, "auto").lower()
        return cls(instructions=value not in ("0", "off", "no", "false"), callgrind=value == "callgrind", floor=floor)

    @property
    def looks(self) -> int:
        """How many times the intervals may be looked at: after the first blocks, then after every added block."""
        limit = self.decide_max_pairs if self.floor is not None else self.max_pairs
        return 1 + max(0, -(-(limit - self.pairs) // self.step))

    @property
    def confidence(self) -> float:
        """Each look's confidence: CONFIDENCE with one look, Bonferroni-adjusted over the looks of a decision."""
        return 1 - self.error_rate / self.looks if self.floor is not None else CONFIDENCE

    def straddles(self, low: float, high: float) -> bool:
        return self.floor is not None and low < self.floor <= high


# --- statistics ------------------------------------------------------------------------------------------------


def median_ci(values: list[float], seed: int = 42, resamples: int = BOOTSTRAP, confidence: float = CONFIDENCE,
              blocks: list[int] | None = None) -> tuple[float, float, float]:  # fmt: skip
    """The median and its percentile-bootstrap confidence interval; with `blocks` (a block id per value), a
    two-level bootstrap: blocks drawn with replacement, then values within each drawn block."""
    if not values:
        raise ValueError("no values")
    rng = random.Random(seed)
    n = len(values)
    resamples = max(resamples, int(20 / (1 - confidence)))  # >= 10 resamples in each tail of a narrow interval
    groups: list[list[float]] = []
    if blocks is not None and len(set(blocks)) > 1:
        by_block: dict[int, list[float]] = {}
        for value, block in zip(values, blocks, strict=True):
            by_block.setdefault(block, []).append(value)
        groups = list(by_block.values())

    def resample() -> list[float]:
        if not groups:
            return rng.choices(values, k=n)
        drawn: list[float] = []
        for group in rng.choices(groups, k=len(groups)):
            drawn += rng.choices(group, k=len(group))
        return drawn

    medians = sorted(statistics.median(resample()) for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = medians[int(tail * resamples)]
    high = medians[min(resamples - 1, int((1 - tail) * resamples))]
    return statistics.median(values), low, high


def paired_ratios(old_seconds: list[float], new_seconds: list[float], old_tokens: int, new_tokens: int) -> list[float]:
    """new tokens/s over old tokens/s, pair by pair."""
    return [(new_tokens / n) / (old_tokens / o) for o, n in zip(old_seconds, new_seconds, strict=True)]


def summarise(old_seconds: list[float], new_seconds: list[float], old_tokens: int, new_tokens: int,
              seed: int = 42, blocks: list[int] | None = None,
              confidence: float = CONFIDENCE) -> dict[str, Any]:  # fmt: skip
    """One call's row of the comparison: per-build median tokens/s and the paired statistic (its interval at
    `confidence`: 95 %, or higher for a sequential decision, Settings.confidence)."""
    ratios = paired_ratios(old_seconds, new_seconds, old_tokens, new_tokens)
    median, low, high = median_ci(ratios, seed, confidence=confidence, blocks=blocks)

    def side(seconds: list[float], tokens: int) -> dict[str, Any]:
        mid = statistics.median(seconds)
        return {"tokens": tokens, "calls": len(seconds), "median_seconds": round(mid, 5),
                "tokens_per_s": round(tokens / mid, 1), "min_seconds": round(min(seconds), 5),
                "max_seconds": round(max(seconds), 5)}  # fmt: skip

    row = {"old": side(old_seconds, old_tokens), "new": side(new_seconds, new_tokens),
           "new_over_old": round(median, 3), "ci95": [round(low, 3), round(high, 3)], "pairs": len(ratios),
           "confidence": round(confidence, 5),
           "method": "median of paired new/old ratios, alternating calls, percentile bootstrap"}  # fmt: skip
    if blocks is not None and len(set(blocks)) > 1:
        by_block: dict[int, list[float]] = {}
        for value, block in zip(ratios, blocks, strict=True):
            by_block.setdefault(block, []).append(value)
        row["blocks"] = [round(statistics.median(v), 3) for v in by_block.values()]
        row["method"] += " over blocks of fresh worker processes (two-level)"
    return row


# --- the worker (a child process per build) --------------------------------------------------------------------


def timed_calls(session: Any, count_tokens: bool = True) -> tuple[dict[str, Callable[[], Any]], dict[str, int]]:
    """What is timed on one build, through the generic driver: the `throughput` check's calls (48 greedy tokens of
    PROMPT_A; the shared-prefix prompts in parallel on a 4-sequence context), warmed up once; and the tokens each
    call generates (greedy: the same every call)."""
    s = session
    sampling = s.options.sampling(THROUGHPUT_TOKENS)
    ctx = s.context(512, 4)
    prompts = list(SHARED_PREFIX.prompts)
    warm = s.shim.generate(ctx, PROMPT_A, s.options.sampling(2))  # the first decode allocates graphs
    if not warm.ok:
        raise CallFailed(f"generate (warm-up) failed: {warm.message}")
    calls: dict[str, Callable[[], Any]] = {
        "generate": lambda: s.shim.generate(ctx, PROMPT_A, sampling),
        "generate_parallel": lambda: s.shim.generate_parallel(ctx, prompts, sampling),
    }
    single, parallel = calls["generate"](), calls["generate_parallel"]()
    for name, call in (("generate", single), ("generate_parallel", parallel)):
        if not call.ok:
            raise CallFailed(f"{name} failed: {call.message}")
    if not count_tokens:
        return calls, {}
    tokens = {
        "generate": sum(_count_generated(s, [PROMPT_A], [single.value], THROUGHPUT_TOKENS)),
        "generate_parallel": sum(_count_generated(s, prompts, parallel.value or [], THROUGHPUT_TOKENS)),
    }
    return calls, tokens


class CallFailed(Exception):
    """The library reported a failure on a timed call: the build's throughput check fails."""


class PerfCounter:
    """User-space instructions of the calling thread, from the kernel's hardware counter (perf_event_open, what
    `perf stat -e instructions:u` reads); the library computes on this thread (one thread per context)."""

    SYSCALL = {"x86_64": 298, "aarch64": 241}
    ENABLE, DISABLE, RESET = 0x2400, 0x2401, 0x2403

    def __init__(self, fd: int, libc: Any) -> None:
        self.fd, self.libc = fd, libc

    @classmethod
    def open(cls) -> tuple[PerfCounter | None, str]:
        import ctypes
        import platform
        import struct

        number = cls.SYSCALL.get(platform.machine())
        if sys.platform != "linux" or number is None:
            return None, f"perf_event_open: not on {sys.platform}/{platform.machine()}"
        libc = ctypes.CDLL(None, use_errno=True)
        attr = ctypes.create_string_buffer(64)
        # type HARDWARE, size 64 (VER0), config INSTRUCTIONS; flags: disabled | exclude_kernel | exclude_hv
        struct.pack_into("=IIQQQQQIIQ", attr, 0, 0, 64, 1, 0, 0, 0, 1 | 32 | 64, 0, 0, 0)
        fd = libc.syscall(number, attr, 0, -1, -1, 0)
        if fd < 0:
            errno = ctypes.get_errno()
            paranoid = Path("/proc/sys/kernel/perf_event_paranoid")
            level = paranoid.read_text().strip() if paranoid.is_file() else "?"
            return None, (f"perf_event_open(instructions): {os.strerror(errno)} (a VM without a virtual PMU, or "
                          f"kernel.perf_event_paranoid {level})")  # fmt: skip
        return cls(fd, libc), ""

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, float, int]:
        """fn's value, its wall seconds and the instructions it executed."""
        self.libc.ioctl(self.fd, self.RESET, 0)
        self.libc.ioctl(self.fd, self.ENABLE, 0)
        started = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - started
        self.libc.ioctl(self.fd, self.DISABLE, 0)
        return value, seconds, int.from_bytes(os.read(self.fd, 8), sys.byteorder)


SCHEDSTAT = Path("/proc/thread-self/schedstat")


def run_queue_wait() -> float | None:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat), or None where unknown."""
    try:
        return int(SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _bound_functions(session: Any) -> dict[str, str]:
    ops = getattr(session.binding, "ops", {})
    return {name: ops[name].function.name for name in CALLS if name in ops and session.shim._adapted(name) is None}


def worker_main(job: Path, reply_fd: int) -> int:
    """Serve timed calls for one build: one JSON command per stdin line, one JSON reply per line on `reply_fd`."""
    from verify import gpu
    from verify.runner import read_job
    from verify.session import Session, SetupError, Skip

    out = os.fdopen(reply_fd, "w", buffering=1)

    def reply(payload: dict[str, Any]) -> None:
        out.write(json.dumps(payload) + "\n")
        out.flush()

    target, options, prepared = read_job(job)
    session = None
    counter: PerfCounter | None = None
    calls: dict[str, Callable[[], Any]] = {}
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "setup":
            try:
                reason = gpu.missing_gpu(target.library, options.n_gpu_layers)
                if reason:
                    raise Skip(reason)
                session = Session(target, options, prepared)
                calls, tokens = timed_calls(session, count_tokens=command.get("count", True))
                counter, why_not = PerfCounter.open() if options.n_gpu_layers == 0 else (None, "layers offloaded")
                reply({"ok": True, "tokens": tokens, "functions": _bound_functions(session), "perf": why_not})
            except Skip as exc:
                reply({"ok": False, "status": SKIPPED, "message": f"skipped: {exc}"})
            except (SetupError, CallFailed) as exc:
                reply({"ok": False, "status": FAILED, "message": f"setup failed: {exc}"})
            except Exception as exc:  # noqa: BLE001 - the harness could not drive the library: an error
                reply({"ok": False, "status": ERROR, "message": f"harness error: {type(exc).__name__}: {exc}",
                       "exception": traceback.format_exc(limit=4)})  # fmt: skip
        elif op == "call":
            fn = calls[command["call"]]
            cpu = time.process_time()
            waited = run_queue_wait()  # read right before and after the timed call: the same window
            if counter is not None:
                result, seconds, instructions = counter.measure(fn)
            else:
                started = time.perf_counter()
                result = fn()
                seconds, instructions = time.perf_counter() - started, None
            after = run_queue_wait()
            reply({"ok": bool(result.ok), "seconds": seconds, "cpu_seconds": time.process_time() - cpu,
                   "wait_seconds": None if waited is None or after is None else after - waited,
                   "instructions": instructions, "message": result.message})  # fmt: skip
        elif op == "close":
            if session is not None:
                session.close()
            reply({"ok": True})
            return 0
    return 0


class WorkerDied(Exception):
    def __init__(self, message: str, evidence: dict[str, Any]) -> None:
        super().__init__(message)
        self.evidence = evidence


class Worker:
    """The parent's handle on one build's worker process."""

    started = 0  # workers started by this process: each one's files get their own names

    def __init__(self, target: Target, options: Options, workdir: Path, prepared: Prepared | None = None,
                 prefix: list[str] | None = None, env: dict[str, str] | None = None) -> None:  # fmt: skip
        from verify.runner import child_env, write_job

        self.label = target.label
        self.timeout = options.timeout
        Worker.started += 1
        name = f"{Worker.started}-{''.join(c if c.isalnum() else '_' for c in target.label)}"
        job = workdir / f"{name}-throughput-job.json"
        write_job(job, target, options, prepared or prepare(target))
        read_end, write_end = os.pipe()
        self.stderr_path = workdir / f"{name}-throughput.stderr"
        self._stderr: IO[bytes] = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        cmd = [*(prefix or []), sys.executable, "-m", "verify.throughput", "--worker", str(job),
               "--reply-fd", str(write_end)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                     env=child_env(env), pass_fds=(write_end,), start_new_session=True,
                                     text=True)  # fmt: skip
        os.close(write_end)
        self.replies = os.fdopen(read_end, "r")

    def send(self, payload: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(payload) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the reply read says how it died

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        import select

        ready, _, _ = select.select([self.replies], [], [], self.timeout if timeout is None else timeout)
        if not ready:
            self.kill()
            raise WorkerDied(f"hang: no reply after {self.timeout:.0f} s (killed)", self._evidence())
        line = self.replies.readline()
        if not line:
            code = self.proc.wait()
            from verify.runner import describe_exit

            raise WorkerDied(f"crashed: {describe_exit(code)}", self._evidence() | {"exit": describe_exit(code)})
        return json.loads(line)

    def ask(self, payload: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        self.send(payload)
        return self.receive(timeout)

    def _evidence(self) -> dict[str, Any]:
        from verify.runner import tail

        self._stderr.flush()
        return {"stderr_tail": tail(self.stderr_path.read_text(errors="replace"))}

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask({"op": "close"}, timeout=self.timeout)
                self.proc.wait(timeout=self.timeout)
            except (WorkerDied, subprocess.TimeoutExpired):
                self.kill()
        self.replies.close()
        self._stderr.close()


# --- the comparison --------------------------------------------------------------------------------------------


@dataclass
class Side:
    """One build's part of the comparison."""

    label: str
    status: str = PASSED
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CALLS})
    cpu_seconds: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CALLS})
    wait_seconds: dict[str, list[float | None]] = field(default_factory=lambda: {c: [] for c in CALLS})
    block: dict[str, list[int]] = field(default_factory=lambda: {c: [] for c in CALLS})  # worker block per call
    instructions: dict[str, list[int]] = field(default_factory=lambda: {c: [] for c in CALLS})  # perf, per call
    perf: str = ""  # why the in-process counter is not available ("" when it is)

    def fail(self, status: str, message: str, evidence: dict[str, Any] | None = None) -> None:
        self.status, self.message = status, message
        self.evidence |= evidence or {}

    @property
    def ok(self) -> bool:
        return self.status == PASSED

    def timed(self, call: str) -> list[float]:
        """The seconds the comparison uses: each call's wall time less the time its thread waited for a CPU
        (what other processes took; sleeps, locks and I/O stay in), or plain wall time where that is unknown."""
        waits = self.wait_seconds[call]
        if len(waits) != len(self.seconds[call]) or any(w is None for w in waits):
            return list(self.seconds[call])
        return [max(s - w, 1e-6) for s, w in zip(self.seconds[call], waits, strict=True)]  # type: ignore[operator]

    def contention_known(self) -> bool:
        return all(w is not None for call in CALLS for w in self.wait_seconds[call])


@dataclass
class Comparison:
    """The paired comparison of both builds: one row per call, and each build's `throughput` check result."""

    rows: dict[str, dict[str, Any]]
    old: CheckResult
    new: CheckResult
    seconds: float = 0.0
    instructions: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "old": self.old.to_json(), "new": self.new.to_json(), "seconds": self.seconds,
                "instructions": self.instructions}  # fmt: skip


class PairFailed(Exception):
    def __init__(self, key: str, message: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.key, self.evidence = key, evidence or {}


def _one_pair(order: tuple[str, str], workers: dict[str, Worker], sides: dict[str, Side], call: str,
              block: int = 0) -> None:  # fmt: skip
    for key in order:
        side = sides[key]
        try:
            reply = workers[key].ask({"op": "call", "call": call})
        except WorkerDied as exc:
            raise PairFailed(key, f"{exc} during {call}", exc.evidence) from exc
        if not reply["ok"]:
            raise PairFailed(key, f"{call} failed: {reply['message']}")
        side.seconds[call].append(reply["seconds"])
        side.cpu_seconds[call].append(reply["cpu_seconds"])
        side.wait_seconds[call].append(reply.get("wait_seconds"))
        side.block[call].append(block)
        if reply.get("instructions") is not None:
            side.instructions[call].append(reply["instructions"])


def _needs_more(old: Side, new: Side, settings: Settings, done: int, seconds: float) -> list[str]:
    """Calls to time further: without a floor, an interval still wider than the target (up to `max_pairs`); for a
    decision against `settings.floor`, one that straddles the floor (up to `decide_max_pairs` or `decide_seconds`)."""
    more = []
    for call in CALLS:
        ratios = paired_ratios(old.timed(call), new.timed(call), old.tokens[call], new.tokens[call])
        median, low, high = median_ci(ratios, settings.seed, confidence=settings.confidence, blocks=old.block[call])
        # a decision needs no more precision than the floor asks: width alone adds pairs only without one
        wide = (settings.floor is None and max(median - low, high - median) > settings.target_halfwidth * median
                and done < settings.max_pairs)  # fmt: skip
        undecided = (settings.straddles(low, high) and done < settings.decide_max_pairs
                     and seconds < settings.decide_seconds)  # fmt: skip
        if wide or undecided:
            more.append(call)
    return more


def compare(old: Target, new: Target, options: Options, settings: Settings | None = None) -> Comparison:
    """Time both builds call by call; the rows for the gate and each build's `throughput` result."""
    settings = settings or Settings.from_env(options.tps_floor)
    if options.tps_max_pairs and settings.floor is None:  # a report, not a decision: precision bounded by the caller
        settings = replace(settings, max_pairs=max(settings.pairs, options.tps_max_pairs))
    started = time.monotonic()
    sides = {"old": Side(old.label), "new": Side(new.label)}
    with tempfile.TemporaryDirectory(prefix="llama-migrate-throughput-") as tmp:
        _run_pairs({"old": old, "new": new}, options, Path(tmp), sides, settings)
    rows = _rows(sides, settings)
    instructions = _instructions({"old": old, "new": new}, options, settings, sides)
    for call, row in rows.items():
        row["model"] = old.model.name
        if row.get("new_over_old") is not None:
            row["instructions"] = _instruction_row(instructions, call)
    results = {key: _check_result(side, rows, key) for key, side in sides.items()}
    return Comparison(rows, results["old"], results["new"], round(time.monotonic() - started, 3), instructions)


def _instructions(targets: dict[str, Target], options: Options, settings: Settings,
                  sides: dict[str, Side]) -> dict[str, Any]:  # fmt: skip
    """Instructions per call: from the timed calls themselves (perf), else a callgrind pass, else why not."""
    if not (sides["old"].ok and sides["new"].ok):
        return {"skipped": "throughput not measured on both builds"}
    if options.n_gpu_layers:
        return {"skipped": "instruction counts are a CPU figure (layers are offloaded)"}
    if all(sides[k].instructions[c] for k in sides for c in CALLS):
        return {"counter": "perf_event_open (instructions:u of the calling thread, every timed call)",
                **{k: {c: {"instructions": sides[k].instructions[c][:5], "calls": len(sides[k].instructions[c]),
                           "per_call": int(statistics.median(sides[k].instructions[c])),
                           "scope": "the call, driver included"} for c in CALLS} for k in sides}}  # fmt: skip
    perf = sides["new"].perf or sides["old"].perf
    if not settings.instructions:
        return {"skipped": f"off ({INSTRUCTIONS_ENV}=off)"}
    if not settings.callgrind:
        return {"skipped": f"{perf}; {INSTRUCTIONS_ENV}=callgrind counts them under valgrind instead (a minute or two "
                           "per build)"}  # fmt: skip
    return count_instructions(targets, options, settings, sides, perf)


def _start(targets: dict[str, Target], options: Options, workdir: Path, sides: dict[str, Side],
           prepared: dict[str, Prepared], first: bool) -> dict[str, Worker] | None:  # fmt: skip
    """Both workers started and set up (the first time: tokens counted, functions and counter noted); None when
    a side failed (its Side says why)."""
    workers = {key: Worker(target, options, workdir, prepared[key]) for key, target in targets.items()}
    for key in workers:
        workers[key].send({"op": "setup", "count": first})
    for key, worker in workers.items():
        side = sides[key]
        try:
            reply = worker.receive(timeout=max(worker.timeout, 300.0))
        except WorkerDied as exc:
            side.fail(FAILED, f"{exc} while loading", exc.evidence)
            continue
        if not reply["ok"]:
            side.fail(reply["status"], reply["message"], {"exception": reply.get("exception", "")})
        elif first:
            side.tokens, side.functions, side.perf = reply["tokens"], reply.get("functions", {}), reply.get("perf", "")
    if sides["old"].ok and sides["new"].ok:
        return workers
    for worker in workers.values():
        worker.close()
    return None


def _run_pairs(targets: dict[str, Target], options: Options, workdir: Path, sides: dict[str, Side],
               settings: Settings) -> None:  # fmt: skip
    """Pairs in blocks, each block from freshly started workers: `blocks` blocks make the first `pairs` pairs, then
    blocks of `step` pairs while an interval is wider than the target, up to `max_pairs`."""
    first_blocks = max(1, min(settings.blocks, settings.pairs))
    sizes = [settings.pairs // first_blocks + (1 if i < settings.pairs % first_blocks else 0)
             for i in range(first_blocks)]  # fmt: skip
    pending, done, block = list(CALLS), 0, 0
    prepared = {key: prepare(target) for key, target in targets.items()}
    started = time.monotonic()
    limit = max(settings.max_pairs, settings.decide_max_pairs if settings.floor is not None else 0)
    while pending:
        size = sizes[block] if block < len(sizes) else min(settings.step, limit - done)
        workers = _start(targets, options, workdir, sides, prepared, first=block == 0)
        if workers is None:
            return
        try:
            for index in range(done, done + size):
                order = ("old", "new") if index % 2 == 0 else ("new", "old")
                for call in pending:
                    try:
                        _one_pair(order, workers, sides, call, block)
                    except PairFailed as exc:
                        sides[exc.key].fail(FAILED, str(exc), exc.evidence)
                        return
        finally:
            for worker in workers.values():
                worker.close()
        done, block = done + size, block + 1
        if block < len(sizes):
            continue
        if done >= limit or time.monotonic() - started >= settings.decide_wall_seconds:
            break
        pending = _needs_more(sides["old"], sides["new"], settings, done, measured_seconds(sides))


def measured_seconds(sides: dict[str, Side]) -> float:
    """The time spent measuring so far: every timed call's own seconds (less its waits for a CPU), both builds."""
    return sum(sum(side.timed(call)) for side in sides.values() for call in CALLS)


def _rows(sides: dict[str, Side], settings: Settings) -> dict[str, dict[str, Any]]:
    old, new = sides["old"], sides["new"]
    rows: dict[str, dict[str, Any]] = {}
    for call in CALLS:
        n = min(len(old.seconds[call]), len(new.seconds[call]))
        if not (old.ok and new.ok) or n == 0:
            why = old.message if not old.ok else new.message if not new.ok else "no pair timed"
            rows[call] = {"old": None, "new": None, "new_over_old": None, "ci95": None, "pairs": 0, "note": why}
            continue
        rows[call] = summarise(old.timed(call)[:n], new.timed(call)[:n], old.tokens[call], new.tokens[call],
                               settings.seed, old.block[call][:n], settings.confidence)  # fmt: skip
        if settings.floor is not None:
            rows[call]["decision"] = {"floor": settings.floor, "error_rate": settings.error_rate,
                                      "looks": settings.looks, "max_pairs": settings.decide_max_pairs,
                                      "budget_s": settings.decide_seconds,
                                      "budget_wall_s": settings.decide_wall_seconds}  # fmt: skip
        excluded = old.contention_known() and new.contention_known()
        rows[call]["seconds"] = ("wall clock less the time the calling thread waited for a CPU (Linux schedstat)"
                                 if excluded else "wall clock")  # fmt: skip
        for label, series in (("wall", "seconds"), ("cpu", "cpu_seconds")):
            other = summarise(getattr(old, series)[call][:n], getattr(new, series)[call][:n], old.tokens[call],
                              new.tokens[call], settings.seed, old.block[call][:n])  # fmt: skip
            rows[call][label] = {"new_over_old": other["new_over_old"], "ci95": other["ci95"],
                                 "tokens_per_s": [other["old"]["tokens_per_s"], other["new"]["tokens_per_s"]]}
        rows[call]["cpu_over_wall"] = {k: round(sum(s.cpu_seconds[call]) / max(1e-9, sum(s.seconds[call])), 3)
                                       for k, s in sides.items()}  # fmt: skip
    return rows


def _check_result(side: Side, rows: dict[str, dict[str, Any]], key: str) -> CheckResult:
    """The build's `throughput` check in a differential run: its own figures from the paired run."""
    if not side.ok:
        return CheckResult(CHECK, side.status, side.evidence, side.message, build=side.label)
    evidence: dict[str, Any] = {call: rows[call][key] for call in CALLS if rows[call].get(key)}
    evidence["method"] = "resident worker, calls alternated with the other build (verify/throughput.py)"
    parts = [f"{call} {rows[call][key]['tokens_per_s']} tok/s" for call in CALLS if rows[call].get(key)]
    return CheckResult(CHECK, PASSED, evidence, "", build=side.label, summary=", ".join(parts) + " (median)")


# --- instruction counts ----------------------------------------------------------------------------------------

HELPER_C = r"""
#include <valgrind/callgrind.h>
void llama_migrate_cg_begin(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void llama_migrate_cg_end(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS; }
"""


def callgrind_available() -> str:
    """Empty when callgrind can count here, else why not."""
    if not shutil.which("valgrind"):
        return "valgrind not installed (apt-get install valgrind)"
    if not Path("/usr/include/valgrind/callgrind.h").is_file():
        return "valgrind's callgrind.h not found (apt-get install valgrind)"
    if not shutil.which("gcc"):
        return "gcc not found (the callgrind helper is compiled at run time)"
    return ""


AVX512_SKIP = ("valgrind cannot execute AVX-512 instructions, and llama.cpp's default build (GGML_NATIVE) uses "
               "them on this CPU; build with --cmake-arg=-DGGML_NATIVE=OFF to count instructions")


def _native_avx512(library: Path) -> bool:
    """The library was built by `migrate build` with llama.cpp's native CPU flags on an AVX-512 machine."""
    from verify.manifest import read_manifest

    manifest = read_manifest(library)
    if manifest is None:
        return False  # built elsewhere: try, and tell a SIGILL apart afterwards
    args = " ".join(manifest.options.get("cmake_args", []))
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return "GGML_NATIVE=OFF" not in args and " avx512f" in flags


def _helper(workdir: Path) -> Path:
    source, library = workdir / "cg_helper.c", workdir / "libcg_helper.so"
    source.write_text(HELPER_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True,
                   capture_output=True)  # fmt: skip
    return library


def count_main(job: Path, out: Path, helper: Path, calls: int) -> int:
    """Child under callgrind: warm up (not counted), then count `calls` calls of each kind, one dump each."""
    import ctypes

    from verify.runner import read_job
    from verify.session import Session

    target, options, prepared = read_job(job)
    session = Session(target, options, prepared)
    fns, tokens = timed_calls(session, count_tokens=False)  # libllama's own decode, under valgrind: minutes
    lib = ctypes.CDLL(str(helper))
    ok = {}
    for call in CALLS:
        for _ in range(calls):
            lib.llama_migrate_cg_begin()
            result = fns[call]()
            lib.llama_migrate_cg_end()
            ok[call] = bool(result.ok)
    session.close()
    out.write_text(json.dumps({"tokens": tokens, "ok": ok}))
    return 0


def _callgrind_totals(folder: Path) -> list[int]:
    """Instructions (Ir) of each dump, in dump order."""
    dumps = sorted(folder.glob("cg.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]) if
                   p.name.rsplit(".", 1)[1].isdigit() else 0)  # fmt: skip
    totals = []
    for dump in dumps:
        if not dump.name.rsplit(".", 1)[1].isdigit():
            continue  # the final dump at exit (no number): outside any counted call
        lines = dump.read_text(errors="replace").splitlines()
        found = [int(x.split()[1]) for x in lines if x.startswith("totals:")]
        found = found or [int(x.split()[1]) for x in lines if x.startswith("summary:")]
        if found:
            totals.append(found[0])
    return totals


def count_instructions(targets: dict[str, Target], options: Options, settings: Settings,
                       sides: dict[str, Side] | None = None, perf: str = "") -> dict[str, Any]:  # fmt: skip
    """Instructions per call of each kind on each build under callgrind (both builds at the same time: counts do
    not depend on the load); {"skipped": reason} where nothing can count them."""
    from verify.runner import child_env, write_job

    missing = callgrind_available() or (AVX512_SKIP if any(_native_avx512(t.library) for t in targets.values())
                                        else "")  # fmt: skip
    if missing:
        return {"skipped": f"{perf + '; ' if perf else ''}{missing}"}
    started = time.monotonic()
    found: dict[str, Any] = {"counter": "callgrind (valgrind --tool=callgrind, Ir, instrumented around the call)"}
    with tempfile.TemporaryDirectory(prefix="llama-migrate-instructions-") as tmp:
        work = Path(tmp)
        try:
            helper = _helper(work)
        except subprocess.CalledProcessError as exc:
            return {"skipped": f"could not build the callgrind helper: {exc.stderr.decode(errors='replace')[-300:]}"}
        procs = {}
        for key, target in targets.items():
            folder = work / key
            folder.mkdir()
            job = folder / "job.json"
            write_job(job, target, options, prepare(target))
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={folder}/cg.out",
                   sys.executable, "-m", "verify.throughput", "--count", str(job), "--out",
                   str(folder / "result.json"), "--helper", str(helper), "--calls",
                   str(settings.instruction_calls)]  # fmt: skip
            stderr = open(folder / "stderr", "wb")  # noqa: SIM115 - closed below
            procs[key] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=child_env(),
                                           start_new_session=True), stderr, folder)  # fmt: skip
        for key, (proc, stderr, folder) in procs.items():
            try:
                code = proc.wait(timeout=max(600.0, options.timeout * 10))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
            stderr.close()
            result_file = folder / "result.json"
            if code != 0 or not result_file.is_file():
                log = (folder / "stderr").read_text(errors="replace")
                if "Unrecognised instruction" in log or "unhandled instruction" in log:
                    found[key] = {"error": f"an instruction valgrind does not know: {AVX512_SKIP}"}
                else:
                    found[key] = {"error": f"callgrind child exited {code}: {log[-600:]}"}
                continue
            totals = _callgrind_totals(folder)
            per = settings.instruction_calls
            counts = {call: totals[i * per : (i + 1) * per] for i, call in enumerate(CALLS)}
            found[key] = {call: {"instructions": values, "per_call": int(statistics.median(values)) if values else None,
                                 "scope": "the call through the driver (its Python marshalling included: the same "
                                          "for both builds)"} for call, values in counts.items()}  # fmt: skip
    found["seconds"] = round(time.monotonic() - started, 1)
    return found


def _instruction_row(found: dict[str, Any], call: str) -> dict[str, Any]:
    if "skipped" in found:
        return {"skipped": found["skipped"]}
    old, new = found.get("old", {}), found.get("new", {})
    if "error" in old or "error" in new:
        return {"skipped": (old.get("error") or new.get("error") or "")[:300]}
    a, b = old.get(call, {}).get("per_call"), new.get(call, {}).get("per_call")
    return {"old": a, "new": b, "new_over_old": round(b / a, 4) if a and b else None,
            "counter": found.get("counter", "")}  # fmt: skip


# --- command line (the worker processes) -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="throughput worker (child process of verify/throughput.py)")
    parser.add_argument("--worker", type=Path, help="job file: serve timed calls")
    parser.add_argument("--reply-fd", type=int)
    parser.add_argument("--count", type=Path, help="job file: count instructions of a few calls")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--helper", type=Path)
    parser.add_argument("--calls", type=int, default=1)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.reply_fd)
    return count_main(args.count, args.out, args.helper, args.calls)


if __name__ == "__main__":
    sys.exit(main())



# --- report lines (verify/report.py prints these) --------------------------------------------------------------


def _tps(side: dict[str, Any] | None) -> str:
    return "-" if side is None else f"{side['tokens_per_s']}"


def _interval(row: dict[str, Any] | None) -> str:
    if not row or not row.get("ci95"):
        return "-"
    return f"[{row['ci95'][0]}, {row['ci95'][1]}]"


def _instructions_cell(row: dict[str, Any]) -> str:
    counts = row.get("instructions")
    if not counts:
        return "-"
    if "skipped" in counts:
        return "not counted"
    return f"{counts['old']:,} → {counts['new']:,} (x{counts['new_over_old']})"


def markdown_lines(rows: dict[str, dict[str, Any]], h: str = "#") -> list[str]:
    """The report's throughput section: the paired statistic with its interval, wall clock beside it."""
    lines = ["", f"{h}# Throughput (both builds resident, calls alternated; median of paired new/old ratios)", "",
             "| call | old tokens/s | new tokens/s | new / old | 95% CI | pairs | wall clock new / old | instructions "
             "per call |", "| --- | ---: | ---: | ---: | --- | ---: | --- | --- |"]  # fmt: skip
    for key, row in rows.items():
        wall = row.get("wall") or {}
        wall_text = f"{wall['new_over_old']} {_interval(wall)}" if wall else "-"
        lines.append(f"| `{key}` | {_tps(row.get('old'))} | {_tps(row.get('new'))} | {row.get('new_over_old')} | "
                     f"{_interval(row)} | {row.get('pairs', '-')} | {wall_text} | {_instructions_cell(row)} |")
    model = next((row.get("model") for row in rows.values() if row.get("model")), None)
    decision = next((row.get("decision") for row in rows.values() if row.get("decision")), None)
    if model:
        lines += ["", f"Model: `{model}`."]
    if decision:
        confidence = next(row.get("confidence") for row in rows.values() if row.get("decision"))
        lines += ["", f"Sequential decision against the floor {decision['floor']:g}: pairs were added while an "
                  f"interval straddled it (at most {decision['max_pairs']} pairs or {decision['budget_s']:g} s); each "
                  f"look's interval is at {confidence * 100:.4g}% (the column's \"95% CI\"), Bonferroni over "
                  f"{decision['looks']} looks for an overall error rate of {decision['error_rate'] * 100:g}%."]
    seconds = next((row.get("seconds") for row in rows.values() if row.get("seconds")), None)
    if seconds:
        lines += ["", f"Seconds per call: {seconds}. Instructions: "
                  + next((r["instructions"]["skipped"] for r in rows.values() if "skipped" in (r.get("instructions")
                          or {})), "counted per call (see JSON)")]  # fmt: skip
    return lines


def console_line(key: str, row: dict[str, Any]) -> str:
    if row.get("new_over_old") is None:
        return f"{key}: not measured ({row.get('note', '')})"
    return (f"{key}: old {_tps(row.get('old'))}, new {_tps(row.get('new'))} tokens/s (new/old {row['new_over_old']}, "
            f"95% CI {_interval(row)}, {row.get('pairs')} pairs)")  # fmt: skip
