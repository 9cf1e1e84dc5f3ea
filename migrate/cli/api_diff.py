"""`migrate api-diff`: the command line of the API diff (the work lives in migrate/apidiff/)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from migrate.apidiff import ApiDiff, ApiSurface, CrossReference, cross_reference, diff, load_surface, to_markdown
from migrate.exit_codes import ApiDiffExit


@dataclass(frozen=True)
class ApiDiffRequest:
    """What one `migrate api-diff` was asked to do."""

    old: str  # --from: the build the consumer uses now
    new: str  # --to: the target build
    src: str | None = None  # consumer sources to cross-reference; None: the diff alone
    json_path: str | None = None
    markdown_path: str | None = None
    covered: tuple[str, ...] = ()  # --covered values as given (comma-separated names, repeatable)
    refresh: bool = False  # re-parse the headers instead of using the cache
    cache: str | None = None


def _summary(result: ApiDiff, old: ApiSurface, new: ApiSurface) -> str:
    lines = [f"API diff {result.old} -> {result.new} over {len(result.headers)} headers"]
    for surface in (old, new):
        how = "from cache" if surface.from_cache else "parsed"
        lines.append(
            f"  {surface.label()}: {how} in {surface.load_seconds:.2f} s (libclang parse {surface.parse_seconds:.2f} s)"
        )
        lines += [f"  skipped {header}: {error}" for header, error in surface.skipped_headers.items()]
    for key, counts in result.counts().items():
        lines.append(f"  {key}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return "\n".join(lines)


def _xref_summary(xref: CrossReference) -> str:
    lines = [f"cross reference: {len(xref.covered)} covered, {len(xref.manual)} manual, {len(xref.review)} to review "
             f"({xref.parse_seconds:.2f} s)"]  # fmt: skip
    for use in xref.manual:
        lines.append(f"  MANUAL {use.where()}: {use.symbol} ({use.kind.value})")
    for use in xref.review:
        lines.append(f"  REVIEW {use.where()}: {use.symbol} ({use.kind.value})")
    lines += [f"  parse error: {error}" for error in xref.parse_errors[:10]]
    if xref.internal:
        lines.append("  llama.cpp internals included (outside the public headers, no API stability), each diffed: "
                     + ", ".join(f"{header} ({what})" for header, what in xref.internal.items()))  # fmt: skip
    return "\n".join(lines)


def run_api_diff(request: ApiDiffRequest) -> int:
    """Exit codes: 0 done (no manual action); 1 the consumer has uses no rule covers; 2 bad input or environment."""
    from migrate.build import find_shim_sources
    from migrate.sources import resolve

    # bad input (SourceError, BuildError, ApiDiffError: ToolErrors) is one line and exit 2, from migrate.cli.main
    from verify.inputs import PathKind, existing_path, output_file

    if request.src is not None:  # "" must not silently mean "no cross reference"
        existing_path("SRC", request.src, PathKind.ANY, "give the consumer's tree or one of its files",
                      noun="file or directory")  # fmt: skip
    output_file("--json", request.json_path)
    output_file("--markdown", request.markdown_path)
    cache = request.cache
    old_tree, new_tree = resolve(request.old, cache=cache), resolve(request.new, cache=cache)
    old, new = load_surface(old_tree, cache, request.refresh), load_surface(new_tree, cache, request.refresh)
    result = diff(old, new)
    files = find_shim_sources(Path(request.src)) if request.src else []
    covered = {name.strip() for names in request.covered for name in names.split(",") if name.strip()}
    xref = cross_reference(result, files, old_tree, covered, old_headers=old.headers,
                           new_tree=new_tree) if request.src else None  # fmt: skip
    for tree in (old_tree, new_tree):
        print(tree.summary(), file=sys.stderr)
    print(_summary(result, old, new))
    if xref is not None:
        print(_xref_summary(xref))
    if request.json_path:
        data = {"diff": result.to_json(), "cross_reference": xref.to_json() if xref else None}
        Path(request.json_path).write_text(json.dumps(data, indent=1) + "\n")
    if request.markdown_path:
        base = Path(request.src) if request.src and Path(request.src).is_dir() else None
        Path(request.markdown_path).write_text(to_markdown(result, xref, base))
    return ApiDiffExit.MANUAL if xref is not None and xref.manual else ApiDiffExit.OK


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "api-diff",
        help="removed/added/changed llama.cpp API between two builds, and where SRC uses it",
        description=run_api_diff.__doc__,
    )
    parser.add_argument("src", nargs="?", metavar="SRC", help="consumer sources to cross-reference (file or folder)")
    parser.add_argument("--from", dest="old", required=True, help="the build the consumer uses now (e.g. b5421)")
    parser.add_argument("--to", dest="new", required=True, help="the target build (e.g. b7785)")
    parser.add_argument("--json", metavar="PATH", help="write the diff (and cross reference) as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the markdown report section")
    covered_help = "names rewrite rules handle (comma-separated, repeatable): functions, struct.field, constants"
    parser.add_argument("--covered", action="append", metavar="NAMES", help=covered_help)
    parser.add_argument("--refresh", action="store_true", help="re-parse the headers instead of using the cache")
    parser.set_defaults(func=command)


def api_diff_request(args: argparse.Namespace) -> ApiDiffRequest:
    return ApiDiffRequest(old=args.old, new=args.new, src=args.src, json_path=args.json, markdown_path=args.markdown,
                          covered=tuple(args.covered or ()), refresh=args.refresh, cache=args.cache)  # fmt: skip


def command(args: argparse.Namespace) -> int:
    return run_api_diff(api_diff_request(args))
