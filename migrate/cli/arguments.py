"""Options several sub-commands share, each added by one function and read back by one: where llama.cpp comes from
(`sources`, `build`, `plan`, `apply`), the shim's `[build]` additions (`build`, `run`, `gate`), the consumer's own
tests and the sanitizers (`verify`, `run`, `gate`, `mutate`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from migrate.build_settings import BuildOptionsGiven, BuildSettings, settings_from_options
from migrate.sources import DEFAULT_REMOTE


@dataclass(frozen=True)
class SourceOptions:
    """Where a llama.cpp tree comes from (migrate.sources.resolve's keywords)."""

    via: str = "auto"
    checkout: str | None = None
    remote: str = DEFAULT_REMOTE
    refresh: bool = False


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", default="auto", choices=["auto", "checkout", "npm", "remote"],
                        help="where llama.cpp comes from (auto: cache, --checkout, npm bundle, remote)")  # fmt: skip
    parser.add_argument("--checkout", help="the consumer's llama.cpp git checkout (e.g. its submodule); never modified")
    parser.add_argument("--remote", default=DEFAULT_REMOTE, help="git remote for shallow tag fetches")
    parser.add_argument("--refresh", action="store_true", help="drop the cached tree and fetch it again")


def source_options(args: argparse.Namespace) -> SourceOptions:
    return SourceOptions(via=args.via, checkout=args.checkout, remote=args.remote, refresh=args.refresh)


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """The options matching `[build]` (each adds to the config's), for `migrate build`, `run` and `gate`."""
    group = parser.add_argument_group("the shim's compile and link (added to the config's [build])")
    group.add_argument("--build-flag", action="append", metavar="FLAGS",
                       help='compiler flags, split as a shell would, e.g. --build-flag="-include filesystem"')
    group.add_argument("--build-include", action="append", metavar="DIR",
                       help="include directory searched before llama.cpp's (repeat)")
    group.add_argument("--build-define", action="append", metavar="NAME[=VALUE]", help="compile definition (repeat)")
    group.add_argument("--build-source", action="append", metavar="FILE",
                       help="a file compiled into the shim besides those found (repeat)")
    group.add_argument("--build-link", action="append", metavar="LIB",
                       help="a library linked into the shim: a name (z), a -l flag or a path (repeat)")  # fmt: skip


def build_settings(args: argparse.Namespace) -> BuildSettings:
    """`add_build_arguments`' options, split and resolved against the current directory."""
    given = BuildOptionsGiven(flags=tuple(args.build_flag or ()), include_dirs=tuple(args.build_include or ()),
                              defines=tuple(args.build_define or ()), sources=tuple(args.build_source or ()),
                              link_libraries=tuple(args.build_link or ()))  # fmt: skip
    return settings_from_options(given, Path.cwd())


def add_tests_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tests", action="append", default=[], metavar="PATH", help="the consumer's own pytest "
                        "checks (a file or folder; repeatable), run on every build beside the checklist, as the "
                        "config's [verify] tests are")  # fmt: skip


def add_sanitize_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sanitize", metavar="KINDS", help="run the checklist on the shim built with these "
                        "sanitizers (address,undefined: ASan with its leak check, UBSan), each check's child with the "
                        "runtime preloaded; a report in the consumer's code fails the check with its kind and "
                        "file:line (docs/sanitizers.md)")  # fmt: skip
