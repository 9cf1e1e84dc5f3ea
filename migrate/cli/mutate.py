"""`migrate mutate`: its parser and request (the work: migrate/mutation.py, whose docstring is the help)."""

from __future__ import annotations

import argparse
import shlex
import sys

from migrate import mutation
from migrate.cli import add_command
from migrate.cli.arguments import add_tests_argument
from migrate.config import DEFAULT_FROM
from migrate.mutation import DEFAULT_TIMEOUT
from verify import mutate


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "mutate", "mutation score of a consumer's shim under the checklist",
                         mutation.__doc__, command)  # fmt: skip
    parser.add_argument("src", help="consumer source tree")
    parser.add_argument("--from", dest="from_version", default=DEFAULT_FROM, help="llama.cpp release the shim targets")
    parser.add_argument("--max", type=int, help="run a seeded random sample of N mutants (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max sample (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants built and checked at once (default 1)")
    parser.add_argument("--kinds", help=f"comma-separated operators (default all): {', '.join(mutate.KINDS)}")
    parser.add_argument("--only", help="comma-separated mutant ids or globs over them (as --list prints): run only "
                        "those, e.g. the survivors of an earlier run after a check was improved")
    parser.add_argument("--all-functions", action="store_true",
                        help="mutate every function of the shim, not only those the bound operations reach")
    parser.add_argument("--checks", help="comma-separated checks to run (default: the whole checklist)")
    add_tests_argument(parser)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds per check on a mutant before it is a hang (default {DEFAULT_TIMEOUT:.0f})")
    parser.add_argument("--header", help="the C API header, relative to SRC (default: config `header`, else found)")
    parser.add_argument("--model", help="GGUF model (default: the generated tiny model)")
    parser.add_argument("--eog-model", help="stop model (default: the generated one, `migrate model --eog`)")
    parser.add_argument("--json", help="write every mutant and its outcome as JSON")
    parser.add_argument("--out", help="folder for the markdown report (default: <cache>/reports)")
    parser.add_argument("--min-score", type=float, help="exit 1 when the score (percent) is below this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit (nothing built)")
    parser.add_argument("--no-malloc-check", action="store_true",
                        help="run the checks without glibc's heap checks (default: on where glibc's malloc debug "
                        "library is installed: a write past an allocation aborts the check instead of passing)")
    parser.add_argument("--rescore", metavar="JSON",
                        help="apply the config's current `mutants` marks to an earlier run's --json (nothing built)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def mutate_request(args: argparse.Namespace) -> mutation.MutateRequest:
    return mutation.MutateRequest(
        src=args.src, from_version=args.from_version, max_mutants=args.max, seed=args.seed, jobs=args.jobs,
        kinds=args.kinds, only=args.only, all_functions=args.all_functions, checks=args.checks,
        tests=tuple(args.tests), timeout=args.timeout, header=args.header, model=args.model,
        eog_model=args.eog_model, json_path=args.json, out=args.out, min_score=args.min_score,
        list_mutants=args.list, malloc_check=not args.no_malloc_check, rescore=args.rescore, quiet=args.quiet,
        cache=args.cache, command=command_line(),
    )


def command_line() -> str:
    """The command as typed, for the report; "" when `mutate` was not run from a command line (a test's main())."""
    return "migrate " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if "mutate" in sys.argv else ""


def command(args: argparse.Namespace) -> int:
    return mutation.run_mutation(mutate_request(args))
