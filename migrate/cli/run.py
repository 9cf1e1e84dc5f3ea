"""`migrate run`: its parser and request (the work: migrate/pipeline.py, whose docstring is the help). `migrate
gate` takes the same arguments (`add_run_arguments`) and request (`run_request`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from migrate import pipeline
from migrate.cli import add_command
from migrate.cli.arguments import add_build_arguments, add_sanitize_argument, add_tests_argument, build_settings
from migrate.config import DEFAULT_FROM, DEFAULT_TO
from migrate.exit_codes import ExitCode
from migrate.pipeline import UsageError
from verify.errors import comma_names

R = TypeVar("R")  # the request type of the command run_stage wires


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "run", "the whole chain: plan, apply (to a copy), build both, verify, report",
                         pipeline.__doc__, command)  # fmt: skip
    add_run_arguments(parser)


def command(args: argparse.Namespace) -> int:
    return run_stage(args, run_request, pipeline.run)


def run_stage(args: argparse.Namespace, make: Callable[[argparse.Namespace], R], stage: Callable[[R], int]) -> int:
    """`run` and `gate`: the request made from the command line, or its usage error (one line, exit 2), then the
    stage."""
    try:
        request = make(args)
    except UsageError as exc:
        pipeline.usage_error(exc)
        return ExitCode.USAGE
    return stage(request)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `migrate run`, which `migrate gate` takes too."""
    parser.add_argument("src", nargs="?", help="consumer source tree (default: the bundled fixtures/localllm)")
    parser.add_argument("--from", dest="from_version", default=DEFAULT_FROM, help="llama.cpp release migrated from")
    parser.add_argument("--to", dest="to_version", default=DEFAULT_TO, help="llama.cpp release migrated to")
    parser.add_argument("--model", help="GGUF model for verification (default: the generated tiny model)")
    parser.add_argument("--header", help="the consumer's C API header, relative to SRC (default: config `header`, "
                        "else the one header that defines an export macro)")
    parser.add_argument("--out", help="folder for the report (default: <cache>/reports; its path is printed)")
    parser.add_argument("--json", help="write everything the run found as JSON")
    parser.add_argument("--junit", help="write JUnit XML of the checks (one testcase per check and build)")
    parser.add_argument("--enable", action="append", default=[], metavar="RULE_ID", help="turn on an opt-in rule")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="rule option")
    parser.add_argument("--gpu", choices=["cuda"], help="build llama.cpp with this GPU backend")
    parser.add_argument("--cuda-arch", help="CUDA architecture(s) for --gpu cuda, e.g. 90 (default: the visible GPU's)")
    parser.add_argument("--n-gpu-layers", type=int, default=0, help="layers to offload during verification")
    parser.add_argument("--cmake-arg", action="append", default=[], help="extra CMake option for llama.cpp")
    add_build_arguments(parser)
    parser.add_argument("--checks", metavar="A,B", help="verify only these checks (default: the whole checklist)")
    add_tests_argument(parser)
    add_sanitize_argument(parser)
    parser.add_argument("--no-predict", dest="predict", action="store_false", help="skip the predict step (the "
                        "original built traced, its calls replayed against the target's run-time contract)")
    parser.add_argument("--quiet", action="store_true", help="no progress output (CI logs)")
    parser.add_argument("--no-mined", dest="mined", action="store_false", help="no mined rules for a part of the "
                        "bump no rules file covers as written (default: mined and cached; config mined_rules = false "
                        "does the same)")  # fmt: skip
    parser.add_argument("--no-reuse", dest="reuse", action="store_false", help="recompute the old build's checks "
                        "and the prediction even when every input they depend on is unchanged (default: served "
                        "from <cache>/reuse and said so in the report)")  # fmt: skip
    parser.add_argument("--known-failures", metavar="FILE", help="a baseline of known failures (written by `migrate "
                        "verify --write-baseline FILE`), besides the config's [verify] known_failures / baseline")
    parser.add_argument("--jobs", type=int, help="checks verified at once, each in its own process (default: one "
                        "per core; the throughput comparison runs alone, after the others)")  # fmt: skip
    parser.add_argument("--llama-build", default="source", choices=["source", "prebuilt", "auto"],
                        help="llama.cpp's libraries: compiled from the trees (source), a registry package's prebuilt "
                        "libraries of the same release (prebuilt), or prebuilt where there are some, else source "
                        "(auto); the report says which")  # fmt: skip


def run_request(args: argparse.Namespace) -> pipeline.RunRequest:
    """The parsed flags of `add_run_arguments` (and the global --cache), typed; an unknown check is a UsageError."""
    return pipeline.RunRequest(
        src=args.src, from_version=args.from_version, to_version=args.to_version, model=args.model,
        header=args.header, out=args.out, json_path=args.json, junit_path=args.junit, enable=tuple(args.enable),
        options=tuple(args.option), gpu=args.gpu, cuda_arch=args.cuda_arch, cmake_args=tuple(args.cmake_arg),
        n_gpu_layers=args.n_gpu_layers, build_settings=build_settings(args), checks=check_names(args.checks),
        predict=args.predict, quiet=args.quiet, cache=args.cache, jobs=jobs_count(args.jobs),
        known_failures=args.known_failures, tests=tuple(args.tests), reuse=args.reuse, mined=args.mined,
        llama_build=args.llama_build, sanitize=sanitizer_names(args.sanitize),
    )


def jobs_count(value: int | None) -> int | None:
    """`--jobs N`: at least 1 (a usage error otherwise); None: one per core."""
    if value is not None and value < 1:
        raise UsageError(f"--jobs {value}: give at least 1 (checks verified at once)")
    return value


def sanitizer_names(spec: str | None) -> tuple[str, ...]:
    """`--sanitize address,undefined` as names (() when not given); an unknown one is a usage error."""
    from verify.sanitize import SANITIZERS

    try:
        return comma_names(spec, SANITIZERS, "sanitizer(s)", UsageError) or ()
    except UsageError as exc:
        raise UsageError(f"--sanitize {spec}: {exc}") from exc


def check_names(spec: str | None) -> tuple[str, ...] | None:
    """`--checks a,b` as names (None: the whole checklist); an unknown name is a usage error, not a skip."""
    from verify.checks import ALL_CHECKS

    return comma_names(spec, ALL_CHECKS, "check(s)", UsageError)
