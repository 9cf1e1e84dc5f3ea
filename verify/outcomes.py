"""Every outcome the toolkit reports, defined once: a check's status, a check's classification across two builds,
a greedy comparison's verdict, a CPU/GPU comparison's status, a mutant's status, a known failure's state, and the
exit codes of `migrate verify` and of every command.

The string enums are `StrEnum`s whose values are what the JSON, the JUnit XML and the reports have always said, so
typing them changes no output; code compares members, never the words (tests/test_outcome_literals.py greps
migrate/ and verify/ for the words outside this module). verify/ imports nothing from migrate/, so the exit codes
of the migrate-only commands live in migrate/exit_codes.py, over the ones every command shares (`ExitCode`)."""

from __future__ import annotations

from enum import Enum, IntEnum, StrEnum


class CheckStatus(StrEnum):
    """One check's result on one build."""

    PASSED = "passed"  # ran and held
    FAILED = "failed"  # the consumer misbehaved
    ERROR = "error"  # the harness could not drive it (no binding, an argument it could not build, harness code)
    SKIPPED = "skipped"  # could not run here (the message says why)


# statuses that verified nothing: a skip, or a check the harness could not drive
NOT_VERIFIED = (CheckStatus.SKIPPED, CheckStatus.ERROR)


class Classification(StrEnum):
    """One check across the old and the new build (verify/differential.py `classify`)."""

    BOTH_PASS = "passes on both"
    REGRESSION = "regression"
    FIXED = "fixed"
    BOTH_FAIL = "failing on both"
    # passed on the old build, not verified on the new one (skipped there, or the harness could not drive it): a
    # finding, since the migration removed evidence the old build gave
    LOST = "passed on old, not verified on new"
    # the harness's problem: never a regression nor "failing on both"
    HARNESS_ERROR_ON_BOTH = "harness error on both"
    HARNESS_ERROR_ON_OLD = "harness error on old"
    HARNESS_ERROR_ON_NEW = "harness error on new"
    SKIPPED_ON_BOTH = "skipped on both"
    SKIPPED_ON_OLD = "skipped on old"
    SKIPPED_ON_NEW = "skipped on new"
    NOT_RUN_ON_OLD = "not run on old build"
    NOT_RUN_ON_NEW = "not run on new build"


class GreedyVerdict(StrEnum):
    """One prompt's greedy decode on two sides (two builds, or one build's CPU and GPU)."""

    IDENTICAL = "identical"
    NEAR_TIE = "near-tie"  # they part where a side's top-2 logit margin is under the tie margin
    DIVERGENCE = "divergence"  # they part where both were sure: a real difference
    NOT_COMPARABLE = "not comparable"  # tokenized differently, or a side has no trace


class DeviceStatus(StrEnum):
    """One build's CPU-against-GPU comparison (verify/devices.py)."""

    COMPARED = "compared"
    SKIPPED = "skipped"  # nothing ran on a GPU (the message says why)
    NOT_COMPARED = "not compared"  # the comparison broke: a finding


class MutantStatus(StrEnum):
    """One mutant of the consumer's shim (verify/mutate.py)."""

    KILLED = "killed"
    SURVIVED = "survived"
    NOT_COMPILED = "not_compiled"
    EQUIVALENT = "equivalent"  # the consumer marked it equivalent (with a reason)
    IDENTICAL = "identical"  # compiles to the same object code as the original


class KnownState(Enum):
    """A known failure of the consumer's baseline, judged against the new build (verify/baseline.py)."""

    KNOWN = "known"  # still fails the same way: does not fail the gate
    FIXED = "fixed"  # passes now: remove it from the baseline (the gate says so)
    CHANGED = "fails differently"  # a finding
    REGRESSION = "regression"  # passed on the old build: never baselined away
    NOT_RUN = "not run"  # not run or not verified on the new build


class ExitCode(IntEnum):
    """The codes every command shares (migrate/cli/__init__.py prints the one line for them)."""

    USAGE = 2  # bad input or environment: every command's documented code for it
    INTERNAL = 70  # a bug in the toolkit (BSD's EX_SOFTWARE): never the consumer's failure, never bad input
    INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, what shells report for an interrupted command


class VerifyExit(IntEnum):
    """`migrate verify` (and ExitCode's)."""

    OK = 0
    FAILED = 1
    NOT_VERIFIED = 3  # nothing failed but a check could not be driven by the harness
    PREDICTED = 4  # nothing failed, but --predict found calls that will abort or be rejected at that release
    KNOWN_FIXED = 5  # a known failure passes now: the baseline is out of date
