"""`migrate plan` and `migrate apply`: rewrite a consumer of llama.cpp from one release's API to another's.

    migrate plan  SRC --from b5421 --to b7785 [--json PATH] [--report PATH] [--option KEY=VALUE ...]
                  [--enable RULE_ID ...] [--flag CLANG_FLAG ...]
    migrate apply SRC --from b5421 --to b7785 [...same...] [--force] [--branch NAME] [--allow-syntactic]

`plan` changes nothing in SRC: it prints a summary and the unified diff, writes the markdown report
(<cache>/reports/<name>-<from>-<to>.md unless --report; its path is printed), and with --json the plan as
{edits: [{file, line, rule, before, after, confidence}], manual: [...], advisories: [...], api: {...}, ...}.
Besides the rules' own items, `manual` lists every use of a llama.cpp declaration removed or changed at the
target that no rule covers (rule "api-diff", kind "action", with the old and new declarations), found by the
API diff of the two trees' headers (the public ones and those SRC includes from llama.cpp's tree; an include that
finds another header at the target is an action too); uses that still compile there (a re-valued enum constant
named by its name, a newly deprecated function) are kind "review" and do not change the exit code.
Both read the consumer's config as `migrate run` does (`llama-migrate.toml` in SRC, or `[tool.llama-migrate]` in
its pyproject.toml: enable, options, llama_checkout, allow_syntactic); flags add to it, --no-config ignores it.
`apply` computes the same plan and writes it: all files or none, originals backed up under the cache
(`<cache>/backups/`), refusing a git tree with uncommitted changes unless --force, optionally committing to
a new branch (--branch).

Exit codes:
  0  done; no manual action remains, and every file with llama.cpp code was parsed with its headers
  1  done, but manual actions remain (listed in the output and the report) — the code will not build or
     behave at the target until a person acts
  2  usage or input error (no such path, empty tree, syntax error, file not UTF-8, unknown rule or option,
     no rules for the step, llama.cpp tree unavailable, a bad consumer config); nothing was written
  3  apply refused or failed (uncommitted changes without --force, syntactic edits without
     --allow-syntactic, existing branch, a write error — rolled back); nothing was written
  4  done, but incomplete: no manual action was found, yet some files could not be parsed with their headers
     (a header such as napi.h or R.h not found) and were matched by name only — the API diff did not check
     them (give the include paths: compile_commands.json or --flag=-I...) — or the code uses names the --from
     tree does not declare (it looks newer than --from); the summary says which and why. A file that cannot
     be parsed but names nothing the API diff lists (nor a llama.cpp header it cannot find), and matched no
     rule by name, is listed "not parsed: names nothing the API diff lists" and does not make the plan
     incomplete
  5  apply wrote the rewrite (originals backed up), but --json or --report could not be written afterwards
     (every output path is checked before the first file is written, so only a disk that fills or a path
     removed meanwhile gets here)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.config import DEFAULT_FROM, DEFAULT_TO, ConsumerConfig, load_config
from migrate.exit_codes import PlanExit
from migrate.paths import cache_root
from migrate.sources import DEFAULT_REMOTE, SourceError, SourceTree, resolve
from verify.errors import ToolError
from verify.inputs import BadInput, PathKind, existing_path, output_dir, output_file, tree_links


@dataclass(frozen=True)
class PlanRequest:
    """What one `migrate plan` (or the plan inside `migrate apply`) was asked to do: its command line, typed
    (migrate/cli/plan.py's `plan_request` makes it; nothing here reads the parsed flags)."""

    src: str  # the consumer's tree, or one file
    from_version: str = DEFAULT_FROM
    to_version: str = DEFAULT_TO
    source_tree: str | None = None  # the --from tree; None: resolved from from_version
    rules: str | None = None  # a rules file or folder; None: the shipped rules/
    options: tuple[str, ...] = ()  # KEY=VALUE rule options, over the config's
    enable: tuple[str, ...] = ()  # opt-in rule ids, over the config's
    flags: tuple[str, ...] = ()  # extra libclang flags
    json_path: str | None = None
    report: str | None = None  # the markdown report's path; None: <cache>/reports/<name>-<from>-<to>.md
    no_report: bool = False
    no_diff: bool = False
    no_cache: bool = False  # parse again even when a cached plan matches
    no_config: bool = False  # ignore the consumer's llama-migrate.toml
    no_mined: bool = False  # no mined rules where no rules file covers part of the bump (else the config's mined_rules)
    via: str = "auto"  # where llama.cpp trees come from (sources.resolve)
    checkout: str | None = None
    remote: str = DEFAULT_REMOTE
    refresh: bool = False
    cache: str | None = None


@dataclass(frozen=True)
class ApplyRequest:
    """`migrate apply`: the plan's request and how to write it."""

    plan: PlanRequest
    force: bool = False  # write even with uncommitted changes
    branch: str | None = None  # commit the migration on this new git branch
    backup_dir: str | None = None  # None: <cache>/backups
    allow_syntactic: bool = False


def _tree(spec: str, request: PlanRequest, config: ConsumerConfig) -> SourceTree:
    return resolve(spec, via=request.via, checkout=request.checkout or config.llama_checkout, remote=request.remote,
                   cache=request.cache, refresh=request.refresh)  # fmt: skip


def consumer_config(request: PlanRequest) -> ConsumerConfig:
    """The consumer's llama-migrate.toml (or [tool.llama-migrate]) with the command line over it, as `migrate
    run` reads it: the same tree gets the same plan from `plan`, `apply` and `run`."""
    enable, options = list(request.enable), list(request.options)
    if request.no_config:
        return ConsumerConfig(source="ignored (--no-config)").override(enable, options, None)
    config = load_config(Path(request.src)).override(enable, options, None)
    if config.source != "defaults":
        extra = f"; options {config.options}" if config.options else ""
        print(f"config: {config.source} (enable {list(config.enable)}{extra})", file=sys.stderr)
    return config


def make_plan(request: PlanRequest):  # -> tuple[Plan, SourceTree, ConsumerConfig]
    """Resolve config, trees and rules, run the engine (one step, or the steps of the bump: rewrite/steps.py); bad
    input raises a ToolError (InputError, RuleError, SourceError, ConfigError, ApiDiffError)."""
    from migrate.rewrite.parse import CompileDatabase
    from migrate.rewrite.rules import load_rules, rule_files
    from migrate.rewrite.steps import StepInputs, plan_steps

    src = consumer_path(request.src)
    if request.rules is not None:  # "" must not mean the shipped rules, nor /dev/null an empty rules file
        rules = existing_path("--rules", request.rules, PathKind.ANY, "give a rules .yaml or a folder of them",
                              noun="rules file or folder")  # fmt: skip
        if not (rules.is_file() or rules.is_dir()):
            raise BadInput("--rules", request.rules, "not a regular file or folder", "give a rules .yaml")
    consumer = consumer_config(request)
    if request.rules and Path(request.rules).is_file():
        return _plan_one_file(request, src, consumer, load_rules(Path(request.rules)))
    try:  # a --to no llama.cpp tree answers is bad input, as for api-diff (exit 2), not a plan that stops short
        _tree(request.to_version, request, consumer)
    except SourceError as exc:
        raise SourceError(f"--to {request.to_version}: {exc}") from exc
    rulesets = rule_files(Path(request.rules) if request.rules else None)
    inputs = StepInputs(
        src=src,
        resolve=lambda tag: _tree(tag, request, consumer),
        options=dict(consumer.options),
        enabled=set(consumer.enable),
        flags=parse_flags(request, consumer),
        plan_cache=None if request.no_cache else cache_root(request.cache) / "plans",
        cache=request.cache,
        source_tree=_tree(request.source_tree, request, consumer) if request.source_tree else None,
        compile_db=CompileDatabase.find,
        mined=consumer.mined_rules and not request.no_mined,
    )
    plan = plan_steps(request.from_version, request.to_version, inputs, rulesets)  # its builds: the trees it used
    source = inputs.source_tree or _tree(request.from_version, request, consumer)
    return plan, source, consumer


def consumer_path(value: str) -> Path:
    """SRC: an existing file or folder, never "" (an unset "$SRC" must not migrate the current folder), with no
    symlink loop inside it."""
    from migrate.tree import SKIP_DIR_NAMES

    src = existing_path("SRC", value, PathKind.ANY, "give the consumer's tree or one of its files",
                        noun="file or directory")  # fmt: skip
    if src.is_dir():
        tree_links("SRC", src, SKIP_DIR_NAMES)
    return src


def check_outputs(request: PlanRequest) -> None:
    """Every path the command will write, proved writable before anything is parsed or written."""
    output_file("--json", request.json_path)
    if request.no_report:
        return
    if request.report:
        output_file("--report", request.report, makes_folder=True)  # write_report creates its folder
    else:
        output_dir("--cache", cache_root(request.cache) / "reports")


def check_apply_outputs(request: ApplyRequest) -> None:
    """`apply` also writes backups and may create a branch: both checked before the first file is written."""
    check_outputs(request.plan)
    if request.backup_dir is not None:  # "" is refused, not the default
        output_dir("--backup-dir", request.backup_dir)
    else:
        output_dir("--cache", cache_root(request.plan.cache) / "backups")
    if request.branch is not None:
        check_branch_name(request.branch)


def check_branch_name(name: str) -> None:
    """git's own rule for branch names (`git check-ref-format --branch`), asked before anything is written."""
    import shutil
    import subprocess

    if not name.strip():
        raise BadInput("--branch", name, "an empty branch name", "give the branch to create")
    if shutil.which("git") is None:
        return  # apply refuses --branch without a repository anyway
    proc = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BadInput("--branch", name, "not a valid git branch name", "see `git check-ref-format --help`, "
                       "e.g. migrate/b7785")  # fmt: skip


def parse_flags(request: PlanRequest, consumer: ConsumerConfig) -> tuple[str, ...]:
    """What the parses add to their flags: the consumer's own build settings (`[build]`), then --flag."""
    from migrate.rewrite.parse import build_parse_flags

    build = consumer.build
    return (*build_parse_flags(build.include_dirs, build.defines, build.flags), *request.flags)


def _plan_one_file(request: PlanRequest, src: Path, consumer: ConsumerConfig, rules: Any):  # -> tuple
    """--rules FILE: that file's rules for --from → --to, whatever step the file names."""
    from migrate.rewrite.apicheck import ApiTarget, unavailable_section
    from migrate.rewrite.engine import EngineConfig, build_plan
    from migrate.rewrite.parse import CompileDatabase
    from migrate.rewrite.plan import trees_used

    source = _tree(request.source_tree or request.from_version, request, consumer)
    target, target_error = None, None
    try:
        target = _tree(request.to_version, request, consumer)
    except SourceError as exc:  # the target tree only feeds the report; its absence must not block a plan
        target_error = str(exc)
    root = src if src.is_dir() else src.parent
    config = EngineConfig(
        root=src,
        llama_tree=source.path,
        ruleset=rules,
        options=dict(consumer.options),
        enabled=set(consumer.enable),
        compile_db=CompileDatabase.find(root),
        extra_flags=parse_flags(request, consumer),
        plan_cache=None if request.no_cache else cache_root(request.cache) / "plans",
        api=ApiTarget(source, target, request.cache) if target is not None else None,
    )
    unavailable = None if target is not None else unavailable_section(f"the target tree is not available "
                                                                      f"({target_error})")  # fmt: skip
    return build_plan(config).with_trees(trees_used(source, target, target_error), unavailable), source, consumer


def _print_summary(plan: Any, diff: bool) -> None:
    counts = plan.summary_counts()
    out = sys.stdout
    if diff:
        out.write(plan.diff())
    print(
        f"{counts['edits']} edit(s) in {counts['files_changed']} file(s) "
        f"({counts['semantic']} semantic, {counts['syntactic']} syntactic); {counts['manual']} manual action(s), "
        f"{counts['review']} to review, {counts['advisories']} advisories; {plan.seconds:.2f} s"
        + (" (cached plan: inputs unchanged)" if plan.cached else ""),
        file=sys.stderr,
    )
    for line in steps_lines(plan) + parse_lines(plan) + api_lines(plan) + newer_lines(plan):
        print(line, file=sys.stderr)
    for item in sorted(plan.manual, key=lambda m: (m.file, m.line)):
        print(f"{item.kind.upper()}: {item.file}:{item.line} [{item.rule}] {item.message}", file=sys.stderr)
    for item in sorted(plan.advisories, key=lambda a: (a.file, a.line)):
        print(f"ADVISORY: {item.file}:{item.line} [{item.rule}] {item.message}", file=sys.stderr)


def steps_lines(plan: Any) -> list[str]:
    """For a bump in steps (or not on a rules file's endpoints): which steps ran and what no rules cover."""
    selection = getattr(plan, "selection", None)
    return [f"STEPS: {line}" for line in selection.coverage()] if selection is not None else []


def parse_lines(plan: Any) -> list[str]:
    """How the files were read: how many with their headers (libclang, everything resolved), how many by name only
    (a header not found: nothing checked against the API diff there) and why."""
    from migrate.rewrite.plan import ReadMode

    reports = plan.file_reports
    full = [r for r in reports if r.mode == ReadMode.LIBCLANG]
    by_name = [r for r in reports if r.mode == ReadMode.TREE_SITTER]
    skipped = [r for r in reports if r.mode == ReadMode.SKIPPED]
    nothing = [r for r in reports if r.mode == ReadMode.NAMES_NOTHING]
    line = f"files: {len(full)} parsed with their headers, {len(by_name)} by name only"
    line += f", {len(nothing)} not parsed (name nothing the API diff lists)" if nothing else ""
    line += f", {len(skipped)} header(s) no parsed file includes (not read)" if skipped else ""
    lines = [line]
    lines += [f"NAMES NOTHING: {report.path}: {report.reason}" for report in nothing]
    for report in by_name:
        lines.append(f"BY NAME ONLY: {report.path}: {report.reason} — rules matched by name, not checked against "
                     "the API diff; give the include path (compile_commands.json or --flag=-I...)")  # fmt: skip
    return lines


def api_lines(plan: Any) -> list[str]:
    """The API diff's verdict, saying what it did not look at: a 0 that covered nothing must not read as clean."""
    summary = plan.api_summary
    if not summary:
        return ["API diff: not computed (see the report); uses of changed API no rule covers are not listed"]
    uses = summary.get("uses") or {}
    from migrate.rewrite.plan import ReadMode

    parsed = sum(1 for r in plan.file_reports if r.mode == ReadMode.LIBCLANG)
    by_name = sum(1 for r in plan.file_reports if r.mode == ReadMode.TREE_SITTER)
    line = (f"API diff {summary['from']} -> {summary['to']}: {uses.get('covered', 0)} use(s) covered by rules, "
            f"{uses.get('manual', 0)} manual, {uses.get('review', 0)} to review")  # fmt: skip
    if summary.get("include_actions"):
        line += f", {summary['include_actions']} #include(s) that find another header at the target"
    private = summary.get("private_headers") or {}
    extra = ["API diff also over headers included from llama.cpp's tree: " +
             ", ".join(f"{h} ({what})" for h, what in private.items())] if private else []  # fmt: skip
    if by_name and not parsed:
        return [f"{line} — it covered nothing: no file was parsed with its headers ({by_name} by name only)", *extra]
    if by_name:
        line += f" in {parsed} file(s) parsed with their headers; NOT checked: {by_name} file(s) by name only"
    return [line, *extra]


def newer_lines(plan: Any) -> list[str]:
    """Names the --from tree does not declare but a later llama.cpp does: the code is probably newer than --from."""
    evidence = getattr(plan, "newer_than_from", [])
    if not evidence:
        return []
    names = ", ".join(f"{e['name']} ({e['file']}:{e['line']})" for e in evidence[:6])
    more = f" and {len(evidence) - 6} more" if len(evidence) > 6 else ""
    return [f"NEWER THAN --from: the code uses {names}{more}, which llama.cpp {plan.from_version} does not declare "
            "but a later release does — is --from right? (re-run with the release the code builds against)"]


def exit_code(plan: Any) -> int:
    """1 manual actions; 4 nothing manual found, but the plan is incomplete: files read by name only, or names the
    --from tree does not declare (the code looks newer than --from); else 0."""
    if plan.actions:
        return PlanExit.MANUAL
    if any(r.mode.incomplete for r in plan.file_reports) or getattr(plan, "newer_than_from", None):
        return PlanExit.INCOMPLETE
    return PlanExit.OK


def _write_outputs(plan: Any, request: PlanRequest, mode: str) -> None:
    from migrate.report import default_report_path, write_report

    if request.json_path:
        text = json.dumps(plan.to_json(), indent=2, ensure_ascii=False) + "\n"
        Path(request.json_path).write_text(text, encoding="utf-8")
    if not request.no_report:
        # never ./reports under whatever the current directory is: --report, else the cache
        reports = cache_root(request.cache) / "reports"
        path = Path(request.report) if request.report else default_report_path(plan, reports)
        write_report(plan, path, mode=mode)
        print(f"report: {path}", file=sys.stderr)


def _summarised_plan(request: PlanRequest) -> Any:
    """The plan and the config it used, its summary printed; bad input raises a ToolError (one line, exit 2)."""
    plan, _, consumer = make_plan(request)
    _print_summary(plan, diff=not request.no_diff)
    return plan, consumer


def plan_only(request: PlanRequest) -> int:
    check_outputs(request)
    plan, _ = _summarised_plan(request)
    _write_outputs(plan, request, mode="plan (nothing changed)")
    return exit_code(plan)


def plan_and_apply(request: ApplyRequest) -> int:
    from migrate.cli import error_line
    from migrate.rewrite.apply import ApplyRefused, apply_plan

    check_apply_outputs(request)
    plan, consumer = _summarised_plan(request.plan)
    try:
        backups = Path(request.backup_dir) if request.backup_dir else None
        syntactic = request.allow_syntactic or consumer.allow_syntactic
        result = apply_plan(plan, force=request.force, branch=request.branch, allow_syntactic=syntactic,
                            cache=request.plan.cache, backup_root=backups)  # fmt: skip
    except ApplyRefused as exc:
        print(error_line(f"refused: {exc}", "apply"), file=sys.stderr)
        return PlanExit.REFUSED
    if result.written:
        print(f"wrote {len(result.written)} file(s); originals in {result.backup_dir}", file=sys.stderr)
    else:
        print("nothing to write: the tree is already migrated for these rules", file=sys.stderr)
    if result.commit:
        print(f"committed {result.commit[:12]} on branch {result.branch}", file=sys.stderr)
    try:
        _write_outputs(plan, request.plan, mode="applied" if result.written else "applied (no change)")
    except (OSError, ToolError) as exc:  # checked writable before; the disk filled or the path went meanwhile
        written = f"{len(result.written)} file(s) WERE written (originals in {result.backup_dir})"
        print(error_line(f"{written}, but an output could not be: {exc}", "apply"), file=sys.stderr)
        return PlanExit.WRITTEN_NO_OUTPUT
    return exit_code(plan)
