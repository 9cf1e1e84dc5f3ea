"""The exit codes of the migrate commands, one enum per command family, each code defined once.

The codes every command shares (2 bad input, 70 internal error, 130 interrupted) are `ExitCode`, and `migrate
verify`'s are `VerifyExit`, both in verify/outcomes.py (verify/ imports nothing from migrate/). The exit-code table
of the documentation is compared with these enums by tests/test_hardening_inputs.py."""

from __future__ import annotations

from enum import IntEnum

from verify.outcomes import ExitCode, VerifyExit

__all__ = ["ApiDiffExit", "BuildExit", "ExitCode", "GateExit", "ModelExit", "MutateExit", "PlanExit", "RulesExit",
           "RunExit", "VerifyExit"]  # fmt: skip


class PlanExit(IntEnum):
    """`migrate plan` and `migrate apply`."""

    OK = 0
    MANUAL = 1  # done but manual actions remain
    REFUSED = 3  # apply refused, or failed and rolled back: nothing was written
    INCOMPLETE = 4  # done but the plan is incomplete (files read by name only, code newer than --from)
    WRITTEN_NO_OUTPUT = 5  # the rewrite was written, but --json/--report could not be written afterwards


class RunExit(IntEnum):
    """`migrate run`."""

    OK = 0
    NEEDS_HUMAN = 1  # the verdict lists why


class GateExit(IntEnum):
    """`migrate gate`: one code per failure class (migrate/gate.py says what each means); the lowest found wins."""

    OK = 0
    MANUAL = 10
    COMPILE = 11
    CHECK = 12
    OUTPUT = 13
    SPEED = 14
    UNVERIFIED = 15
    PREDICTED = 16
    INCONCLUSIVE = 17
    FIXED = 18


class BuildExit(IntEnum):
    """`migrate sources` and `migrate build`."""

    OK = 0
    FAILED = 1  # the build failed


class ApiDiffExit(IntEnum):
    """`migrate api-diff`."""

    OK = 0
    MANUAL = 1  # the consumer has uses no rule covers


class ModelExit(IntEnum):
    """`migrate model`."""

    OK = 0


class RulesExit(IntEnum):
    """`migrate rules`."""

    OK = 0


class MutateExit(IntEnum):
    """`migrate mutate`."""

    OK = 0
    BELOW_MIN_SCORE = 1  # the score is below --min-score
