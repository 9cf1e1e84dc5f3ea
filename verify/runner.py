"""Crash isolation: every check runs in its own child process with a timeout.

An abort (GGML_ASSERT), a segfault or a hang inside the library under test fails that check alone, reported with
the signal and the last lines of stderr, and the run goes on with the next check. The child writes its result to
a file (not stdout, which the library may print to) before it frees the session, so a crash while freeing is
told apart from a crash in the check itself.

Child entry point: `python -m verify.runner --job JOB.json --check NAME --result OUT.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from verify.checks import (
    ERROR,
    FAILED,
    REGISTRY,
    SKIPPED,
    TCACHE_OFF,
    CheckResult,
    checklist,
    run_check,
    with_tunable,
)
from verify.checks.subcases import SUBCASES, SubcaseOutcome, merge, run_subcase, subcase_name
from verify.perturb import with_perturb
from verify.sanitize import SANITIZED_ENV, keep_loaded
from verify.session import Options, Prepared, Session, Target, prepare
from verify.trace import TRACE_ENV
from verify.usertests import is_user_test
from verify.zygote import ZygoteGone, Zygotes
from verify.zygote import enabled as zygote_enabled

# with --trace, the throughput figure would measure the tracer too
UNTRACED_CHECKS = {"throughput": "not measured: the library runs traced (--trace), which costs time per llama.cpp "
                                 "call; measure tokens/s on an untraced build"}  # fmt: skip

# checks that time the library: they run after all the others, one at a time, so that no other check's process
# shares the CPU with them (the paired throughput comparison of verify/throughput.py likewise runs alone)
ALONE_CHECKS = frozenset({"throughput"})

STDERR_TAIL_LINES = 25
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
Progress = Callable[[str, CheckResult], None]


def write_job(path: Path, target: Target, options: Options, prepared: Prepared | None = None) -> None:
    job = {"target": target.to_json(), "options": asdict(options), "prepared": asdict(prepared or Prepared())}
    path.write_text(json.dumps(job))


def read_job(path: Path) -> tuple[Target, Options, Prepared]:
    data = json.loads(path.read_text())
    target = Target.from_json(data["target"])
    return target, Options(**data["options"]), Prepared(**data.get("prepared", {}))


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | (extra or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    return env


def interpret(name: str, label: str, code: int | None, stderr: str, result_file: Path, seconds: float,
              timeout: float) -> CheckResult:  # fmt: skip
    """Turn what the child left behind into a CheckResult: its own result, or the way it died."""
    written = json.loads(result_file.read_text()) if result_file.is_file() and result_file.stat().st_size else None
    if code is None:  # killed by us at the timeout
        evidence = {"timeout_s": timeout, "stderr_tail": tail(stderr)}
        if written:
            evidence["result_before_hang"] = written
        return CheckResult(name, FAILED, evidence, f"hang: no result after {timeout:.0f} s (killed)",
                           round(seconds, 3), label)  # fmt: skip
    if written is None:
        evidence = {"exit": describe_exit(code), "signal": signal.Signals(-code).name if code < 0 else None,
                    "stderr_tail": tail(stderr)}  # fmt: skip
        return CheckResult(name, FAILED, evidence, f"crashed: {describe_exit(code)}", round(seconds, 3), label)
    result = CheckResult.from_json(written["result"])
    if code != 0 or not written.get("closed"):
        # the check finished, then freeing the session killed the process
        result.status = FAILED
        result.evidence = result.evidence | {"exit_after_check": describe_exit(code), "stderr_tail": tail(stderr)}
        result.message = f"crashed while freeing model/context ({describe_exit(code)}); " + result.message
    result.seconds = round(seconds, 3)
    return result


def result_stem(label: str, name: str) -> str:
    """A file name for one check of one build: a user test's name is a node id (`dir/file.py::test[param]`)."""
    return f"{label}-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass(frozen=True)
class ChildEnd:
    """How a check's child ended: its exit status (None: killed at the timeout), stderr, the result file it was
    to write, the seconds it ran."""

    code: int | None
    stderr: str
    result_file: Path
    seconds: float

    @property
    def reached_verdict(self) -> bool:
        """The child wrote its check's result and was not killed at the timeout."""
        return self.code is not None and self.result_file.is_file() and self.result_file.stat().st_size > 0


def run_in_child(job: Path, name: str, label: str, timeout: float, workdir: Path,
                 env: dict[str, str] | None = None, extra_args: tuple[str, ...] = (),
                 zygotes: Zygotes | None = None) -> CheckResult:  # fmt: skip
    """`extra_args`: more arguments for the child (the pytest plugin's `--parametrised`); `zygotes`: fork the child
    from a warm interpreter (verify/zygote.py)."""
    end = _spawn(job, name, label, timeout, workdir, env, extra_args, zygotes=zygotes)
    return interpret(name, label, end.code, end.stderr, end.result_file, end.seconds, timeout)


def run_subcases(job: Path, name: str, label: str, timeout: float, workdir: Path,
                 env: dict[str, str] | None = None, zygotes: Zygotes | None = None) -> CheckResult:  # fmt: skip
    """A sub-case check (verify/checks/subcases.py): each part in a child of its own, one after the other, so that
    a crash in one part leaves what the others measured; one result of them all."""
    outcomes = []
    for key in SUBCASES[name].keys:
        part = subcase_name(name, key)
        end = _spawn(job, name, label, timeout, workdir, env, ("--subcase", key), part, zygotes)
        result = interpret(part, label, end.code, end.stderr, end.result_file, end.seconds, timeout)
        outcomes.append(SubcaseOutcome(key, result, end.reached_verdict))
    return merge(name, outcomes)


def _spawn(job: Path, name: str, label: str, timeout: float, workdir: Path, env: dict[str, str] | None,
           extra_args: tuple[str, ...], shown: str | None = None,
           zygotes: Zygotes | None = None) -> ChildEnd:  # fmt: skip
    """Run check `name` in a child (`shown`: the name its result file goes by, a part's for a sub-case): a fork of
    a warm interpreter where `zygotes` are given (verify/zygote.py), else a started `python -m verify.runner`."""
    result_file = workdir / f"{result_stem(label, shown or name)}.json"
    result_file.unlink(missing_ok=True)
    args = ["--job", str(job), "--check", name, "--result", str(result_file), *extra_args]
    if zygotes is not None:
        stderr_file = result_file.with_suffix(".stderr")
        started = time.monotonic()
        try:
            code = zygotes.run(args, child_env(env), stderr_file, timeout)
        except ZygoteGone:
            pass  # started as a process below, as without a zygote
        else:
            stderr = stderr_file.read_text(errors="replace") if stderr_file.is_file() else ""
            return ChildEnd(code, stderr, result_file, time.monotonic() - started)
    cmd = [sys.executable, "-m", "verify.runner", *args]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            env=child_env(env), start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the child and anything it started
        _, stderr = proc.communicate()
        code = None
    return ChildEnd(code, stderr or "", result_file, time.monotonic() - started)


def _zygotes() -> contextlib.AbstractContextManager[Zygotes | None]:
    """The zygotes the checks of one run_builds are forked from (none with LLAMA_MIGRATE_NO_ZYGOTE=1)."""
    return Zygotes() if zygote_enabled() else contextlib.nullcontext(None)


def default_jobs() -> int:
    """One check process per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclass(frozen=True)
class CheckTask:
    """One check of one build, to run in its own child (`job`: the build's job file)."""

    target: Target
    name: str
    job: Path


def run_checks(target: Target, options: Options, names: list[str] | None = None,
               progress: Progress | None = None, env: dict[str, str] | None = None) -> list[CheckResult]:  # fmt: skip
    """Every named check (default: the whole checklist) on one build, each in its own child (whose environment
    gets `env` on top of this one's). With `options.trace_dir` (a traced library), each child writes its calls
    to `<trace_dir>/<label>-<check>.trace` and the result carries what the trace showed (verify/contract.py).
    Up to `options.jobs` checks run at once (run_builds)."""
    return run_builds([target], options, names, progress, env)[target.label]


def run_builds(targets: list[Target], options: Options, names: list[str] | None = None,
               progress: Progress | None = None,
               env: dict[str, str] | None = None) -> dict[str, list[CheckResult]]:  # fmt: skip
    """The named checks on every build (labels distinct), each in its own child: up to `options.jobs` children at
    once across all builds (the checks are independent: each loads its own model and contexts), then the checks
    that time the library (ALONE_CHECKS) one at a time on an otherwise quiet machine. Results per build label in
    the order of `names`; `progress` sees them in that order too (builds in the order given; the timing checks
    last), whatever order the children finish in. With `options.jobs` 1, one check after the other in the order
    given."""
    names = list(checklist(options.n_gpu_layers, options.generated) if names is None else names)
    with tempfile.TemporaryDirectory(prefix="llama-migrate-verify-") as tmp, _zygotes() as zygotes:
        workdir = Path(tmp)
        tasks = [CheckTask(t, n, workdir / f"{t.label}-job.json") for t in targets for n in names]
        results: list[CheckResult | None] = [None] * len(tasks)
        if options.jobs <= 1:  # one at a time in the given order, each reported as it ends (a progress that stops
            # the run, as mutate's does at the first kill, runs no more)
            for target in targets:
                write_job(workdir / f"{target.label}-job.json", target, options, prepare(target))
            _run_in_order(tasks, range(len(tasks)), results, options, workdir, env, progress, zygotes)
        else:
            together = [i for i, t in enumerate(tasks) if t.name not in ALONE_CHECKS]
            _run_concurrently(targets, tasks, together, results, options, workdir, env, progress, zygotes)
            alone = [i for i, t in enumerate(tasks) if t.name in ALONE_CHECKS]
            _run_in_order(tasks, alone, results, options, workdir, env, progress, zygotes)
    return {t.label: [r for task, r in zip(tasks, results, strict=True) if task.target is t and r is not None]
            for t in targets}  # fmt: skip


def _run_in_order(tasks: list[CheckTask], indices: Iterable[int], results: list[CheckResult | None],
                  options: Options, workdir: Path, env: dict[str, str] | None,
                  progress: Progress | None, zygotes: Zygotes | None) -> None:  # fmt: skip
    for i in indices:
        results[i] = _run_task(tasks[i], options, workdir, env, zygotes)
        _report(tasks[i], results[i], progress)


def _run_concurrently(targets: list[Target], tasks: list[CheckTask], indices: list[int],
                      results: list[CheckResult | None], options: Options, workdir: Path,
                      env: dict[str, str] | None, progress: Progress | None,
                      zygotes: Zygotes | None) -> None:  # fmt: skip
    """tasks[i] for i in `indices` on `options.jobs` workers (threads, each waiting on its check's child), results
    stored at their index and reported in index order."""
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        # the declarations every child of a build reuses (two gcc runs each), the builds concurrently
        for target, prepared in zip(targets, pool.map(prepare, targets), strict=True):
            write_job(workdir / f"{target.label}-job.json", target, options, prepared)
        futures = [pool.submit(_run_task, tasks[i], options, workdir, env, zygotes) for i in indices]
        try:
            for i, future in zip(indices, futures, strict=True):
                results[i] = future.result()
                _report(tasks[i], results[i], progress)
        except BaseException:
            # a progress callback may stop the run: what is queued is dropped, what runs ends by itself (each
            # child has its timeout)
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _report(task: CheckTask, result: CheckResult, progress: Progress | None) -> None:
    if progress:
        progress(task.name, result)


def _run_task(task: CheckTask, options: Options, workdir: Path, env: dict[str, str] | None,
              zygotes: Zygotes | None = None) -> CheckResult:  # fmt: skip
    if options.trace_dir and task.name in UNTRACED_CHECKS:
        return CheckResult(task.name, SKIPPED, {}, f"skipped: {UNTRACED_CHECKS[task.name]}", build=task.target.label)
    if options.trace_dir:  # a sub-case check's parts share its one child there: a trace is one process's calls
        return _run_traced(task.job, task.name, task.target, options, workdir, env, zygotes)
    if options.sanitize:  # one child per check too: the sanitizer's report is one process's
        from verify.sanitize import run_sanitized

        return run_sanitized(task.job, task.name, task.target, options, workdir, check_env(task.name, env))
    if task.name in SUBCASES:
        return run_subcases(task.job, task.name, task.target.label, options.timeout, workdir, check_env(task.name, env),
                            zygotes)  # fmt: skip
    return run_in_child(task.job, task.name, task.target.label, options.timeout, workdir, check_env(task.name, env),
                        zygotes=zygotes)  # fmt: skip


def check_env(name: str, env: dict[str, str] | None) -> dict[str, str] | None:
    """The environment a check's process gets on top of this one's: what the caller asked, plus what the check
    declares it needs (CheckSpec.environment); and freed memory filled (verify/perturb.py) in every check but the
    timing ones (ALONE_CHECKS: what they time is the library's cost only) and those that ask for the plain allocator
    (MALLOC_PERTURB_=0: the heap-figure checks, see plain_heap), so that a dangling pointer reads garbage."""
    if is_user_test(name):  # the heap fixture's figures are exact only with glibc's thread caches off
        return with_perturb(with_tunable(dict(os.environ) | (env or {}), TCACHE_OFF))
    spec = REGISTRY.get(name)
    if spec is not None and spec.environment is not None:
        env = spec.environment(dict(os.environ) | (env or {}))
    return env if name in ALONE_CHECKS else with_perturb(env)


def _run_traced(job: Path, name: str, target: Target, options: Options, workdir: Path,
                env: dict[str, str] | None, zygotes: Zygotes | None) -> CheckResult:  # fmt: skip
    from verify.contract import annotate, require_contract, trace_file

    trace_dir = Path(options.trace_dir or ".")
    trace_dir.mkdir(parents=True, exist_ok=True)
    path = trace_file(trace_dir, target.label, name)
    path.unlink(missing_ok=True)
    result = run_in_child(job, name, target.label, options.timeout, workdir,
                          (check_env(name, env) or {}) | {TRACE_ENV: str(path)}, zygotes=zygotes)
    annotate(result, path, target.library, require_contract(options.contract) if options.contract else None)
    return result


# --- the child ----------------------------------------------------------------------------------------------------


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(payload, default=str))
    tmp.replace(path)


def child_main(job: Path, name: str, result_file: Path, parametrised: bool = False, subcase: str | None = None) -> int:
    if is_user_test(name):  # the consumer's own pytest test: the plugin binds its fixtures to this build
        from verify.usertests import child_main as user_test_main

        return user_test_main(job, name, result_file, parametrised)
    target, options, prepared = read_job(job)
    if name.startswith("selftest_"):
        import verify.selftest  # noqa: F401 - registers the crash/hang checks the runner's own tests use
    if name not in REGISTRY:
        _write(result_file, {"result": CheckResult(name, ERROR, {}, f"unknown check {name!r}").to_json(),
                             "closed": True})  # fmt: skip
        return 0
    try:
        session = Session(target, options, prepared)
    except Exception as exc:  # noqa: BLE001 - the harness could not bind the library: an error, not a failure
        result = CheckResult(name, ERROR, {"exception": traceback.format_exc(limit=3)}, f"cannot bind: {exc}")
        _write(result_file, {"result": result.to_json(), "closed": True})
        return 0
    try:
        result = run_check(name, session) if subcase is None else run_subcase(name, subcase, session)
    except Exception as exc:  # noqa: BLE001 - an exception in harness code: an error (never a pass, never the
        # consumer's failure; a crash of the library kills the child instead and is a failure)
        result = CheckResult(name, ERROR, {"exception": traceback.format_exc(limit=6)},
                             f"harness error: {type(exc).__name__}: {exc}", build=target.label)  # fmt: skip
    _write(result_file, {"result": result.to_json(), "closed": False})
    session.close()
    _write(result_file, {"result": result.to_json(), "closed": True})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one verification check (child process of the runner)")
    parser.add_argument("--job", required=True, type=Path)
    parser.add_argument("--check", required=True)
    parser.add_argument("--result", required=True, type=Path)
    parser.add_argument("--parametrised", action="store_true",
                        help="a user test parametrised over the builds (plain pytest with the plugin's options)")
    parser.add_argument("--subcase", help="one part of a sub-case check (verify/checks/subcases.py)")
    args = parser.parse_args(argv)
    if os.environ.get(SANITIZED_ENV):  # the runtime is loaded here already; what this process starts (gcc) is plain
        os.environ.pop("LD_PRELOAD", None)
        keep_loaded(args.job)
    return child_main(args.job, args.check, args.result, args.parametrised, args.subcase)


if __name__ == "__main__":
    sys.exit(main())
