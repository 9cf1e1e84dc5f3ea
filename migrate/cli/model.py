"""`migrate model`: print the path of a deterministic tiny llama GGUF model, writing it into the cache if missing."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from migrate.cli import error_line
from migrate.exit_codes import ExitCode, ModelExit
from migrate.model import MODEL_SIZES, MODEL_VOCABULARY, ensure_model
from verify.inputs import int_at_least


@dataclass(frozen=True)
class ModelRequest:
    """What one `migrate model` was asked to do."""

    size: str = "tiny"  # a key of MODEL_SIZES
    seed: int = 42
    eog: bool = False  # the stop variant
    llama: str = MODEL_VOCABULARY  # the llama.cpp build, commit or tree whose vocabulary is used
    cache: str | None = None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model",
        help="write (or find) a seeded llama-architecture test model and print its path",
        description="Seeded random weights with the real SentencePiece vocabulary of the llama.cpp tree; "
        "the same size, seed and vocabulary always give the same bytes.",
    )
    parser.add_argument("--size", choices=list(MODEL_SIZES), default="tiny", help="model shape (default tiny)")
    parser.add_argument("--seed", type=int, default=42, help="weight seed (default 42)")
    parser.add_argument("--eog", action="store_true",
                        help="the stop variant: greedy decoding reaches end-of-generation within a few tokens on some "
                        "prompts (the checklist's stop, uneven-finish and refill checks run on it)")
    parser.add_argument(
        "--llama", default=MODEL_VOCABULARY,
        help=f"llama.cpp build, commit or tree whose vocabulary to use (default {MODEL_VOCABULARY})"
    )
    parser.set_defaults(func=command)


def model_request(args: argparse.Namespace) -> ModelRequest:
    return ModelRequest(size=args.size, seed=args.seed, eog=args.eog, llama=args.llama, cache=args.cache)


def command(args: argparse.Namespace) -> int:
    return run_model(model_request(args))


def run_model(request: ModelRequest) -> int:
    """0 the model's path printed; 2 bad input (no such llama.cpp build, no vocabulary in its tree)."""
    int_at_least("--seed", request.seed, 0, "the weight seed is a non-negative integer, e.g. --seed 42")
    try:
        path = ensure_model(request.size, llama=request.llama, seed=request.seed, cache=request.cache,
                            eog=request.eog)  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:  # a SourceError goes to migrate.cli.main: same line, exit 2
        print(error_line(exc, "model"), file=sys.stderr)
        return ExitCode.USAGE
    print(path)
    return ModelExit.OK
