"""`migrate plan`: its parser and request (the work: migrate/rewrite/command.py, whose docstring is the help of
`plan` and `apply`). `migrate apply` takes the same arguments (`add_plan_arguments`) and more."""

from __future__ import annotations

import argparse

from migrate.cli import add_command
from migrate.cli.arguments import add_source_arguments
from migrate.config import DEFAULT_FROM, DEFAULT_TO
from migrate.rewrite import command as rewrite_command


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_plan_arguments(add_command(subparsers, "plan", "show what a migration would change (changes nothing)",
                                   rewrite_command.__doc__, command))  # fmt: skip


def command(args: argparse.Namespace) -> int:
    return rewrite_command.plan_only(plan_request(args))


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `migrate plan`, which `migrate apply` takes too."""
    parser.add_argument("src", help="the consumer's source tree (or one file)")
    parser.add_argument("--from", dest="from_version", default=DEFAULT_FROM, help="llama.cpp release migrated from")
    parser.add_argument("--to", dest="to_version", default=DEFAULT_TO, help="llama.cpp release migrated to")
    parser.add_argument("--source-tree", help="llama.cpp tree of the --from release (default: resolved from --from)")
    parser.add_argument("--rules", help="rules file or folder (default: the shipped rules/)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="rule option, e.g. clear_data=true, error_function=set_error")  # fmt: skip
    parser.add_argument("--enable", action="append", default=[], metavar="RULE_ID",
                        help="turn on an opt-in rule (flash-attn-auto, kv-unified)")  # fmt: skip
    parser.add_argument("--flag", action="append", default=[], metavar="FLAG",
                        help="extra libclang flag, e.g. --flag=-DMY_DEFINE --flag=-I/path")  # fmt: skip
    parser.add_argument("--json", help="also write the plan as JSON to this path")
    parser.add_argument("--report", help="markdown report path (default reports/<name>-<from>-<to>.md)")
    parser.add_argument("--no-report", action="store_true", help="do not write the markdown report")
    parser.add_argument("--no-diff", action="store_true", help="do not print the unified diff")
    parser.add_argument("--no-cache", action="store_true", help="parse again even if a cached plan matches")
    parser.add_argument("--no-config", action="store_true",
                        help="ignore the consumer's llama-migrate.toml / [tool.llama-migrate]")  # fmt: skip
    parser.add_argument("--no-mined", action="store_true", help="no mined rules for a part of the bump no rules file "
                        "covers as written (default: mined and cached; config mined_rules = false does the same)")
    add_source_arguments(parser)


def plan_request(args: argparse.Namespace) -> rewrite_command.PlanRequest:
    """The parsed flags of `add_plan_arguments` (and the global --cache), typed."""
    return rewrite_command.PlanRequest(
        src=args.src, from_version=args.from_version, to_version=args.to_version, source_tree=args.source_tree,
        rules=args.rules, options=tuple(args.option), enable=tuple(args.enable), flags=tuple(args.flag),
        json_path=args.json, report=args.report, no_report=args.no_report, no_diff=args.no_diff,
        no_cache=args.no_cache, no_config=args.no_config, no_mined=args.no_mined, via=args.via,
        checkout=args.checkout, remote=args.remote, refresh=args.refresh, cache=args.cache,
    )
