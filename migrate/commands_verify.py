"""`migrate verify`: the command lives in verify/cli.py (verify imports nothing from migrate); this module
registers it and gives it the default model and stop model (the generated tiny ones)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from verify import cli as verify_cli


def default_model(cache: str | None) -> Path:
    from migrate.model import ensure_model

    return ensure_model("tiny", "b5421", cache=cache)


def cmd_verify(args: argparse.Namespace) -> int:
    request = verify_cli.verify_request(args)
    if not request.eog_model:
        from migrate.model import ensure_model

        eog_model = str(ensure_model("tiny", "b5421", cache=request.cache, eog=True))
        request = dataclasses.replace(request, eog_model=eog_model)
    return verify_cli.run_verify(request, default_model)


def register(subparsers: argparse._SubParsersAction) -> None:
    from migrate.cli import add_command

    parser = add_command(subparsers, "verify", "run the consumer checklist on a built library (old vs new)",
                         verify_cli.__doc__, cmd_verify)  # fmt: skip
    verify_cli.add_arguments(parser)
