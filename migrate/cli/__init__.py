"""The `migrate` command line, and only it: one module per sub-command (`migrate/cli/<name>.py`, `api-diff` as
`api_diff.py`), each with `add_parser(subparsers)` and `<name>_request(args)`, which turns the parsed flags into the
frozen request its stage takes (the stages never see the argparse namespace; tests/test_cli_layout.py checks it).
This module assembles the sub-parsers and handles what escapes any command: bad input is one line and exit 2, Ctrl-C
130, a bug 70 (migrate/exit_codes.py). docs/development.md says where a new command goes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from migrate.exit_codes import ExitCode
from verify.errors import ToolError

# The sub-command modules, in help order; every one is required (an import error is a bug).
COMMAND_MODULES = ("migrate.cli.sources", "migrate.cli.build", "migrate.cli.model", "migrate.cli.plan",
                   "migrate.cli.apply", "migrate.cli.api_diff", "migrate.cli.verify", "migrate.cli.run",
                   "migrate.cli.gate", "migrate.cli.rules", "migrate.cli.mutate")  # fmt: skip


def add_command(subparsers: argparse._SubParsersAction, name: str, help: str, doc: str | None,
                func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:  # fmt: skip
    """A sub-command whose --help prints `doc` as written (its exit-code tables keep their layout)."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = subparsers.add_parser(name, help=help, description=doc, formatter_class=raw)
    parser.set_defaults(func=func)
    return parser


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as every command's bad input: one line naming the (sub-)command, exit 2. Sub-command
    parsers are made of the same class (argparse uses the parent's), so `migrate plan` says `migrate plan: ...`."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(ExitCode.USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="migrate",
        description="Move C/C++ code that embeds llama.cpp across breaking llama.cpp releases, and prove it worked.",
    )
    parser.add_argument("--cache", help="cache dir (default $LLAMA_MIGRATE_CACHE, else ~/.cache/llama-migrate)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


DEBUG_ENV = "LLAMA_MIGRATE_DEBUG"  # set to 1: errors escape with their traceback (for the toolkit's developers)
_command = ""  # the running sub-command, for error lines printed below it (see error_line)


def error_line(exc: BaseException | str, command: str | None = None) -> str:
    """`migrate <command>: <message>` on one line: what a command prints for bad input before exit 2."""
    name = command if command is not None else _command
    text = " ".join(os_error_text(exc).split()) or type(exc).__name__
    return f"migrate {name}: {text}" if name else f"migrate: {text}"


def os_error_text(exc: BaseException | str) -> str:
    """An OSError that reached the top without a flag to name (the validation layer names those) as its reason and
    path, without the `[Errno N]` prefix; anything else as it reads."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{where}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command. Bad input or environment (`ToolError`, or the file system refusing a path) is one line
    on stderr and exit 2 (a command with another code for a kind of error, such as apply's 3, returns it itself);
    Ctrl-C is one line and 130; anything else escaping a command is a bug: one line naming the command and exit 70
    (LLAMA_MIGRATE_DEBUG=1: the traceback)."""
    global _command
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    _command = getattr(args, "command", None) or ""
    if unknown:
        print(error_line(f"unrecognized arguments: {' '.join(unknown)} (see `migrate {_command} --help`)"),
              file=sys.stderr)  # fmt: skip
        return ExitCode.USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.USAGE
    debug = bool(os.environ.get(DEBUG_ENV))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        if debug:
            raise
        print(error_line("interrupted (Ctrl-C)"), file=sys.stderr)
        return ExitCode.INTERRUPTED
    except (ToolError, OSError) as exc:
        if debug:
            raise
        print(error_line(exc, args.command), file=sys.stderr)
        return ExitCode.USAGE
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug, said in one line instead of a traceback
        if debug:
            raise
        print(error_line(f"internal error, a bug in llama-migrate ({type(exc).__name__}: {os_error_text(exc)}); "
                         f"set {DEBUG_ENV}=1 for the traceback and report it", args.command), file=sys.stderr)
        return ExitCode.INTERNAL
