"""`migrate verify`: the command lives in verify/cli.py (verify imports nothing from migrate); this module
registers it and gives it the default model (the generated tiny model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from verify import cli as verify_cli


def default_model(cache: str | None) -> Path:
    from migrate.model import ensure_model

    return ensure_model("tiny", "b5421", cache=cache)


def cmd_verify(args: argparse.Namespace) -> int:
    if not getattr(args, "eog_model", None):
        from migrate.model import ensure_model

        args.eog_model = str(ensure_model("tiny", "b5421", cache=getattr(args, "cache", None), eog=True))
    return verify_cli.cmd_verify(args, default_model)


def register(subparsers: argparse._SubParsersAction) -> None:
    from migrate.cli import add_command

    parser = add_command(subparsers, "verify", "run the consumer checklist on a built library (old vs new)",
                         verify_cli.__doc__, cmd_verify)  # fmt: skip
    verify_cli.add_arguments(parser)
