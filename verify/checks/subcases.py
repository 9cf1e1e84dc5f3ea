"""Checks measured in parts (sub-cases), each part in a child process of its own.

A check runs in one child (verify/runner.py), so a crash ends it: a check whose inputs include one a consumer
crashes on (an abort when the prompts fill every slot) would lose, with that crash, what it measured on its other
inputs (the same prefix with a slot to spare). A sub-case check names its parts; the runner runs each in its own
child, and `merge` makes one result of them: each part's verdict where it reached one, the way its process ended
(signal, the assert line of its stderr) where it did not, and "could not measure ..." where no part got to what the
check exists to measure. In one process (a traced run, whose trace must be one process's calls; a direct
`run_check`) the parts run one after the other, and a crash ends them all as it ends any check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from verify.checks.framework import (
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    CheckResult,
    Environment,
    Verdict,
    check,
    failures,
    run_fn,
)
from verify.driver import DriverError
from verify.session import Session, Skip

SubcaseFn = Callable[[Session, str], Verdict]

# what a crashed part's stderr says about why, strongest first: llama.cpp's GGML_ASSERT/GGML_ABORT, a C assert, then
# any line naming an abort or an error (the library's log lines come before it, so the first kind found wins)
CRASH_LINES = (re.compile(r"GGML_ASSERT|GGML_ABORT|Assertion .* failed"),
               re.compile(r"assert|abort|fatal|error", re.IGNORECASE))  # fmt: skip


@dataclass(frozen=True)
class Subcases:
    """A check's parts: `fn(session, key)` measures part `key`; `measures` names what the parts measure (the
    verdict's "could not measure <measures>" where none got to it)."""

    keys: tuple[str, ...]
    fn: SubcaseFn
    measures: str


@dataclass(frozen=True)
class SubcaseOutcome:
    """One part's result: its own verdict (`reached_verdict`), or how its process ended (a crash, a hang)."""

    key: str
    result: CheckResult
    reached_verdict: bool


SUBCASES: dict[str, Subcases] = {}
# how a process that ended early is described (verify/runner.py interpret): a crash, a hang, a crash while freeing
PROCESS_END = ("exit", "signal", "stderr_tail", "timeout_s", "exit_after_check")


def subcase_name(name: str, key: str) -> str:
    return f"{name}[{key}]"


def subcase_check(name: str, group: str, title: str, keys: tuple[str, ...], measures: str,
                  environment: Environment | None = None) -> Callable[[SubcaseFn], SubcaseFn]:  # fmt: skip
    """Register `fn(session, key)` as the check `name` made of the parts `keys` (in that order)."""

    def register(fn: SubcaseFn) -> SubcaseFn:
        SUBCASES[name] = Subcases(keys, fn, measures)
        check(name, group, title, environment)(lambda s: in_one_process(name, s))
        return fn

    return register


def run_subcase(name: str, key: str, session: Session) -> CheckResult:
    """Part `key` of the sub-case check `name` in this process (the runner calls this inside the part's child)."""
    parts = SUBCASES[name]
    return run_fn(subcase_name(name, key), lambda s: parts.fn(s, key), session)


def in_one_process(name: str, session: Session) -> Verdict:
    """Every part one after the other in this process, merged: the check's function where parts get no child."""
    outcomes = [SubcaseOutcome(key, run_subcase(name, key, session), True) for key in SUBCASES[name].keys]
    merged = merge(name, outcomes)
    if merged.status == SKIPPED:
        raise Skip(merged.message.removeprefix("skipped: "))
    if merged.status == ERROR:
        raise DriverError(merged.message)
    return Verdict(merged.status == PASSED, merged.evidence, merged.message, merged.summary)


def crash_line(result: CheckResult) -> str:
    """The line of a crashed part's stderr that says why it ended ("" when none does)."""
    lines = str(result.evidence.get("stderr_tail") or "").splitlines()
    for pattern in CRASH_LINES:
        found = [line.strip() for line in lines if pattern.search(line)]
        if found:
            return found[-1]  # the last: the one closest to the end of the process
    return ""


def _problem(outcome: SubcaseOutcome) -> str:
    line = "" if outcome.reached_verdict else crash_line(outcome.result)
    return f"{outcome.key}: {outcome.result.message}" + (f" ({line})" if line else "")


def _not_measured(parts: Subcases, outcomes: list[SubcaseOutcome]) -> str:
    """The "could not measure ..." line with each part's reason, where no part reached its verdict; "" where one did."""
    tried = [o for o in outcomes if o.result.status != SKIPPED]
    if not tried or any(o.reached_verdict and o.result.status in (PASSED, FAILED) for o in tried):
        return ""
    return f"could not measure {parts.measures}: " + "; ".join(_problem(o) for o in tried)


def merge(name: str, outcomes: list[SubcaseOutcome]) -> CheckResult:
    """One result of the parts: failed where a part failed (its verdict or its crash) — each such part named, with
    what the others measured kept beside it; else error where the harness could not drive a part; else skipped where
    a part could not run here; else passed."""
    parts = SUBCASES[name]
    # each part's evidence as it left it, with its own status and message (after it: a part's evidence may have a
    # "message" of its own, such as a call's)
    evidence = {o.key: o.result.evidence | {"part_status": str(o.result.status), "part_message": o.result.message}
                for o in outcomes}  # fmt: skip
    # the first part that ended early, described at the top as a one-process check's crash is: the triage groups the
    # check by it (verify/causes.py), and a known failure recorded before the parts had processes still matches
    ended = next((o for o in outcomes if any(k in o.result.evidence for k in PROCESS_END)), None)
    if ended is not None:
        evidence |= {k: ended.result.evidence[k] for k in PROCESS_END if k in ended.result.evidence}
        evidence["ended_part"] = ended.key
    problems = [_problem(o) for o in outcomes if o.result.status == FAILED]
    not_measured = _not_measured(parts, outcomes)
    if not_measured:
        problems.append(not_measured)
    errors = [_problem(o) for o in outcomes if o.result.status == ERROR]
    skipped = [o for o in outcomes if o.result.status == SKIPPED]
    summary = "; ".join(f"{o.key}: {o.result.summary if o.reached_verdict else o.result.message}"
                        for o in outcomes if o.result.status != SKIPPED)  # fmt: skip
    skip_reasons = list(dict.fromkeys(o.result.message.removeprefix("skipped: ") for o in skipped))
    if problems:
        status, message = FAILED, failures(problems + errors + [f"{o.key}: {o.result.message}" for o in skipped])
    elif errors:
        status, message = ERROR, failures(errors)
    elif skipped:
        # a part that could not run here leaves the check unproven: never passed on the others alone
        which = "" if len(skipped) == len(outcomes) else f" (parts {', '.join(o.key for o in skipped)})"
        status, message = SKIPPED, f"skipped: {'; '.join(skip_reasons)}{which}"
    else:
        status, message = PASSED, ""
    seconds = round(sum(o.result.seconds for o in outcomes), 3)
    build = next((o.result.build for o in outcomes if o.result.build), "")
    return CheckResult(name, status, evidence, message, seconds, build, summary)
