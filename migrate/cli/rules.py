"""`migrate rules`: its actions draft, check, steps (migrate/rulefiles.py) and mine (migrate/mine/command.py)."""

from __future__ import annotations

import argparse

from migrate import rulefiles
from migrate.cli import add_command
from migrate.exit_codes import ExitCode
from migrate.mine import command as mine_command


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    rules = subparsers.add_parser("rules", help="rules files: draft one for a new step, check, show a bump's steps",
                                  description=rulefiles.__doc__, formatter_class=raw)  # fmt: skip
    sub = rules.add_subparsers(dest="rules_command", metavar="ACTION")
    doc = rulefiles.__doc__
    drafting = add_command(sub, "draft", "write a draft rules file from the API diff of two builds", doc, draft)
    drafting.add_argument("--from", dest="from_version", required=True, help="the step's first build, e.g. b7785")
    drafting.add_argument("--to", dest="to_version", required=True, help="the step's last build, e.g. b10361")
    drafting.add_argument("--out", help="where to write it (default <cache>/rules-drafts/<from>-<to>.yaml)")
    checking = add_command(sub, "check", "load rules files with the schema (default: the shipped ones)", doc, check)
    checking.add_argument("files", nargs="*", help="rules files (default: every file in rules/)")
    steps_parser = add_command(sub, "steps", "which rules files a bump runs, and what no rules cover", doc, steps)
    steps_parser.add_argument("--from", dest="from_version", required=True)
    steps_parser.add_argument("--to", dest="to_version", required=True)
    steps_parser.add_argument("--rules", help="rules folder (default: the shipped rules/)")
    _add_mine(sub)  # `migrate rules mine` (issue 23)
    rules.set_defaults(func=lambda args: (rules.print_help(), ExitCode.USAGE)[1])


def _add_mine(sub: argparse._SubParsersAction) -> None:
    mining = add_command(sub, "mine", "mine rules from llama.cpp's own (and a corpus's) migrations between two builds",
                         mine_command.__doc__, mine)  # fmt: skip
    mining.add_argument("--from", dest="from_version", required=True, help="the step's first build, e.g. b5421")
    mining.add_argument("--to", dest="to_version", required=True, help="the step's last build, e.g. b7785")
    mining.add_argument("--corpus", action="append", metavar="OLD=NEW",
                        help="more code at both ends (e.g. node-llama-cpp's llama/addon of two releases); repeatable")
    mining.add_argument("-o", "--out", help="where to write it (default <cache>/rules-mined/<from>-<to>.yaml)")
    mining.add_argument("--compare", action="append", metavar="DIR",
                        help="a consumer tree to plan with the hand and the mined rules and compare; repeatable")
    mining.add_argument("--no-engine-check", action="store_true",
                        help="do not run the mined rules' cases through the engine (faster; rules are not demoted)")


def draft(args: argparse.Namespace) -> int:
    return rulefiles.write_draft(draft_request(args))


def check(args: argparse.Namespace) -> int:
    return rulefiles.check_files(check_request(args))


def steps(args: argparse.Namespace) -> int:
    return rulefiles.show_steps(steps_request(args))


def mine(args: argparse.Namespace) -> int:
    return mine_command.mine_rules(mine_request(args))


def draft_request(args: argparse.Namespace) -> rulefiles.DraftRequest:
    return rulefiles.DraftRequest(args.from_version, args.to_version, args.out, args.cache)


def check_request(args: argparse.Namespace) -> rulefiles.CheckRequest:
    return rulefiles.CheckRequest(tuple(args.files))


def steps_request(args: argparse.Namespace) -> rulefiles.StepsRequest:
    return rulefiles.StepsRequest(args.from_version, args.to_version, args.rules)


def mine_request(args: argparse.Namespace) -> mine_command.MineRequest:
    return mine_command.MineRequest(from_version=args.from_version, to_version=args.to_version,
                                    corpus=tuple(args.corpus or ()), out=args.out, compare=tuple(args.compare or ()),
                                    engine_check=not args.no_engine_check, cache=args.cache)  # fmt: skip
