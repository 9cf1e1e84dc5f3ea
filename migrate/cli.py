"""The `migrate` command: wires the stages together; the work lives in the stage modules.

Each stage module that has commands exposes `register(subparsers)`, adding its sub-commands with
`set_defaults(func=...)`; a command function takes the parsed args and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from verify.errors import ToolError

# Modules that contribute sub-commands, in help order; every one is required (an import error is a bug).
COMMAND_MODULES = ("migrate.commands", "migrate.commands_model", "migrate.rewrite_cli", "migrate.commands_apidiff",
                   "migrate.commands_verify", "migrate.pipeline", "migrate.gate", "migrate.commands_rules",
                   "migrate.commands_mutate")  # fmt: skip


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


EXIT_USAGE = 2  # bad input or environment: every command's documented code for it
DEBUG_ENV = "LLAMA_MIGRATE_DEBUG"  # set to 1: a ToolError escapes with its traceback (for the toolkit's developers)
_command = ""  # the running sub-command, for error lines printed below it (see error_line)


def error_line(exc: BaseException | str, command: str | None = None) -> str:
    """`migrate <command>: <message>` on one line: what a command prints for bad input before exit 2."""
    name = command if command is not None else _command
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"migrate {name}: {text}" if name else f"migrate: {text}"


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command. Bad input or environment (`ToolError`, or the file system refusing a path) is one line
    on stderr and exit 2, never a traceback; anything else escaping a command is a bug and keeps its traceback."""
    global _command
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    _command = args.command
    try:
        return int(args.func(args))
    except (ToolError, OSError) as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(error_line(exc, args.command), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
