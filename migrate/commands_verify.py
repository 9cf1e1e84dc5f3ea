"""`migrate verify`: the command lives in verify/cli.py (verify imports nothing from migrate); this module
registers it and gives it the default model and stop model (the generated tiny ones)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from verify import cli as verify_cli


def default_model(cache: str | None) -> Path:
    from migrate.model import ensure_model

    return ensure_model("tiny", cache=cache)


def cmd_verify(args: argparse.Namespace) -> int:
    request = verify_cli.verify_request(args)
    if not request.eog_model:
        from migrate.model import ensure_model

        eog_model = str(ensure_model("tiny", cache=request.cache, eog=True))
        request = dataclasses.replace(request, eog_model=eog_model)
    if request.sanitize:
        request = with_sanitized_libraries(request)
    return verify_cli.run_verify(request, default_model)


def with_sanitized_libraries(request: verify_cli.VerifyRequest) -> verify_cli.VerifyRequest:
    """--sanitize: each library built again with the sanitizers from its build manifest (a shim folder of its own;
    llama.cpp's libraries as they are). Where the sanitizers cannot run here nothing is built: every check is
    skipped with the reason. A sanitized build that fails is a ToolError (exit 2) with its first errors."""
    from migrate.build import BuildError, sanitized_build
    from verify.sanitize import unavailable

    if unavailable(request.sanitize):
        return request
    libraries = {}
    for flag, library in (("--lib", request.lib), ("--baseline-lib", request.baseline_lib)):
        if library is None:
            continue
        print(f"--sanitize: building {Path(library).name} with -fsanitize={','.join(request.sanitize)} ...",
              file=sys.stderr)  # fmt: skip
        result = sanitized_build(Path(library), request.sanitize, Path(request.cache) if request.cache else None)
        if not result.ok:
            first = "; ".join(map(str, result.errors[:3])) or f"see {result.log_path}"
            raise BuildError(f"--sanitize: {flag} {library}: the sanitized build failed at stage {result.stage}: "
                             f"{first}")  # fmt: skip
        libraries[flag] = str(result.library)
    return dataclasses.replace(request, lib=libraries["--lib"], baseline_lib=libraries.get("--baseline-lib"))


def register(subparsers: argparse._SubParsersAction) -> None:
    from migrate.cli import add_command

    parser = add_command(subparsers, "verify", "run the consumer checklist on a built library (old vs new)",
                         verify_cli.__doc__, cmd_verify)  # fmt: skip
    verify_cli.add_arguments(parser)
