"""`migrate verify`: its parser and request; the command itself is verify/cli.py (verify imports nothing from
migrate), whose docstring is the help. This module gives it the default model and stop model (the generated tiny
ones) and, for --sanitize, the sanitized builds of the libraries."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from migrate.cli import add_command
from migrate.cli.arguments import add_sanitize_argument, add_tests_argument
from verify import cli as verify_cli
from verify.checks import ALL_CHECKS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "verify", "run the consumer checklist on a built library (old vs new)",
                         verify_cli.__doc__, command)  # fmt: skip
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lib", required=True, help="the built library under test (the new one in differential mode)")
    parser.add_argument("--header", help="its C API header (default: the one `migrate build` recorded beside it)")
    parser.add_argument("--config", help="consumer config with a [verify] table (default: the llama-migrate.toml "
                        "of the tree the library was built from)")
    parser.add_argument("--baseline-lib", help="old build to compare against: differential mode")
    parser.add_argument("--baseline-header", help="the old build's header (default: found as for --header)")
    parser.add_argument("--model", help="GGUF model (default: the deterministic tiny model, made if missing)")
    parser.add_argument("--eog-model", help="stop model for the stop/uneven-finish checks: greedy decoding ends on EOS "
                        "(`migrate model --eog`; `migrate verify` makes it when not given, else those checks skip)")
    parser.add_argument("--n-gpu-layers", type=int, default=0, help="layers to offload (default 0: CPU)")
    parser.add_argument("--llama-tree", help="llama.cpp tree --lib was built from (default: read from the build)")
    parser.add_argument("--baseline-llama-tree", help="llama.cpp tree --baseline-lib was built from")
    parser.add_argument("--checks", help=f"comma-separated subset of: {', '.join(ALL_CHECKS)}")
    parser.add_argument("--threads", type=int, default=1, help="n_threads for contexts (default 1)")
    parser.add_argument("--max-tokens", type=int, default=12, help="tokens generated per prompt (default 12)")
    parser.add_argument("--normalise", default="none", choices=["none", "strip", "whitespace"],
                        help="normalisation before comparing parallel and single outputs")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per check before it counts as a hang")
    parser.add_argument("--jobs", type=int, help="checks run at once, each in its own process (default: one per "
                        "core; the throughput comparison always runs alone, after the others)")  # fmt: skip
    parser.add_argument("--generated", type=int, default=0, metavar="N", help="generated_inputs: N inputs drawn "
                        "per operation (Hypothesis, fixed seed), each answer compared with llama.cpp's primitives, a "
                        "failure shrunk; budget: N examples per property plus 200 shrink calls, within --timeout")
    parser.add_argument("--tie-margin", type=float, default=0.05,
                        help="top-2 logit margin under which a greedy divergence is a numerical near-tie")  # fmt: skip
    parser.add_argument("--trace", action="store_true", help="record each check's llama.cpp calls (a library built "
                        "with `migrate build --traced`); failed checks name the first contract break")  # fmt: skip
    parser.add_argument("--trace-dir", help="keep the call traces in this folder (default: a temporary one)")
    parser.add_argument("--predict", metavar="VERSION", help="replay the old build's traced calls (--lib, or "
                        "--baseline-lib) against VERSION's run-time contract (implies --trace), "
                        "e.g. b7785")  # fmt: skip
    parser.add_argument("--assume-kv-unified", action="store_true", help="--predict as if the opt-in rule kv-unified "
                        "were applied (kv_unified = n_seq_max > 1): what it remedies is listed apart")  # fmt: skip
    parser.add_argument("--json", help="write the full results (evidence included) as JSON")
    parser.add_argument("--junit", help="write JUnit XML: one testcase per check and build")
    parser.add_argument("--markdown", help="write the markdown section the migration report embeds")
    parser.add_argument("--known-failures", metavar="FILE", help="known failures (a file --write-baseline wrote), "
                        "besides the config's [verify] known_failures / baseline: reported as known, not failing")
    parser.add_argument("--write-baseline", metavar="FILE", help="record the failing checks of the build under test "
                        "with their causes (regressions left out), for --known-failures FILE later")  # fmt: skip
    add_tests_argument(parser)
    add_sanitize_argument(parser)


def verify_request(args: argparse.Namespace) -> verify_cli.VerifyRequest:
    """The parsed flags of `add_arguments` (and --cache), typed: the one place that reads them."""
    checks = tuple(n.strip() for n in args.checks.split(",")) if args.checks else None
    return verify_cli.VerifyRequest(
        lib=args.lib, header=args.header, config=args.config, baseline_lib=args.baseline_lib,
        baseline_header=args.baseline_header, model=args.model, eog_model=args.eog_model,
        n_gpu_layers=args.n_gpu_layers, llama_tree=args.llama_tree, baseline_llama_tree=args.baseline_llama_tree,
        checks=checks, threads=args.threads, max_tokens=args.max_tokens, normalise=args.normalise,
        timeout=args.timeout, tie_margin=args.tie_margin, generated=args.generated, trace=args.trace,
        trace_dir=args.trace_dir, predict=args.predict, assume_kv_unified=args.assume_kv_unified,
        json_path=args.json, junit_path=args.junit, markdown_path=args.markdown, cache=args.cache, jobs=args.jobs,
        known_failures=args.known_failures, write_baseline=args.write_baseline, tests=tuple(args.tests),
        sanitize=verify_cli.sanitize_kinds(args.sanitize),
    )


def default_model(cache: str | None) -> Path:
    from migrate.model import ensure_model

    return ensure_model("tiny", cache=cache)


def command(args: argparse.Namespace) -> int:
    request = verify_request(args)
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
