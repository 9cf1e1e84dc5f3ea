"""`migrate gate`: its parser and request (the work: migrate/gate.py, whose docstring is the help); it takes the
arguments of `migrate run` and the two thresholds."""

from __future__ import annotations

import argparse

from migrate import gate
from migrate.cli import add_command
from migrate.cli.run import add_run_arguments, run_request, run_stage
from migrate.gate import DEFAULT_MAX_TPS_REGRESSION, DEFAULT_TIE_MARGIN, GateRequest


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "gate", "`run` for CI: exit code per failure class (10-17) and a one-screen "
                         "summary of why", gate.__doc__, command)  # fmt: skip
    add_run_arguments(parser)
    parser.add_argument("--max-tps-regression", type=_non_negative, metavar="PCT",
                        help=f"tokens/s the new build may lose, percent (default {DEFAULT_MAX_TPS_REGRESSION:g})")
    parser.add_argument("--tie-margin", type=_non_negative,
                        help=f"top-2 logit margin under which a greedy divergence is a near-tie "
                             f"(default {DEFAULT_TIE_MARGIN})")  # fmt: skip


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # NaN too: it compares false with every threshold
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def gate_request(args: argparse.Namespace) -> GateRequest:
    """The parsed flags of `migrate gate` (the run's and the thresholds), typed; an unknown check is a UsageError."""
    return GateRequest(run_request(args), args.tie_margin, args.max_tps_regression)


def command(args: argparse.Namespace) -> int:
    return run_stage(args, gate_request, gate.gate)
