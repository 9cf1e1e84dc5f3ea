"""`migrate build`: build a consumer's shim against a llama.cpp version.

Exit codes: 0 success; 1 the build failed (compiler errors printed as file:line: message);
2 bad input or an environment problem (message on stderr says what to do).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from migrate.build import SOURCE_SUFFIXES, BuildOptions, build
from migrate.cli import sources as sources_command
from migrate.cli.arguments import (
    SourceOptions,
    add_build_arguments,
    add_source_arguments,
    build_settings,
    source_options,
)
from migrate.exit_codes import BuildExit
from verify.cli import sanitize_kinds
from verify.inputs import BadInput, PathKind, existing_path, output_file


@dataclass(frozen=True)
class BuildRequest:
    """What one `migrate build` was asked to do."""

    src: str  # the consumer's tree, or one shim file
    llama: str  # build tag, commit or llama.cpp directory
    sources: tuple[str, ...] = ()  # shim files to build instead of searching src
    options: BuildOptions = field(default_factory=BuildOptions)
    json_path: str | None = None
    log_path: str | None = None
    source: SourceOptions = field(default_factory=SourceOptions)
    cache: str | None = None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    builder = subparsers.add_parser("build", help="build a consumer's shim against a llama.cpp version")
    builder.add_argument("src", help="the consumer's source tree (or one shim file)")
    builder.add_argument("--llama", required=True, help="build tag, commit or llama.cpp directory")
    builder.add_argument("--source", action="append", default=[], help="shim file(s) to build instead of searching SRC")
    builder.add_argument("--cmake-arg", action="append", default=[], help="extra CMake option for llama.cpp (repeat)")
    builder.add_argument("--gpu", choices=["cuda"], help="GPU backend to build llama.cpp with")
    builder.add_argument("--cuda-arch", help="CUDA architecture(s), e.g. 90")
    builder.add_argument("--llama-build", default="source", choices=["source", "prebuilt", "auto"],
                         help="llama.cpp's libraries: compiled from the tree (source), a registry package's prebuilt "
                         "libraries of the same release (prebuilt; only common is compiled), or prebuilt where there "
                         "are some for this platform, else source (auto)")  # fmt: skip
    builder.add_argument("--traced", action="store_true", help="link the llama.cpp call tracer in (for `migrate "
                         "verify --trace/--predict`): a separate build, with debug info")  # fmt: skip
    builder.add_argument("--sanitize", metavar="KINDS", help="compile the shim with these sanitizers (address,"
                         "undefined) for `migrate verify --sanitize`: a separate build, with debug info; llama.cpp's "
                         "libraries as they are")  # fmt: skip
    builder.add_argument("--json", help="write the build result (library, llama.cpp, seconds, errors) here")
    builder.add_argument("--log", help="write the full compiler log here")
    add_build_arguments(builder)
    add_source_arguments(builder)
    builder.set_defaults(func=command)


def build_request(args: argparse.Namespace) -> BuildRequest:
    """The inputs are checked first (SRC before --sanitize and the [build] options, as the command always did)."""
    check_build_inputs(args.src, tuple(args.source), args.json, args.log)
    # the options' [build] settings add to the consumer's config, which build() reads from SRC
    options = BuildOptions(backend=args.gpu or "cpu", cuda_arch=args.cuda_arch, cmake_args=tuple(args.cmake_arg),
                           traced=args.traced, settings=build_settings(args), llama_build=args.llama_build,
                           sanitize=sanitize_kinds(args.sanitize))  # fmt: skip
    return BuildRequest(src=args.src, llama=args.llama, sources=tuple(args.source), options=options,
                        json_path=args.json, log_path=args.log, source=source_options(args),
                        cache=args.cache)  # fmt: skip


def command(args: argparse.Namespace) -> int:
    return run_build(build_request(args))


def check_build_inputs(src_path: str, sources: tuple[str, ...], json_path: str | None, log_path: str | None) -> None:
    """SRC, --source files and the outputs, before llama.cpp is resolved or anything is compiled: a file given as
    SRC must be a C/C++ source (README.md would build a library exporting nothing of the shim, and exit 0)."""
    src = existing_path("SRC", src_path, PathKind.ANY, "give the consumer's tree or its shim file",
                        noun="file or directory")  # fmt: skip
    if src.is_file() and src.suffix not in SOURCE_SUFFIXES:
        raise BadInput("SRC", src_path, f"not a C/C++ source file (suffix {src.suffix or 'none'}; the shim is built "
                       f"from {', '.join(sorted(SOURCE_SUFFIXES))} files)", "give the consumer's tree or its shim "
                       "file")  # fmt: skip
    for source in sources:
        path = existing_path("--source", source, PathKind.FILE, "give an existing shim file", noun="file")
        if path.suffix not in SOURCE_SUFFIXES:
            raise BadInput("--source", source, "not a C/C++ source file", "give the shim's .c/.cpp file")
    output_file("--json", json_path)
    output_file("--log", log_path)


def run_build(request: BuildRequest) -> int:
    # a SourceError / BuildError (no shim, no toolchain) is bad input: one line, exit 2, from migrate.cli.main
    tree = sources_command.resolve_tree(request.llama, request.source, request.cache)
    options = request.options
    print(f"building {request.src} against llama.cpp {tree.provided} ({options.backend}) ...", file=sys.stderr)
    result = build(Path(request.src), tree, options, sources=[Path(s) for s in request.sources] or None,
                   cache=request.cache)  # fmt: skip
    if request.json_path:
        data = result.to_json()
        data.pop("log")
        Path(request.json_path).write_text(json.dumps(data, indent=2) + "\n")
    if request.log_path:
        Path(request.log_path).write_text(result.log)
    reuse = "reused" if result.llama_reused and result.llama_objects_rebuilt == 0 else "built"
    if result.prebuilt:
        common = "prebuilt too" if result.prebuilt.get("common") == "prebuilt" else reuse
        reuse = f"prebuilt from {result.prebuilt['package']}, common {common}"
    print(
        f"llama.cpp libraries {reuse} ({result.llama_objects_rebuilt} objects compiled, {result.llama_seconds:.1f} s); "
        f"shim {result.shim_seconds:.1f} s",
        file=sys.stderr,
    )
    if not result.ok:
        print(f"build FAILED at stage {result.stage}: {len(result.errors)} error(s)", file=sys.stderr)
        for error in result.errors:
            print(error, file=sys.stderr)
        if not result.errors:
            print(result.log[-3000:], file=sys.stderr)
        return BuildExit.FAILED
    print(result.library)
    return BuildExit.OK
