"""The rewrite engine: consumer tree + rules → `Plan` (edits, manual items, advisories). Writes nothing.

Per translation unit: parse with libclang against the *from* version's llama.cpp tree, collect the sites the
rules match (resolved declarations only), turn each into edits with the handler of its rule kind. A file
libclang cannot parse (a header not found) falls back to tree-sitter, by name, and its edits say so
("syntactic"). A file with a syntax error stops the plan: nothing can be trusted about it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate import tree
from migrate.apidiff import ApiDiffError
from migrate.rewrite import fingerprint, rule_advisories
from migrate.rewrite.apicheck import ApiScan, ApiTarget, unavailable_section
from migrate.rewrite.calls import CallJob, compose_calls, inline_values, option_values
from migrate.rewrite.collect import Collected, Collector
from migrate.rewrite.defaults import PREFILTER_NAMES
from migrate.rewrite.edits import (
    NOTE_UNDECLARED,
    SEMANTIC,
    SYNTACTIC,
    Edit,
    EditConflict,
    InputError,
    SourceFile,
    check_overlaps,
)
from migrate.rewrite.fallback import plan_syntactic
from migrate.rewrite.fold import plan_folds
from migrate.rewrite.handlers import Handler, HandlerResult, UnitFacts, handlers_for, template_call
from migrate.rewrite.parse import (
    C_SUFFIXES,
    CXX_SUFFIXES,
    HEADER_SUFFIXES,
    CompileDatabase,
    ParseConfig,
    ParsedFile,
    PreamblePlan,
    Problem,
    language_of,
    parse,
    skipped_ranges,
)
from migrate.rewrite.plan import ACTION, REVIEW, FileReport, ManualItem, Plan, ReadMode
from migrate.rewrite.prescan import Prescan, UnitText, added_names, diff_names, public_headers, rule_names, with_macros
from migrate.rewrite.rules import KIND_SPECS, Rule, RuleSet, rule_files
from migrate.rewrite.tokens import CallSpan, Token, call_at, index_at, tokenize

if TYPE_CHECKING:
    from migrate.rewrite.units import UnitApi

# The call composition the handlers and the syntactic fallback share lives in calls.py; named here for callers.
__all__ = ["CallJob", "Engine", "EngineConfig", "UnitResult", "build_plan", "compose_calls", "consumer_files",
           "option_values"]  # fmt: skip

SOURCE_SUFFIXES = C_SUFFIXES | CXX_SUFFIXES
INCLUDES_LLAMA = re.compile(rb'^\s*#\s*include\s*[<"](?:[^">]*/)?(?:llama|common|sampling)\.h[">]', re.MULTILINE)
UNDECLARED = re.compile(r"undeclared (?:identifier|function) '([A-Za-z_][A-Za-z0-9_]*)'")
NO_MEMBER = re.compile(r"no member named '([A-Za-z_][A-Za-z0-9_]*)' in '(?:struct )?([A-Za-z_][A-Za-z0-9_:]*)'")
QUOTED = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)'")
JOBS_ENV = "LLAMA_MIGRATE_PLAN_JOBS"


@dataclass
class EngineConfig:
    root: Path
    llama_tree: Path  # llama.cpp tree of the version migrated *from* (declarations resolve against it)
    ruleset: RuleSet
    options: dict[str, Any] = field(default_factory=dict)
    enabled: set[str] = field(default_factory=set)
    compile_db: CompileDatabase | None = None
    extra_flags: tuple[str, ...] = ()
    plan_cache: Path | None = None  # folder of cached plans (None: always parse)
    api: ApiTarget | None = None  # cross-reference uses of API removed/changed at the target (None: no API check)
    # processes planning translation units: None: $LLAMA_MIGRATE_PLAN_JOBS, else one per CPU; 1: this process only;
    # 0: the plain sequential loop (no records, no preambles, no per-unit cache: the reference the others must equal)
    jobs: int | None = None
    preambles: bool = True  # parse the leading #includes files share once, precompiled (parse.py)


# --- finding the consumer's files -------------------------------------------------------------------------------


def consumer_files(root: Path) -> list[Path]:
    """C/C++ sources and headers of the consumer, outside llama.cpp trees, build folders and backups."""
    if not root.exists():
        raise InputError(f"{root}: no such file or directory")
    if root.is_file():
        return [root.resolve()]
    return tree.consumer_files(root, SOURCE_SUFFIXES | HEADER_SUFFIXES)


def _mentions(data: bytes, names: set[bytes]) -> bool:
    return any(name in data for name in names)


# --- one unit's results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitResult:
    """What planning one translation unit found, not yet applied: the engine applies it after the units before it
    (`Engine.take`), in this process or from a worker's record (units.py)."""

    findings: Plan  # the unit's file reports, manual items, advisories, decisions, rules used (no edits)
    edits: tuple[Edit, ...]
    fresh: frozenset[str]  # the files this unit planned: later units do not plan them again


@dataclass
class UnitWork:
    """One unit being planned: the state of the units before it that it reads, and what it has found so far."""

    findings: Plan
    handled: frozenset[str]  # files an earlier unit planned
    api: ApiScan | UnitApi | None  # the API cross reference the unit reports to (or a recorder of it: units.py)
    edits: list[Edit] = field(default_factory=list)

    def take(self, result: HandlerResult) -> None:
        """A handler's result, after those returned before it."""
        self.edits += result.edits
        self.findings.manual += result.manual
        self.findings.advisories += result.advisories
        self.findings.decisions += result.decisions
        for rule_id, description in result.rules_used:
            self.findings.rules_used.setdefault(rule_id, description)


# --- the engine ------------------------------------------------------------------------------------------------


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.rules = config.ruleset.active(config.enabled)
        self.options = config.ruleset.resolve_options(config.options)
        self.root = config.root.resolve() if config.root.is_dir() else config.root.resolve().parent
        self.parse_config = ParseConfig(config.llama_tree, self.root, config.compile_db, config.extra_flags)
        self.names = {r.match.name for r in self.rules} | PREFILTER_NAMES
        self.sources: dict[Path, SourceFile] = {}
        self.tokens: dict[Path, list[Token]] = {}
        self.edits: list[Edit] = []
        self.handled: set[str] = set()  # files whose sites were taken from an earlier translation unit
        # identifiers of the target API the rewritten code uses: errors about them in a re-parse against the
        # source version's headers mean "already migrated", not a broken file (opt-in rules' too: an earlier run
        # may have enabled them)
        self.target_names = target_identifiers(config.ruleset.rules)
        self.api: ApiScan | None = None
        self.consumer_names: set[str] = set()  # every consumer file: the API check scans those a unit includes
        self.prescan = Prescan(config.llama_tree, config.api.new.path if config.api is not None else None)
        # what makes a unit worth parsing (prescan.py): the rules' and the API diff's names; None: every unit is
        self.listed: frozenset[bytes] | None = None
        self.api_listed: frozenset[bytes] | None = None  # the API diff's alone (None: not computed, or unbounded)

    # --- entry ---------------------------------------------------------------------------------------------

    def plan(self) -> Plan:
        started = time.monotonic()
        files = consumer_files(self.config.root)
        if not files:
            raise InputError(f"{self.config.root}: no C/C++ source files (.c, .cpp, .h, ...) in this tree")
        plan = Plan(self.root, self.config.ruleset.from_version, self.config.ruleset.to_version,
                    options=self.options)  # fmt: skip
        self.consumer_names = {str(p) for p in files}
        self._start_api(plan)
        self._listed_names()
        relevant = self._read_relevant(files, plan)
        units = self._translation_units(files, relevant)
        consumer = {str(p) for p in relevant}
        self._plan_units(units, self._names_nothing(units), consumer, plan)
        for path in relevant:
            if str(path) not in self.handled and path.suffix in HEADER_SUFFIXES:
                plan.file_reports.append(FileReport(plan.relative(path), ReadMode.SKIPPED,
                                                    "a header no parsed source file includes"))  # fmt: skip
                if self.api is not None:
                    self.api.skip(str(path), "a header no parsed source file includes")
        plan.files = dict(self.sources)
        plan.edits = self._final_edits()
        self._decisions(plan)
        if self.api is not None:
            self.api.finish(plan)
        plan.seconds = time.monotonic() - started
        return plan

    def _plan_units(self, units: list[Path], unparsed: set[Path], consumer: set[str], plan: Plan) -> None:
        """Every unit, as `plan_unit` one after the other would: recorded in worker processes or taken from the
        per-unit cache, then merged in order (units.py); a unit whose record does not hold is planned here. The
        `unparsed` units (they name nothing listed) are listed in their place, not parsed."""
        from migrate.rewrite import units as scale

        jobs = self.config.jobs
        if jobs is None and os.environ.get(JOBS_ENV, "").strip().isdigit():
            jobs = int(os.environ[JOBS_ENV])
        if jobs == 0:
            for unit in units:
                if unit in unparsed:
                    self._not_parsed(unit, consumer, plan)
                else:
                    self.take(self.plan_unit(unit, consumer, frozenset(self.handled), self.api), plan)
            return
        flags = {u: self.parse_config.flags_for(u) for u in units}
        # over every unit, the unparsed too: `_not_parsed` leaves the state the guess takes a unit to leave
        guesses = scale.guesses(units, {u: _include_dirs(f) for u, f in flags.items()}, self.consumer_names,
                                consumer, {str(p) for p in self.sources})  # fmt: skip
        cache = None
        if self.config.plan_cache is not None:
            cache = scale.UnitCache(self.config.plan_cache / "units", _config_digest(self.config))
        records: dict[Path, scale.UnitRecord] = {}
        parsed = [u for u in units if u not in unparsed]
        if cache is not None:
            for unit in parsed:
                found = cache.get(unit, flags[unit], *guesses[unit], consumer)
                if found is not None:
                    records[unit] = found
        todo = [u for u in parsed if u not in records]
        jobs = min(len(todo), jobs or os.cpu_count() or 1)
        pool = None
        state = scale.fresh_scan(self.api)
        temp = None
        try:
            folder, temp, choice, runs = self._choose_preambles(parsed, todo)
            if choice is not None:  # built first: the workers forked next know them (more processes than CPUs:
                # running units beside the building was slower here)
                for group, preamble in scale.build_preambles(folder, choice, runs, frozenset(self.consumer_names),
                                                             jobs):  # fmt: skip
                    choice.add(group, preamble)
                self.parse_config.preambles = choice
            if jobs > 1:
                pool = scale.UnitPool(self, consumer, [(u, *guesses[u]) for u in todo], jobs)
            for unit in units:
                if unit in unparsed:
                    self._not_parsed(unit, consumer, plan)
                    continue
                record = records.get(unit)
                made = record is None
                if record is None:
                    record = pool.record(unit) if pool is not None and unit in pool else None
                if record is None:  # in this process (one job, or a worker that died)
                    record = scale.record_unit(self, unit, consumer, *guesses[unit], state)
                try:
                    scale.check(self, record)
                    scale.merge(self, record, plan)
                except scale.Stale:
                    self.take(self.plan_unit(unit, consumer, frozenset(self.handled), self.api), plan)
                    continue
                if made and cache is not None:
                    cache.put(unit, flags[unit], record, consumer)
        finally:
            if pool is not None:
                pool.close()
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
            self.parse_config.preambles = None

    def _choose_preambles(self, units: list[Path], todo: list[Path]) -> tuple[Path, Path | None, Any, set[Any]]:
        """Each unit's preamble, chosen among all units (the same choice every run), and the runs to build or find
        built: those two units to parse share, or that an earlier run left. Returns (folder, a temporary folder to
        remove or None, the choice or None when preambles are off, the runs)."""
        from migrate.rewrite import units as scale

        if not todo or not self.config.preambles:
            return Path(), None, None, set()
        temp = None
        if self.config.plan_cache is not None:
            folder = self.config.plan_cache.parent / "preambles"
        else:
            folder = temp = Path(tempfile.mkdtemp(prefix="llama-migrate-preambles-"))
        choice = PreamblePlan.choose(folder, units, self.parse_config)
        users: dict[tuple[str, tuple[str, ...]], int] = {}
        for unit in todo:
            if unit in choice.chosen:
                run = choice.chosen[unit][:2]
                users[run] = users.get(run, 0) + 1
        runs = {run for run, n in users.items() if n >= 2 or scale.built_before(folder, choice, run)}
        return folder, temp, choice, runs

    def _start_api(self, plan: Plan) -> None:
        """The API diff of the two trees (header surfaces come from their cache); a failure is said, not fatal."""
        if self.config.api is None:
            return
        try:
            self.api = ApiScan.start(self.config.api, self.config.ruleset.covered())
        except ApiDiffError as exc:
            plan.api_section = unavailable_section(str(exc))
            plan.decisions.append(f"API diff not computed ({exc}): uses of changed API no rule covers are not listed")

    # --- the name pre-scan: units that name nothing listed are not parsed (prescan.py) ---------------------

    def _listed_names(self) -> None:
        """What a unit must name to be worth parsing: the rules' names and the API diff's (its breaks, changed
        defaults and additions), with the macros of llama.cpp's public headers that spell one."""
        headers = public_headers(self.config.llama_tree.resolve())
        rules = rule_names(self.rules, self.config.ruleset.advisories)
        if self.api is None:  # no diff: the rules alone decide what is parsed, and no file is complete unparsed
            self.listed, self.api_listed = with_macros(rules, headers), None
            return
        api = diff_names(self.api.diff)
        if api is None:  # a listed function can be called without its name: every unit may use it
            self.listed = self.api_listed = None
            return
        api |= added_names(self.api.diff)
        self.api_listed = with_macros(api, headers)
        self.listed = with_macros(rules | api, headers)

    def _names_nothing(self, units: list[Path]) -> set[Path]:
        """The units whose text (and their consumer headers') names nothing the rules or the API diff list, and
        whose includes into llama.cpp the API check would find nothing at: not parsed."""
        found = set()
        for unit in units:
            flags = self.parse_config.flags_for(unit)
            text = self.prescan.read(unit, flags)
            if not self.prescan.names_any(text, self.listed) and self.prescan.includes_settled(text, flags):
                found.add(unit)
        return found

    def _not_parsed(self, unit: Path, consumer: set[str], plan: Plan) -> None:
        """A unit that names nothing listed, in its place: listed, and its consumer files taken as handled and
        scanned, as a parse would have left them (nothing found) — and as units.guesses takes them."""
        from migrate.rewrite import units as scale

        plan.file_reports.append(FileReport(plan.relative(unit), ReadMode.NAMES_NOTHING,
                                            "not parsed: its text and the consumer headers it includes name nothing "
                                            "the rules or the API diff list"))  # fmt: skip
        dirs = _include_dirs(self.parse_config.flags_for(unit))
        reach = scale.include_closure(unit, dirs, self.consumer_names, {}) | {str(unit)}
        sources = {str(p) for p in self.sources}
        self.handled |= (reach & consumer & sources) | {str(unit)}
        if self.api is not None:
            for name in sorted(reach & self.consumer_names):
                self.api.scanned.add(name)
                self.api.not_scanned.pop(name, None)

    def _names_api(self, text: UnitText) -> bool:
        """Whether a unit's text may use something the API diff lists (True when the diff is not there)."""
        return self.api_listed is None or self.prescan.names_any(text, self.api_listed)

    def _read_relevant(self, files: list[Path], plan: Plan) -> list[Path]:
        names = {n.encode() for n in self.names}
        relevant = []
        for path in files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
            # a file that includes llama.cpp's headers may reach the old API through a macro defined elsewhere
            if not _mentions(data, names) and not INCLUDES_LLAMA.search(data):
                continue
            self.sources[path] = SourceFile.read(path)
            relevant.append(path)
        return relevant

    def _translation_units(self, files: list[Path], relevant: list[Path]) -> list[Path]:
        """Sources to parse: those that mention an API name, or include a consumer header that does."""
        headers = {p.name for p in relevant if p.suffix in HEADER_SUFFIXES}
        units = []
        for path in files:
            if path.suffix not in SOURCE_SUFFIXES:
                continue
            if path in self.sources:
                units.append(path)
                continue
            if headers and any(h.encode() in path.read_bytes() for h in headers):
                self.sources[path] = SourceFile.read(path)
                units.append(path)
        return units

    def _tokens(self, path: Path) -> list[Token]:
        if path not in self.tokens:
            self.tokens[path] = tokenize(self.sources[path].data)
        return self.tokens[path]

    # --- one translation unit ------------------------------------------------------------------------------

    def plan_unit(self, path: Path, consumer: set[str], handled: frozenset[str],
                  api: ApiScan | UnitApi | None) -> UnitResult:  # fmt: skip
        """One translation unit planned after units that planned the files `handled`, reporting its inclusions and
        uses to `api`; its findings come back as a value (`take` applies them). Raises InputError on syntax errors."""
        work = UnitWork(Plan(self.root, self.config.ruleset.from_version, self.config.ruleset.to_version,
                             options=self.options), handled, api)  # fmt: skip
        fresh = self._plan_unit(path, consumer, work)
        return UnitResult(work.findings, tuple(work.edits), frozenset(fresh))

    def take(self, result: UnitResult, plan: Plan) -> None:
        """A unit's result, after the units before it: into the plan, and into the state later units read."""
        plan.add_part(result.findings)
        self.edits += result.edits
        self.handled |= result.fresh

    def _plan_unit(self, path: Path, consumer: set[str], work: UnitWork) -> set[str]:
        """Plans one unit into `work`; returns the files it planned."""
        plan = work.findings
        parsed = parse(path, self.parse_config)
        report = FileReport(plan.relative(path), ReadMode.LIBCLANG)
        plan.file_reports.append(report)
        mine = consumer | {str(path)}
        if parsed.fatal:
            self._plan_unparsable(path, parsed, report, work)
            return {str(path)} - work.handled
        self._check_errors(parsed, mine, report)
        self._newer_than_from(parsed, mine - work.handled, work)
        in_unit = {str(path)} | {inc.include.name for inc in parsed.tu.get_includes() if inc.include is not None}
        data = {f: self.sources[Path(f)].data for f in mine & in_unit if Path(f) in self.sources}
        collected = Collector(self.rules, set(data), data).collect(parsed)
        if work.api is not None:
            own = in_unit & (self.consumer_names | {str(path)})
            work.api.includes(parsed.tu, own, parsed.flags)
            work.api.scan(parsed.tu, own, collected.walked)  # the collector's walk, not another one
        fresh = {f for f in data if f not in work.handled}
        facts = UnitFacts(self.sources, tuple(self.rules), self.options, plan.relative, collected, frozenset(fresh),
                          language_of(path))  # fmt: skip
        handlers = handlers_for()
        self._plan_calls(facts, work, handlers)
        self._plan_fields(facts, work, handlers)
        for handler in handlers.values():
            work.take(handler.unit(facts))
        in_macros = self._plan_macros(collected, fresh, work)
        self._plan_foreign_macros(collected, fresh, in_macros, plan)
        self._plan_undeclared(parsed, fresh, work)
        self._plan_value_uses(collected, fresh, plan)
        self._plan_skipped(parsed, fresh, plan)
        plan.advisories += rule_advisories.find(self.config.ruleset.advisories, collected, self.sources, fresh, plan,
                                                {r.id for r in self.rules})  # fmt: skip
        return fresh

    def _plan_unparsable(self, path: Path, parsed: ParsedFile, report: FileReport, work: UnitWork) -> None:
        """A unit libclang cannot parse (a header not found): its rules matched by name with tree-sitter. Complete
        (`NAMES_NOTHING`) when that matched nothing, the text names nothing the API diff lists, no header it misses
        is llama.cpp's and its includes into llama.cpp are settled (the include check needs the parse); else by name
        only, incomplete: the cross reference could not look at it."""
        plan = work.findings
        reason = "; ".join(self._where(p, path) for p in parsed.fatal[:3])
        found = len(plan.manual), len(plan.advisories)
        edits = plan_syntactic(self.sources[path], self.rules, self.options, plan)
        work.edits += edits
        matched = bool(edits) or (len(plan.manual), len(plan.advisories)) != found
        text = self.prescan.read(path, parsed.flags)
        llama_header = self.prescan.missing_llama_header(p.message for p in parsed.fatal)
        settled = self.prescan.includes_settled(text, parsed.flags)
        if not matched and llama_header is None and settled and not self._names_api(text):
            report.mode = ReadMode.NAMES_NOTHING
            report.reason = f"not parsed: names nothing the API diff lists (libclang could not parse it: {reason})"
            return
        report.mode = ReadMode.TREE_SITTER
        report.reason = reason
        plan.decisions.append(
            f"{report.path}: libclang could not parse it ({report.reason}); matched by name with tree-sitter, "
            "edits marked syntactic — check them, or give the include path (compile_commands.json / --flag)"
        )
        if work.api is not None:
            work.api.skip(str(path), f"libclang could not parse it ({report.reason})")

    def _check_errors(self, parsed: ParsedFile, mine: set[str], report: FileReport) -> None:
        errors = parsed.errors_in(mine)
        unexplained = [p for p in errors if not self._explained(p.message)]
        syntax = [p for p in unexplained if p.is_syntax]
        if syntax:
            listing = "; ".join(f"{_relative_to(p.file, self.root)}:{p.line}:{p.column}: {p.message}"
                                for p in syntax[:5])  # fmt: skip
            more = f" (and {len(syntax) - 5} more)" if len(syntax) > 5 else ""
            raise InputError(f"syntax errors in the consumer's code, fix them first (nothing was changed): "
                             f"{listing}{more}")  # fmt: skip
        report.problems = [str(p) for p in unexplained[:20]]

    def _where(self, problem: Problem, path: Path) -> str:
        """A diagnostic as the reader needs it: `'napi.h' file not found (line 1)`, or with the header it is in."""
        if Path(problem.file) == path:
            return f"{problem.message} (line {problem.line})"
        return f"{problem.message} ({_relative_to(problem.file, self.root)}:{problem.line})"

    def _newer_than_from(self, parsed: ParsedFile, files: set[str], work: UnitWork) -> None:
        """Names the --from tree does not declare that a later llama.cpp does (a field the target has, an old-API
        function a rule knows, added after --from): evidence that the code is newer than --from."""
        plan, api = work.findings, work.api
        target = api.target if api is not None else None  # a recorder without a cross reference has none
        new_symbols, new_fields = (api.new_symbols, api.new_fields) if api is not None else (set(), set())
        rule_names = {r.match.function for r in self.rules if r.match.function}
        seen = {(e["name"], e["file"], e["line"]) for e in plan.newer_than_from}
        for problem in parsed.errors_in(files):
            name, known = None, ""
            undeclared, member = UNDECLARED.search(problem.message), NO_MEMBER.search(problem.message)
            if undeclared:
                name = undeclared.group(1)
                if name in rule_names:
                    known = "an old-API name a rule rewrites (added after --from)"
                elif target is not None and name in new_symbols and name not in self.target_names:
                    known = f"declared at {target.new.provided}"
            elif member:
                name = member.group(1)
                key = f"{member.group(2)}.{name}"
                if target is not None and key in new_fields and name not in self.target_names:
                    known = f"a field of {member.group(2)} at {target.new.provided}"
            if not known or name is None:
                continue
            entry = {"name": name, "file": plan.relative(problem.file), "line": problem.line, "known": known}
            if (name, entry["file"], problem.line) not in seen:
                seen.add((name, entry["file"], problem.line))
                plan.newer_than_from.append(entry)

    def _explained(self, message: str) -> bool:
        """An error that only says the file already uses target-version names (a second run), or an old
        name this migration knows (undeclared at the source version: handled by name)."""
        quoted = set(QUOTED.findall(message))
        return bool(quoted & (self.target_names | self.names)) or any(n in message for n in self.target_names)

    # --- function calls ------------------------------------------------------------------------------------

    def _plan_calls(self, facts: UnitFacts, work: UnitWork, handlers: dict[str, Handler]) -> None:
        """Each resolved call to its rule kind's handler; then the template calls of all kinds composed at once (a
        call nested in another's arguments becomes part of the outer edit)."""
        for site in facts.collected.calls:
            if site.file not in facts.fresh or site.in_macro_body:
                continue
            span = self._span(site.file, site.name_offset)
            if span is None:
                self.manual(work.findings, site.file, site.name_offset, site.rule,
                            "the call could not be read token by token")  # fmt: skip
                continue
            work.take(handlers[site.rule.kind].call(site, span, facts))
        done = [handler.calls_done(facts) for handler in handlers.values()]
        for result in done:
            work.take(result)
        work.edits += compose_calls([job for result in done for job in result.calls], self._fix_values)

    def _span(self, file: str, offset: int) -> CallSpan | None:
        tokens = self._tokens(Path(file))
        index = index_at(tokens, offset)
        return call_at(tokens, index) if index is not None else None

    def _fix_values(self, rule: Rule) -> dict[str, str]:
        return option_values(rule, self.options)

    def manual(self, plan: Plan, file: str, offset: int, rule: Rule, message: str, kind: str = ACTION) -> None:
        source = self.sources[Path(file)]
        plan.manual.append(ManualItem(plan.relative(file), source.line_of(offset), rule.id, message, kind))
        plan.rules_used.setdefault(rule.id, rule.description)

    # --- struct fields -------------------------------------------------------------------------------------

    def _plan_fields(self, facts: UnitFacts, work: UnitWork, handlers: dict[str, Handler]) -> None:
        fields = facts.collected.fields
        folded = [s for s in fields if s.file in facts.fresh and "fold" in s.rule.params]
        if folded:  # several fields into one (fold.py)
            work.edits += plan_folds(folded, self.sources, work.findings, self.manual)
        for site in fields:
            if site.file in facts.fresh and "fold" not in site.rule.params:
                work.take(handlers[site.rule.kind].field(site, facts))

    # --- macros, undeclared names, non-call uses -------------------------------------------------------------

    def _plan_macros(self, collected: Collected, fresh: set[str], work: UnitWork) -> set[str]:
        """Old API calls in the consumer's macro definitions; returns the API names found there."""
        by_name = {r.match.function: r for r in self.rules if r.match.function}
        found: set[str] = set()
        for top in collected.macros:
            file = top.location.file.name
            if file not in fresh:
                continue
            source = self.sources[Path(file)]
            extent = top.extent
            tokens = tokenize(source.data, extent.start.offset, extent.end.offset)
            for index, token in enumerate(tokens[1:], start=1):
                rule = by_name.get(token.name)
                if rule is None:
                    continue
                confidence = SEMANTIC if token.name in collected.macro_expanded_names else SYNTACTIC
                self._macro_site(rule, top.spelling, tokens, index, source, confidence, work)
                found.add(token.name)
        return found

    def _plan_foreign_macros(self, collected: Collected, fresh: set[str], in_macros: set[str], plan: Plan) -> None:
        """An old API call that only appears through a macro defined outside the consumer's files: listed."""
        for site in collected.calls:
            if site.in_macro_body and site.file in fresh and site.rule.match.name not in in_macros:
                source = self.sources[Path(site.file)]
                tokens = tokenize(source.data, site.name_offset, min(len(source.data), site.name_offset + 256))
                macro = tokens[0].name if tokens else "?"
                self.manual(plan, site.file, site.name_offset, site.rule,
                             f"{site.rule.match.name} is called through macro {macro}, defined outside this tree; "
                             f"change the macro or stop using it here. {site.rule.description}")  # fmt: skip

    def _macro_site(self, rule: Rule, macro: str, tokens: list[Token], index: int, source: SourceFile,
                    confidence: str, work: UnitWork) -> None:  # fmt: skip
        plan = work.findings
        span = call_at(tokens, index)
        where = f"in the body of macro {macro}"
        if template_call(rule) and span is not None and span.args:
            job = CallJob(source, span, rule, inline_values(rule, source.text(*span.args[0])), confidence,
                          f"macro {macro} rewritten once, inline handle")  # fmt: skip
            work.edits += compose_calls([job], self._fix_values)
            handle = rule.handle.init.partition("(")[0]
            plan.decisions.append(f"{plan.relative(source.path)}:{source.line_of(span.name_start)}: macro {macro}: "
                                  f"definition rewritten once ({rule.id}, inline {handle})")  # fmt: skip
            return
        message = f"{rule.match.name} used {where}; rewrite the macro by hand. {rule.guidance or rule.description}"
        self.manual(plan, str(source.path), tokens[index].start, rule, message)

    def _plan_undeclared(self, parsed: ParsedFile, fresh: set[str], work: UnitWork) -> None:
        """Old names the source tree does not declare (e.g. llama_kv_self_seq_pos_min, added after b5421 and
        removed before b7785): rewritten by name, marked syntactic."""
        by_name = {r.match.function: r for r in self.rules if r.match.function}
        jobs = []
        for problem in parsed.problems:
            match = UNDECLARED.search(problem.message)
            if not match or match.group(1) not in by_name or problem.file not in fresh:
                continue
            rule = by_name[match.group(1)]
            source = self.sources[Path(problem.file)]
            offset = source.line_starts[problem.line - 1] + problem.column - 1
            span = self._span(problem.file, offset)
            if template_call(rule) and span is not None and span.args:
                jobs.append(CallJob(source, span, rule, inline_values(rule, source.text(*span.args[0])), SYNTACTIC,
                                    NOTE_UNDECLARED, undeclared=True))  # fmt: skip
            else:
                self.manual(work.findings, problem.file, offset, rule, rule.guidance or rule.description)
        work.edits += compose_calls(jobs, self._fix_values)

    def _plan_skipped(self, parsed: ParsedFile, fresh: set[str], plan: Plan) -> None:
        """Old API names in code the preprocessor skipped (`#if 0`, untaken #ifdef): listed, never edited."""
        by_name = {r.match.function: r for r in self.rules if r.match.function and not KIND_SPECS[r.kind].calls_apart}
        for file in sorted(fresh):
            source = self.sources[Path(file)]
            for start, end in skipped_ranges(parsed.tu, file):
                for token in tokenize(source.data, start, end):
                    rule = by_name.get(token.name)
                    if rule is None:
                        continue
                    first, last = source.line_of(start), source.line_of(end)
                    self.manual(
                        plan,
                        file,
                        token.start,
                        rule,
                        f"`{token.name}` in code the preprocessor skips here (lines {first}-{last}, e.g. "
                        "`#if 0`): not rewritten; migrate it by hand if that code is ever compiled",
                        REVIEW,
                    )

    def _plan_value_uses(self, collected: Collected, fresh: set[str], plan: Plan) -> None:
        called = {(site.file, site.name_offset) for site in collected.calls}
        for rule, file, offset in collected.value_refs:
            if file in fresh and (file, offset) not in called:
                source = self.sources[Path(file)]
                if source.data[offset : offset + len(rule.match.name)] != rule.match.name.encode():
                    continue  # inside a macro expansion: the macro pass handles the definition
                self.manual(plan, file, offset, rule,
                             f"{rule.match.name} is used as a value (not called); replace it by hand. "
                             f"{rule.guidance or rule.description}")  # fmt: skip

    # --- results ------------------------------------------------------------------------------------------

    def _final_edits(self) -> list[Edit]:
        unique: dict[tuple[Path, int, int, str], Edit] = {}
        for edit in self.edits:
            unique.setdefault((edit.file, edit.start, edit.end, edit.replacement), edit)
        edits = list(unique.values())
        by_file: dict[Path, list[Edit]] = {}
        for edit in edits:
            by_file.setdefault(edit.file, []).append(edit)
        for file_edits in by_file.values():
            try:
                check_overlaps(file_edits)
            except EditConflict as exc:
                raise InputError(f"rules produced overlapping edits ({exc}); nothing was changed") from exc
        return edits

    def _decisions(self, plan: Plan) -> None:
        for edit in plan.edits:
            for rule in (r for r in self.rules if r.id in edit.rules):
                plan.rules_used.setdefault(rule.id, rule.description)
        edited = {edit.rule for edit in plan.edits}
        for name, option in self.config.ruleset.options.items():
            said = option.decisions.get(self.options.get(name))
            if said and any(name in r.options and r.id in edited for r in self.rules):
                plan.decisions.insert(0, said)  # what the value chosen for a rule that was applied does
        if plan.newer_than_from:
            evidence = "; ".join(f"`{e['name']}` at {e['file']}:{e['line']} ({e['known']})"
                                 for e in plan.newer_than_from[:8])  # fmt: skip
            plan.decisions.append(
                f"The code looks newer than --from {plan.from_version}: it uses names the --from llama.cpp tree does "
                f"not declare — {evidence}. Was --from the release this code builds against? Re-run with that one; "
                "otherwise those uses are matched by name only."
            )


def __getattr__(name: str) -> str:
    """CLEAR_FALSE / CLEAR_TRUE, the plan's words on option clear_data, now data of the rules file that declares the
    option (`decisions`); kept importable for callers of the former constants."""
    wanted = {"CLEAR_FALSE": False, "CLEAR_TRUE": True}
    if name not in wanted:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for ruleset in rule_files():
        option = ruleset.options.get("clear_data")
        if option is not None and wanted[name] in option.decisions:
            return option.decisions[wanted[name]]
    raise AttributeError(f"no rules file says what option clear_data={wanted[name]} does")


# --- helpers ------------------------------------------------------------------------------------------------------


def _relative_to(file: str, root: Path) -> str:
    path = Path(file)
    return str(path.relative_to(root)) if path.is_relative_to(root) else file


def target_identifiers(rules: list[Rule]) -> set[str]:
    """What the rules write: identifiers in their fixes and value maps, the members they introduce or retype, the
    handles they hoist (the prose of an advisory a rule carries is not code)."""
    names: set[str] = set()
    for rule in rules:
        values = [v for key, v in rule.params.items() if key != "advisory"]
        for text in [rule.fix or "", *(str(v) for v in values)]:
            names |= set(re.findall(r"\b(llama_[a-z_]+|LLAMA_[A-Z_]+|[a-z_]+_type)\b", text))
        if isinstance(rule.params.get("member"), str):
            names.add(rule.params["member"])
        if KIND_SPECS[rule.kind].hoists_handle:
            names |= rule.handle.names
    return names


# --- plan cache: a warm `migrate plan` on unchanged inputs skips libclang ---------------------------------------------


def _include_dirs(flags: list[str]) -> list[Path]:
    """The -I / -iquote folders of a parse, in order (where a textual include is looked for)."""
    found = []
    for index, flag in enumerate(flags):
        if flag in ("-I", "-iquote") and index + 1 < len(flags):
            found.append(Path(flags[index + 1]))
        elif flag.startswith("-I") and len(flag) > 2:
            found.append(Path(flag[2:]))
    return found


# The consumer's root in a cached plan and in its key: `migrate run` plans a fresh copy of the consumer every run,
# and the same files in another folder make the same plan, their paths moved.
PLAN_ROOT_MARK = "@PLAN_ROOT@"


def _plan_root(config: EngineConfig) -> Path:
    return config.root.resolve() if config.root.is_dir() else config.root.resolve().parent


def _cache_key(config: EngineConfig) -> str:
    """Digest of everything a plan depends on: the engine's code and data, the rules and options, the llama.cpp
    tree, the flags, and every consumer file's path (relative to the consumer's root) and bytes."""
    root = _plan_root(config)
    digest = hashlib.sha256(_config_digest(config, root=root).encode())
    for path in consumer_files(config.root):
        digest.update(_unrooted(str(path), root).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def _unrooted(text: str, root: Path) -> str:
    """`text` (JSON, or a path) with the consumer's root written as PLAN_ROOT_MARK where a path starts with it."""
    escaped = json.dumps(str(root))[1:-1]
    if text == escaped:
        return PLAN_ROOT_MARK
    return text.replace(escaped + "/", PLAN_ROOT_MARK + "/").replace(f'"{escaped}"', f'"{PLAN_ROOT_MARK}"')


def _rooted(text: str, root: Path) -> str:
    return text.replace(PLAN_ROOT_MARK, json.dumps(str(root))[1:-1])


def _config_digest(config: EngineConfig, package: Path = fingerprint.PACKAGE, root: Path | None = None) -> str:
    """Digest of what a plan depends on besides the consumer's files: the code and data it is made by (every module
    of the rewrite package and all they import from this checkout, the rules files and templates: fingerprint.py),
    the rules file in use, the settings. `package`: the migrate package to take the code from."""
    digest = hashlib.sha256(fingerprint.plan_inputs_digest(package).encode())
    digest.update(config.ruleset.path.read_bytes())
    settings = {
        "tree": str(config.llama_tree.resolve()),
        "options": config.options,
        "enabled": sorted(config.enabled),
        "flags": list(config.extra_flags),
        "db": config.compile_db.entries if config.compile_db else None,
        "api": config.api.cache_key() if config.api else None,
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    digest.update((_unrooted(text, root) if root is not None else text).encode())  # the flags name the root
    return digest.hexdigest()


def build_plan(config: EngineConfig) -> Plan:
    """The plan for config; reused from config.plan_cache when nothing it depends on changed."""
    if config.plan_cache is None:
        return Engine(config).plan()
    started = time.monotonic()
    root = _plan_root(config)
    cached = config.plan_cache / f"{_cache_key(config)}.json"
    if cached.is_file():
        plan = Plan.from_cache(root, json.loads(_rooted(cached.read_text(encoding="utf-8"), root)))
        if plan is not None:
            plan.seconds = time.monotonic() - started
            plan.cached = True
            return plan
    plan = Engine(config).plan()
    text = _unrooted(json.dumps(plan.to_cache()), root)
    if json.dumps(str(root))[1:-1] in text:
        return plan  # the root appears in some other form (a message): that plan is this folder's alone, not stored
    config.plan_cache.mkdir(parents=True, exist_ok=True)
    temp = cached.with_suffix(f".{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(cached)
    return plan
