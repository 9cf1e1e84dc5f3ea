"""The `migrate` command: wires the stages together; the work lives in the stage modules.

Each stage module that has commands exposes `register(subparsers)`, adding its sub-commands with
`set_defaults(func=...)`; a command function takes the parsed args and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute sub-commands; a module missing here is a bug, not an optional feature.
COMMAND_MODULES = ("migrate.commands", "migrate.pipeline", "migrate.gate")
# Stages still being written; each becomes required once it lands.
OPTIONAL_COMMAND_MODULES = ("migrate.commands_model", "migrate.apidiff", "migrate.rewrite_cli", "verify.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="migrate",
        description="Move C/C++ code that embeds llama.cpp across breaking llama.cpp releases, and prove it worked.",
    )
    parser.add_argument("--cache", help="cache dir (default $LLAMA_MIGRATE_CACHE, else ~/.cache/llama-migrate)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for name in OPTIONAL_COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        if hasattr(module, "register"):
            module.register(subparsers)
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
