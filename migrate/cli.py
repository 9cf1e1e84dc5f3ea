"""The `migrate` command: wires the stages together; the work lives in the stage modules.

Each stage module that has commands exposes `register(subparsers)`, adding its sub-commands with
`set_defaults(func=...)`; a command function takes the parsed args and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

# Modules that contribute sub-commands, in help order; every one is required (an import error is a bug).
COMMAND_MODULES = ("migrate.commands", "migrate.commands_model", "migrate.rewrite_cli", "migrate.apidiff", "verify.cli",
                   "migrate.pipeline", "migrate.gate")  # fmt: skip


def add_command(subparsers: argparse._SubParsersAction, name: str, help: str, doc: str | None,
                func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:  # fmt: skip
    """A sub-command whose --help prints `doc` as written (its exit-code tables keep their layout)."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = subparsers.add_parser(name, help=help, description=doc, formatter_class=raw)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="migrate",
        description="Move C/C++ code that embeds llama.cpp across breaking llama.cpp releases, and prove it worked.",
    )
    parser.add_argument("--cache", help="cache dir (default $LLAMA_MIGRATE_CACHE, else ~/.cache/llama-migrate)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
