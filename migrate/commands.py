"""Sub-commands of the foundation stages: `migrate sources` and `migrate build`.

Exit codes: 0 success; 1 the build failed (compiler errors printed as file:line: message);
2 bad input or an environment problem (message on stderr says what to do).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from migrate.build import SOURCE_SUFFIXES, BuildOptions, build
from migrate.build_settings import add_build_arguments, settings_from_args
from migrate.exit_codes import BuildExit
from migrate.sources import DEFAULT_REMOTE, SourceTree, resolve
from verify.inputs import BadInput, PathKind, existing_path, output_file


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", default="auto", choices=["auto", "checkout", "npm", "remote"],
                        help="where llama.cpp comes from (auto: cache, --checkout, npm bundle, remote)")  # fmt: skip
    parser.add_argument("--checkout", help="the consumer's llama.cpp git checkout (e.g. its submodule); never modified")
    parser.add_argument("--remote", default=DEFAULT_REMOTE, help="git remote for shallow tag fetches")
    parser.add_argument("--refresh", action="store_true", help="drop the cached tree and fetch it again")


def tree_from_args(spec: str, args: argparse.Namespace) -> SourceTree:
    tree = resolve(spec, via=args.via, checkout=args.checkout, remote=args.remote, cache=args.cache,
                   refresh=args.refresh)  # fmt: skip
    print(tree.summary(), file=sys.stderr)
    return tree


def cmd_sources(args: argparse.Namespace) -> int:
    """Bad input (a SourceError) is one line and exit 2, printed by migrate.cli.main like every command's."""
    if args.list or args.probe:
        return _list_bundles(args)
    if args.tag is None:  # an empty TAG is resolve's to name: "an empty llama.cpp version"
        raise BadInput("TAG", None, "missing", "give a build tag (b7785), a commit or a llama.cpp directory; or --list")
    output_file("--json", args.json)
    tree = tree_from_args(args.tag, args)
    if args.json:
        Path(args.json).write_text(json.dumps(tree.describe(), indent=2) + "\n")
    print(tree.path)
    return BuildExit.OK


def _list_bundles(args: argparse.Namespace) -> int:
    """`migrate sources --list [--probe]`: every node-llama-cpp version and the llama.cpp release it bundles; --probe
    reads every version not read yet (one tarball each, deleted again) instead of the bisection a request does."""
    from migrate.sources import NpmCatalogue, SourceCache

    if args.tag:
        raise BadInput("TAG", args.tag, "given with --list", "leave the tag out to list the bundles")
    catalogue = NpmCatalogue(SourceCache(args.cache))
    failed = catalogue.probe_all() if args.probe else []
    listing = catalogue.listing()
    for version, release in listing:
        print(f"node-llama-cpp@{version}\t{release or 'not read (--probe reads it)'}")
    read = [r for _, r in listing if r]
    print(f"{len(listing)} version(s), {len(read)} read, {len(set(read))} distinct llama.cpp release(s)"
          + (f"; not readable now: {', '.join(failed)}" if failed else ""), file=sys.stderr)  # fmt: skip
    return BuildExit.OK


def check_build_inputs(args: argparse.Namespace) -> None:
    """SRC, --source files and the outputs, before llama.cpp is resolved or anything is compiled: a file given as
    SRC must be a C/C++ source (README.md would build a library exporting nothing of the shim, and exit 0)."""
    src = existing_path("SRC", args.src, PathKind.ANY, "give the consumer's tree or its shim file",
                        noun="file or directory")  # fmt: skip
    if src.is_file() and src.suffix not in SOURCE_SUFFIXES:
        raise BadInput("SRC", args.src, f"not a C/C++ source file (suffix {src.suffix or 'none'}; the shim is built "
                       f"from {', '.join(sorted(SOURCE_SUFFIXES))} files)", "give the consumer's tree or its shim "
                       "file")  # fmt: skip
    for source in args.source:
        path = existing_path("--source", source, PathKind.FILE, "give an existing shim file", noun="file")
        if path.suffix not in SOURCE_SUFFIXES:
            raise BadInput("--source", source, "not a C/C++ source file", "give the shim's .c/.cpp file")
    output_file("--json", args.json)
    output_file("--log", args.log)


def cmd_build(args: argparse.Namespace) -> int:
    from verify.cli import sanitize_kinds

    check_build_inputs(args)
    # the options' [build] settings add to the consumer's config, which build() reads from SRC
    options = BuildOptions(backend=args.gpu or "cpu", cuda_arch=args.cuda_arch, cmake_args=tuple(args.cmake_arg),
                           traced=args.traced, settings=settings_from_args(args, Path.cwd()),
                           llama_build=args.llama_build, sanitize=sanitize_kinds(args.sanitize))  # fmt: skip
    # a SourceError / BuildError (no shim, no toolchain) is bad input: one line, exit 2, from migrate.cli.main
    tree = tree_from_args(args.llama, args)
    print(f"building {args.src} against llama.cpp {tree.provided} ({options.backend}) ...", file=sys.stderr)
    result = build(Path(args.src), tree, options, sources=[Path(s) for s in args.source] or None, cache=args.cache)
    if args.json:
        data = result.to_json()
        data.pop("log")
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    if args.log:
        Path(args.log).write_text(result.log)
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


def register(subparsers: argparse._SubParsersAction) -> None:
    sources = subparsers.add_parser("sources", help="resolve a llama.cpp build tag or commit to a cached source tree")
    sources.add_argument("tag", nargs="?", help="build tag (b7785), commit hash, or a llama.cpp directory")
    sources.add_argument("--list", action="store_true",
                         help="list every node-llama-cpp version and the llama.cpp release it bundles (issue 23)")
    sources.add_argument("--probe", action="store_true",
                         help="read every version not read yet, then list (a download per version; implies --list)")
    sources.add_argument("--json", help="write requested/provided/commit/source/path here")
    add_source_arguments(sources)
    sources.set_defaults(func=cmd_sources)

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
    builder.set_defaults(func=cmd_build)
