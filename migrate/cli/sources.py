"""`migrate sources`: resolve a llama.cpp build tag or commit to a cached source tree, or list the npm bundles.

Exit codes: 0 the tree's path printed (or the listing); 2 bad input or an environment problem (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from migrate.cli.arguments import SourceOptions, add_source_arguments, source_options
from migrate.exit_codes import BuildExit
from migrate.sources import SourceTree, resolve
from verify.inputs import BadInput, output_file


@dataclass(frozen=True)
class SourcesRequest:
    """What one `migrate sources` was asked to do."""

    tag: str | None = None  # a build tag, commit or llama.cpp directory; None: not given
    list_bundles: bool = False  # list the node-llama-cpp bundles instead
    probe: bool = False  # read every bundle not read yet, then list
    json_path: str | None = None
    source: SourceOptions = field(default_factory=SourceOptions)
    cache: str | None = None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    sources = subparsers.add_parser("sources", help="resolve a llama.cpp build tag or commit to a cached source tree")
    sources.add_argument("tag", nargs="?", help="build tag (b7785), commit hash, or a llama.cpp directory")
    sources.add_argument("--list", action="store_true",
                         help="list every node-llama-cpp version and the llama.cpp release it bundles (issue 23)")
    sources.add_argument("--probe", action="store_true",
                         help="read every version not read yet, then list (a download per version; implies --list)")
    sources.add_argument("--json", help="write requested/provided/commit/source/path here")
    add_source_arguments(sources)
    sources.set_defaults(func=command)


def sources_request(args: argparse.Namespace) -> SourcesRequest:
    return SourcesRequest(tag=args.tag, list_bundles=args.list, probe=args.probe, json_path=args.json,
                          source=source_options(args), cache=args.cache)  # fmt: skip


def command(args: argparse.Namespace) -> int:
    return run_sources(sources_request(args))


def resolve_tree(spec: str, source: SourceOptions, cache: str | None) -> SourceTree:
    """The tree `spec` names, its one-line summary on stderr (`sources` and `build` print it)."""
    tree = resolve(spec, via=source.via, checkout=source.checkout, remote=source.remote, cache=cache,
                   refresh=source.refresh)  # fmt: skip
    print(tree.summary(), file=sys.stderr)
    return tree


def run_sources(request: SourcesRequest) -> int:
    """Bad input (a SourceError) is one line and exit 2, printed by migrate.cli.main like every command's."""
    if request.list_bundles or request.probe:
        return _list_bundles(request)
    if request.tag is None:  # an empty TAG is resolve's to name: "an empty llama.cpp version"
        raise BadInput("TAG", None, "missing", "give a build tag (b7785), a commit or a llama.cpp directory; or --list")
    output_file("--json", request.json_path)
    tree = resolve_tree(request.tag, request.source, request.cache)
    if request.json_path:
        Path(request.json_path).write_text(json.dumps(tree.describe(), indent=2) + "\n")
    print(tree.path)
    return BuildExit.OK


def _list_bundles(request: SourcesRequest) -> int:
    """`migrate sources --list [--probe]`: every node-llama-cpp version and the llama.cpp release it bundles; --probe
    reads every version not read yet (one tarball each, deleted again) instead of the bisection a request does."""
    from migrate.sources import NpmCatalogue, SourceCache

    if request.tag:
        raise BadInput("TAG", request.tag, "given with --list", "leave the tag out to list the bundles")
    catalogue = NpmCatalogue(SourceCache(request.cache))
    failed = catalogue.probe_all() if request.probe else []
    listing = catalogue.listing()
    for version, release in listing:
        print(f"node-llama-cpp@{version}\t{release or 'not read (--probe reads it)'}")
    read = [r for _, r in listing if r]
    print(f"{len(listing)} version(s), {len(read)} read, {len(set(read))} distinct llama.cpp release(s)"
          + (f"; not readable now: {', '.join(failed)}" if failed else ""), file=sys.stderr)  # fmt: skip
    return BuildExit.OK
