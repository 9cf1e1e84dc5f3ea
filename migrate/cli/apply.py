"""`migrate apply`: its parser and request (the work: migrate/rewrite/command.py, whose docstring is the help);
the arguments of `migrate plan` and how to write the plan."""

from __future__ import annotations

import argparse

from migrate.cli import add_command
from migrate.cli.plan import add_plan_arguments, plan_request
from migrate.rewrite import command as rewrite_command


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "apply", "rewrite the consumer's files (all or none, with backups)",
                         rewrite_command.__doc__, command)  # fmt: skip
    add_plan_arguments(parser)
    parser.add_argument("--force", action="store_true", help="write even with uncommitted changes in the tree")
    parser.add_argument("--branch", help="create this git branch and commit the migration on it")
    parser.add_argument("--backup-dir", help="where the originals are copied (default <cache>/backups)")
    parser.add_argument("--allow-syntactic", action="store_true",
                        help="also write edits matched by name only (files libclang could not parse)")  # fmt: skip


def command(args: argparse.Namespace) -> int:
    return rewrite_command.plan_and_apply(apply_request(args))


def apply_request(args: argparse.Namespace) -> rewrite_command.ApplyRequest:
    return rewrite_command.ApplyRequest(plan_request(args), force=args.force, branch=args.branch,
                                        backup_dir=args.backup_dir, allow_syntactic=args.allow_syntactic)  # fmt: skip
