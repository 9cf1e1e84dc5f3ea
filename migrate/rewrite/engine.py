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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clang.cindex as ci

from migrate import tree
from migrate.apidiff import ApiDiffError
from migrate.paths import data_dir
from migrate.rewrite import advisories as advise
from migrate.rewrite import rule_advisories
from migrate.rewrite.apicheck import ApiScan, ApiTarget, unavailable_section
from migrate.rewrite.collect import CallSite, Collected, Collector, FieldSite
from migrate.rewrite.cursors import (
    K,
    children,
    enclosing_function,
    meaningful_parent,
    operator_between,
    span_of,
    unwrap,
)
from migrate.rewrite.decode import DecodeRewriter
from migrate.rewrite.edits import (
    NOTE_UNDECLARED,
    SEMANTIC,
    SYNTACTIC,
    Edit,
    EditConflict,
    InputError,
    SourceFile,
    check_overlaps,
    render_range,
)
from migrate.rewrite.fold import plan_folds
from migrate.rewrite.memory import HoistPlanner, MemorySite, inline
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
from migrate.rewrite.plan import ACTION, REVIEW, FileReport, ManualItem, Plan
from migrate.rewrite.rules import Rule, RuleSet
from migrate.rewrite.tokens import CallSpan, Token, call_at, index_at, tokenize, value_after_equals

SOURCE_SUFFIXES = C_SUFFIXES | CXX_SUFFIXES
# Names that make a file worth parsing besides the rules' own (decode checks, params set-ups).
EXTRA_NAMES = {"llama_decode", "llama_context_params", "flash_attn", "n_seq_max"}
INCLUDES_LLAMA = re.compile(rb'^\s*#\s*include\s*[<"](?:[^">]*/)?(?:llama|common|sampling)\.h[">]', re.MULTILINE)
UNDECLARED = re.compile(r"undeclared (?:identifier|function) '([A-Za-z_][A-Za-z0-9_]*)'")
NO_MEMBER = re.compile(r"no member named '([A-Za-z_][A-Za-z0-9_]*)' in '(?:struct )?([A-Za-z_][A-Za-z0-9_:]*)'")
QUOTED = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)'")
# Identifiers of the target API that the rewritten code uses: errors about them in a re-parse against the
# source version's headers mean "already migrated", not a broken file.
FLASH_TYPE = "flash_attn_type"
TARGET_NAMES = {"llama_memory_t", "llama_get_memory", "flash_attn_type", "kv_unified", "llama_flash_attn_type"}
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


# --- the engine ------------------------------------------------------------------------------------------------


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.rules = config.ruleset.active(config.enabled)
        self.options = config.ruleset.resolve_options(config.options)
        self.root = config.root.resolve() if config.root.is_dir() else config.root.resolve().parent
        self.parse_config = ParseConfig(config.llama_tree, self.root, config.compile_db, config.extra_flags)
        self.names = {r.match.name for r in self.rules} | EXTRA_NAMES
        self.sources: dict[Path, SourceFile] = {}
        self.tokens: dict[Path, list[Token]] = {}
        self.edits: list[Edit] = []
        self.handled: set[str] = set()  # files whose sites were taken from an earlier translation unit
        self.target_names = TARGET_NAMES | _fix_identifiers(self.rules)
        self.api: ApiScan | None = None
        self.consumer_names: set[str] = set()  # every consumer file: the API check scans those a unit includes

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
        relevant = self._read_relevant(files, plan)
        units = self._translation_units(files, relevant)
        consumer = {str(p) for p in relevant}
        self._plan_units(units, consumer, plan)
        for path in relevant:
            if str(path) not in self.handled and path.suffix in HEADER_SUFFIXES:
                plan.file_reports.append(FileReport(plan.relative(path), "skipped",
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

    def _plan_units(self, units: list[Path], consumer: set[str], plan: Plan) -> None:
        """Every unit, as `_plan_unit` one after the other would: recorded in worker processes or taken from the
        per-unit cache, then merged in order (units.py); a unit whose record does not hold is planned here."""
        from migrate.rewrite import units as scale

        jobs = self.config.jobs
        if jobs is None and os.environ.get(JOBS_ENV, "").strip().isdigit():
            jobs = int(os.environ[JOBS_ENV])
        if jobs == 0:
            for unit in units:
                self._plan_unit(unit, consumer, plan)
            return
        flags = {u: self.parse_config.flags_for(u) for u in units}
        guesses = scale.guesses(units, {u: _include_dirs(f) for u, f in flags.items()}, self.consumer_names,
                                consumer, {str(p) for p in self.sources})  # fmt: skip
        cache = None
        if self.config.plan_cache is not None:
            cache = scale.UnitCache(self.config.plan_cache / "units", _config_digest(self.config))
        records: dict[Path, scale.UnitRecord] = {}
        if cache is not None:
            for unit in units:
                found = cache.get(unit, flags[unit], *guesses[unit], consumer)
                if found is not None:
                    records[unit] = found
        todo = [u for u in units if u not in records]
        jobs = min(len(todo), jobs or os.cpu_count() or 1)
        pools, futures = [], {}
        state = scale.fresh_scan(self.api)
        temp = None
        try:
            folder, temp, choice, runs = self._choose_preambles(units, todo)
            if choice is not None:  # built first: the workers forked next know them (more processes than CPUs:
                # running units beside the building was slower here)
                for group, preamble in scale.build_preambles(folder, choice, runs, frozenset(self.consumer_names),
                                                             jobs):  # fmt: skip
                    choice.add(group, preamble)
                self.parse_config.preambles = choice
            if jobs > 1:
                pools.append(scale.start_workers(self, consumer, [(u, *guesses[u]) for u in todo], jobs, futures))
            for unit in units:
                record = records.get(unit)
                made = record is None
                if record is None:
                    record = scale.wait(futures[unit]) if unit in futures else None
                if record is None:  # in this process (one job, or a worker that died)
                    record = scale.record_unit(self, unit, consumer, *guesses[unit], state)
                try:
                    scale.check(self, record)
                    scale.merge(self, record, plan)
                except scale.Stale:
                    self._plan_unit(unit, consumer, plan)
                    continue
                if made and cache is not None:
                    cache.put(unit, flags[unit], record, consumer)
        finally:
            for pool in pools:
                pool.shutdown(cancel_futures=True)
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

    def _plan_unit(self, path: Path, consumer: set[str], plan: Plan) -> None:
        parsed = parse(path, self.parse_config)
        report = FileReport(plan.relative(path), "libclang")
        plan.file_reports.append(report)
        mine = consumer | {str(path)}
        if parsed.fatal:
            from migrate.rewrite.fallback import plan_syntactic

            report.mode = "tree-sitter"
            report.reason = "; ".join(self._where(p, path) for p in parsed.fatal[:3])
            plan.decisions.append(
                f"{report.path}: libclang could not parse it ({report.reason}); matched by name with tree-sitter, "
                "edits marked syntactic — check them, or give the include path (compile_commands.json / --flag)"
            )
            self.edits += plan_syntactic(self.sources[path], self.rules, self.options, plan)
            self.handled.add(str(path))
            if self.api is not None:
                self.api.skip(str(path), f"libclang could not parse it ({report.reason})")
            return
        self._check_errors(parsed, mine, report)
        self._newer_than_from(parsed, mine - self.handled, plan)
        in_unit = {str(path)} | {inc.include.name for inc in parsed.tu.get_includes() if inc.include is not None}
        if self.api is not None:
            own = in_unit & (self.consumer_names | {str(path)})
            self.api.includes(parsed.tu, own, parsed.flags)
            self.api.scan(parsed.tu, own)
        data = {f: self.sources[Path(f)].data for f in mine & in_unit if Path(f) in self.sources}
        collected = Collector(self.rules, set(data), data).collect(parsed)
        fresh = {f for f in data if f not in self.handled}
        self._plan_calls(collected, fresh, plan)
        self._plan_fields(collected, fresh, plan)
        self._plan_decodes(collected, fresh, plan, language_of(path))
        self._plan_params(collected, fresh, plan)
        in_macros = self._plan_macros(parsed, collected, fresh, plan)
        self._plan_foreign_macros(collected, fresh, in_macros, plan)
        self._plan_undeclared(parsed, fresh, plan)
        self._plan_value_uses(collected, fresh, plan)
        self._plan_skipped(parsed, fresh, plan)
        if self.config.ruleset.builtin_advisories:  # the b5421 → b7785 advisories written in Python (advisories.py)
            unified = any(r.id == "kv-unified" for r in self.rules)
            plan.advisories += advise.find(collected, self.sources, fresh, plan, self.options, unified)
        plan.advisories += rule_advisories.find(self.config.ruleset.advisories, collected, self.sources, fresh, plan)
        self.handled |= fresh

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

    def _newer_than_from(self, parsed: ParsedFile, files: set[str], plan: Plan) -> None:
        """Names the --from tree does not declare that a later llama.cpp does (a field the target has, an old-API
        function a rule knows, added after --from): evidence that the code is newer than --from."""
        rule_names = {r.match.function for r in self.rules if r.match.function}
        seen = {(e["name"], e["file"], e["line"]) for e in plan.newer_than_from}
        for problem in parsed.errors_in(files):
            name, known = None, ""
            undeclared, member = UNDECLARED.search(problem.message), NO_MEMBER.search(problem.message)
            if undeclared:
                name = undeclared.group(1)
                if name in rule_names:
                    known = "an old-API name a rule rewrites (added after --from)"
                elif self.api is not None and name in self.api.new_symbols and name not in self.target_names:
                    known = f"declared at {self.api.target.new.provided}"
            elif member:
                name = member.group(1)
                key = f"{member.group(2)}.{name}"
                if self.api is not None and key in self.api.new_fields and name not in self.target_names:
                    known = f"a field of {member.group(2)} at {self.api.target.new.provided}"
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

    def _plan_calls(self, collected: Collected, fresh: set[str], plan: Plan) -> None:
        memory: dict[tuple[str, int], list[MemorySite]] = {}
        functions: dict[tuple[str, int], ci.Cursor | None] = {}
        jobs: list[CallJob] = []
        for site in collected.calls:
            if site.file not in fresh or site.in_macro_body:
                continue
            source = self.sources[Path(site.file)]
            span = self._span(site.file, site.name_offset)
            if span is None:
                self._manual(plan, site.file, site.name_offset, site.rule, "the call could not be read token by token")
                continue
            kind = site.rule.kind
            if kind == "memory_call":
                function, _ = enclosing_function(site.ancestors)
                key = (site.file, function.hash if function is not None else -site.name_offset)
                functions[key] = function
                ctx_text = source.text(*span.args[0]) if span.args else "ctx"
                memory.setdefault(key, []).append(MemorySite(site, span, ctx_text))
            elif kind == "no_successor":
                self._no_successor(site, span, plan)
            elif kind == "manual_call":
                self._manual_call(site, plan)
            elif kind == "append_argument":
                jobs.append(CallJob(source, span, site.rule, {}, SEMANTIC, ""))
        jobs += self._memory_jobs(memory, functions, collected, plan)
        self.edits += compose_calls(jobs, self._fix_values)

    def _span(self, file: str, offset: int) -> CallSpan | None:
        tokens = self._tokens(Path(file))
        index = index_at(tokens, offset)
        return call_at(tokens, index) if index is not None else None

    def _memory_jobs(self, memory: dict[tuple[str, int], list[MemorySite]],
                     functions: dict[tuple[str, int], ci.Cursor | None], collected: Collected,
                     plan: Plan) -> list[CallJob]:  # fmt: skip
        jobs = []
        file_scope, subtree = collected.file_scope, collected.subtree
        preferred = str(self.options.get("memory_variable", "mem"))
        hoist = bool(self.options.get("hoist_memory", True))
        for key, sites in memory.items():
            function = functions[key]
            source = self.sources[Path(key[0])]
            handles: dict[int, tuple[str, str]] = {}
            if function is not None and hoist:
                planner = HoistPlanner(source, file_scope, preferred, sites[0].site.rule.id, subtree)
                result = planner.plan(function, sites)
                if result.insertion is not None:
                    self.edits.append(result.insertion)
                handles = {offset: (h.expression, h.note) for offset, h in result.handles.items()}
                plan.decisions.append(f"{plan.relative(source.path)}: {function.spelling}(): memory handle "
                                      f"{result.reason}")  # fmt: skip
            for item in sites:
                why = "inline: not inside a function" if function is None else "inline: hoisting disabled"
                expression, note = handles.get(item.site.name_offset, (inline(item.ctx_text), why))
                jobs.append(CallJob(source, item.span, item.site.rule, {"mem": expression, "ctx": item.ctx_text},
                                    SEMANTIC, note))  # fmt: skip
        return jobs

    def _fix_values(self, rule: Rule) -> dict[str, str]:
        return option_values(rule, self.options)

    def _no_successor(self, site: CallSite, span: CallSpan, plan: Plan) -> None:
        source = self.sources[Path(site.file)]
        parent, _ = meaningful_parent(site.ancestors)
        is_statement = parent is not None and parent.kind == K.COMPOUND_STMT
        if site.rule.action == "remove_statement" and is_statement:
            start, end = _statement_bounds(source, span.name_start, span.end)
            self.edits.append(source.make_edit(start, end, "", site.rule.id, SEMANTIC, "statement removed"))
            self._manual(plan, site.file, site.name_offset, site.rule, f"removed: {site.rule.guidance}", REVIEW)
        else:
            self._manual(plan, site.file, site.name_offset, site.rule, site.rule.guidance or "")

    def _manual_call(self, site: CallSite, plan: Plan) -> None:
        when = site.rule.match.when
        if when == "const_argument":
            const_args = [a for a in site.call.get_arguments() if _is_const_object(unwrap(a).type)]
            if not const_args:
                return
        self._manual(plan, site.file, site.name_offset, site.rule, site.rule.guidance or "")

    def _manual(self, plan: Plan, file: str, offset: int, rule: Rule, message: str, kind: str = ACTION) -> None:
        source = self.sources[Path(file)]
        plan.manual.append(ManualItem(plan.relative(file), source.line_of(offset), rule.id, message, kind))
        plan.rules_used.setdefault(rule.id, rule.description)

    # --- struct fields -------------------------------------------------------------------------------------

    def _plan_fields(self, collected: Collected, fresh: set[str], plan: Plan) -> None:
        auto = next((r for r in self.rules if r.kind == "params_insert" and r.params.get("member") == FLASH_TYPE), None)
        folded = [s for s in collected.fields if s.file in fresh and "fold" in s.rule.params]
        if folded:  # several fields into one (fold.py)
            self.edits += plan_folds(folded, self.sources, plan, self._manual)
        for site in collected.fields:
            if site.file not in fresh or "fold" in site.rule.params:
                continue
            if site.rule.kind == "manual_call":  # a field only a person can migrate: listed at each use
                self._manual(plan, site.file, site.name_offset, site.rule, site.rule.guidance or "")
                continue
            source = self.sources[Path(site.file)]
            member = site.rule.match.member or ""
            if source.data[site.name_offset : site.name_offset + len(member)] != member.encode():
                self._manual(plan, site.file, site.name_offset, site.rule,
                             f"`{member}` is used inside a macro; {site.rule.description}")  # fmt: skip
                continue
            self._field_site(site, source, plan, auto)

    def _field_site(self, site: FieldSite, source: SourceFile, plan: Plan, auto: Rule | None) -> None:
        rule = site.rule
        value = _designated_value(source.data, site.name_offset + len(rule.match.member or ""))
        if site.member.kind == K.MEMBER_REF and value is not None:
            self._field_assignment(site, source, plan, auto, value)
            return
        parent, _ = meaningful_parent(site.ancestors)
        kids = children(parent) if parent is not None else []
        is_assignment = (
            parent is not None
            and parent.kind == K.BINARY_OPERATOR
            and len(kids) == 2
            and span_of(kids[0]).end == span_of(site.member).end
            and operator_between(source.data, kids[0], kids[1]) == "="
        )
        if not is_assignment:
            self._manual(plan, site.file, site.name_offset, rule,
                         f"`{rule.match.member}` is read here; at the target read `{rule.params['member']}` "
                         f"(an enum, AUTO = -1) instead. {rule.description}")  # fmt: skip
            return
        value_span = span_of(kids[1])
        self._field_assignment(site, source, plan, auto, (value_span.start, value_span.end))

    def _field_assignment(self, site: FieldSite, source: SourceFile, plan: Plan, auto: Rule | None,
                          value: tuple[int, int]) -> None:  # fmt: skip
        """`x.flash_attn = v` (or the designator `.flash_attn = v`): the member renamed, the value mapped."""
        rule = site.rule
        name_end = site.name_offset + len(rule.match.member or "")
        new_member = str(rule.params["member"])
        name_end = _absorb_padding(source.data, name_end, len(new_member) - len(rule.match.member or ""))
        self.edits.append(source.make_edit(site.name_offset, name_end, new_member, rule.id))
        start, end = value
        text = source.text(start, end).strip()
        if auto is not None:
            replacement, rule_id = str(auto.params["value"]), auto.id
            plan.rules_used.setdefault(auto.id, auto.description)
        elif text in ("true", "1", "false", "0"):
            replacement, rule_id = str(rule.params["true" if text in ("true", "1") else "false"]), rule.id
        else:
            replacement, rule_id = str(rule.fix).format_map({"expr": text}), rule.id
        self.edits.append(source.make_edit(start, end, replacement, rule_id))
        plan.rules_used.setdefault(rule.id, rule.description)

    # --- llama_decode checks -------------------------------------------------------------------------------

    def _plan_decodes(self, collected: Collected, fresh: set[str], plan: Plan, language: str) -> None:
        introduced: dict[tuple[int, int], set[str]] = {}
        for site in collected.decodes:
            if site.file not in fresh:
                continue
            source = self.sources[Path(site.file)]
            function, _ = enclosing_function(site.ancestors)
            key = (function.extent.start.offset, function.extent.end.offset) if function is not None else (0, 0)
            names = introduced.setdefault(key, set())
            rewriter = DecodeRewriter(source, self.options, language, collected.file_scope, names)
            result = rewriter.rewrite(site, function)
            names |= result.names
            line = source.line_of(site.offset)
            if result.edits:
                self.edits += [e if not result.note else _with_note(e, result.note) for e in result.edits]
                plan.rules_used.setdefault(site.rule.id, site.rule.description)
            if result.advisory:
                plan.advisories.append(advise.Advisory(plan.relative(site.file), line, site.rule.id, result.advisory))

    # --- opt-in llama_context_params additions -------------------------------------------------------------

    def _plan_params(self, collected: Collected, fresh: set[str], plan: Plan) -> None:
        inserts = [r for r in self.rules if r.kind == "params_insert"]
        if not inserts:
            return
        for var, ancestors, file in collected.params_vars:
            if file not in fresh:
                continue
            source = self.sources[Path(file)]
            for rule in inserts:
                edit = params_insertion(rule, var, ancestors, source, self._tokens(Path(file)), collected)
                if edit is not None:
                    self.edits.append(edit)
                    plan.rules_used.setdefault(rule.id, rule.description)
                    if rule.id == "kv-unified":  # what the opt-in costs, measured, beside where it is turned on
                        plan.advisories.append(advise.Advisory(plan.relative(file), edit.line, advise.UNIFIED_COST,
                                                               advise.UNIFIED_COST_WHY))  # fmt: skip

    # --- macros, undeclared names, non-call uses -------------------------------------------------------------

    def _plan_macros(self, parsed: ParsedFile, collected: Collected, fresh: set[str], plan: Plan) -> set[str]:
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
                self._macro_site(rule, top.spelling, tokens, index, source, confidence, plan)
                found.add(token.name)
        return found

    def _plan_foreign_macros(self, collected: Collected, fresh: set[str], in_macros: set[str], plan: Plan) -> None:
        """An old API call that only appears through a macro defined outside the consumer's files: listed."""
        for site in collected.calls:
            if site.in_macro_body and site.file in fresh and site.rule.match.name not in in_macros:
                source = self.sources[Path(site.file)]
                tokens = tokenize(source.data, site.name_offset, min(len(source.data), site.name_offset + 256))
                macro = tokens[0].name if tokens else "?"
                self._manual(plan, site.file, site.name_offset, site.rule,
                             f"{site.rule.match.name} is called through macro {macro}, defined outside this tree; "
                             f"change the macro or stop using it here. {site.rule.description}")  # fmt: skip

    def _macro_site(self, rule: Rule, macro: str, tokens: list[Token], index: int, source: SourceFile,
                    confidence: str, plan: Plan) -> None:  # fmt: skip
        span = call_at(tokens, index)
        where = f"in the body of macro {macro}"
        if rule.kind in ("memory_call", "append_argument") and span is not None and span.args:
            ctx_text = source.text(*span.args[0])
            job = CallJob(source, span, rule, {"mem": inline(ctx_text), "ctx": ctx_text}, confidence,
                          f"macro {macro} rewritten once, inline handle")  # fmt: skip
            self.edits += compose_calls([job], self._fix_values)
            plan.decisions.append(f"{plan.relative(source.path)}:{source.line_of(span.name_start)}: macro {macro}: "
                                  f"definition rewritten once ({rule.id}, inline llama_get_memory)")  # fmt: skip
            return
        message = f"{rule.match.name} used {where}; rewrite the macro by hand. {rule.guidance or rule.description}"
        self._manual(plan, str(source.path), tokens[index].start, rule, message)

    def _plan_undeclared(self, parsed: ParsedFile, fresh: set[str], plan: Plan) -> None:
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
            if rule.kind in ("memory_call", "append_argument") and span is not None and span.args:
                ctx_text = source.text(*span.args[0])
                jobs.append(CallJob(source, span, rule, {"mem": inline(ctx_text), "ctx": ctx_text}, SYNTACTIC,
                                    NOTE_UNDECLARED))  # fmt: skip
            else:
                self._manual(plan, problem.file, offset, rule, rule.guidance or rule.description)
        self.edits += compose_calls(jobs, self._fix_values)

    def _plan_skipped(self, parsed: ParsedFile, fresh: set[str], plan: Plan) -> None:
        """Old API names in code the preprocessor skipped (`#if 0`, untaken #ifdef): listed, never edited."""
        by_name = {r.match.function: r for r in self.rules if r.match.function and r.kind != "decode_error"}
        for file in sorted(fresh):
            source = self.sources[Path(file)]
            for start, end in skipped_ranges(parsed.tu, file):
                for token in tokenize(source.data, start, end):
                    rule = by_name.get(token.name)
                    if rule is None:
                        continue
                    first, last = source.line_of(start), source.line_of(end)
                    self._manual(
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
                self._manual(plan, file, offset, rule,
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
        memory_rules = {r.id for r in self.rules if r.kind == "memory_call"}
        if any(edit.rule in memory_rules for edit in plan.edits):
            clear = bool(self.options.get("clear_data", False))
            plan.decisions.insert(0, CLEAR_TRUE if clear else CLEAR_FALSE)
        if plan.newer_than_from:
            evidence = "; ".join(f"`{e['name']}` at {e['file']}:{e['line']} ({e['known']})"
                                 for e in plan.newer_than_from[:8])  # fmt: skip
            plan.decisions.append(
                f"The code looks newer than --from {plan.from_version}: it uses names the --from llama.cpp tree does "
                f"not declare — {evidence}. Was --from the release this code builds against? Re-run with that one; "
                "otherwise those uses are matched by name only."
            )


CLEAR_FALSE = (
    "llama_memory_clear(mem, false): metadata only (the default of option clear_data) — the cells are marked free, "
    "which is all a later decode needs, and the cost of zeroing the whole K/V buffer (which the old "
    "llama_kv_self_clear always paid) is saved. llama.cpp's maintainers noted (PR 14030) that stale data in padded "
    "K/V tensors can cause small floating-point differences in attention, so check that repeated generation gives "
    "the same output; set option clear_data=true to zero the buffers as before."
)
CLEAR_TRUE = (
    "llama_memory_clear(mem, true): metadata and K/V buffers zeroed, as the old llama_kv_self_clear did "
    "(option clear_data=true); costs time proportional to the cache size on every clear."
)


# --- call jobs: one edit per call, nested calls composed -----------------------------------------------------------


@dataclass
class CallJob:
    source: SourceFile
    span: CallSpan
    rule: Rule
    values: dict[str, str]
    confidence: str
    note: str


def compose_calls(jobs: list[CallJob], option_values: Callable[[Rule], dict[str, str]]) -> list[Edit]:
    """One edit per call, innermost first, so a call nested in another's arguments is part of the outer edit."""
    produced: list[Edit] = []
    for job in sorted(jobs, key=lambda j: j.span.end - j.span.name_start):
        data = job.source.data
        same_file = [e for e in produced if e.file == job.source.path]
        args = [render_range(data, start, end, same_file) for start, end in job.span.args]
        rest = render_range(data, job.span.args[1][0], job.span.args[-1][1], same_file) if len(args) > 1 else ""
        values = {"name": job.rule.match.name, "args": args, "rest": rest, **option_values(job.rule), **job.values}
        replacement = str(job.rule.fix).format_map(values)
        if len(args) > 1:
            replacement = replacement.replace(", )", ")")
        else:
            replacement = replacement.replace(", )", ")").replace("(, ", "(")
        start, end = job.span.name_start, job.span.end
        inner = [e for e in same_file if start <= e.start and e.end <= end]
        absorbed = tuple(rule for e in inner for rule in e.rules)
        produced = [e for e in produced if e not in inner]
        produced.append(job.source.make_edit(start, end, replacement, job.rule.id, job.confidence, job.note, absorbed))
    return produced


# --- helpers ------------------------------------------------------------------------------------------------------


def option_values(rule: Rule, options: dict[str, Any]) -> dict[str, str]:
    """The rule's options as C/C++ source text for its fix template (booleans as true/false)."""
    values = {}
    for name in rule.options:
        value = options[name]
        values[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return values


def _relative_to(file: str, root: Path) -> str:
    path = Path(file)
    return str(path.relative_to(root)) if path.is_relative_to(root) else file


def _fix_identifiers(rules: list[Rule]) -> set[str]:
    names: set[str] = set()
    for rule in rules:
        texts = [rule.fix or ""] + [str(v) for v in rule.params.values()]
        for text in texts:
            names |= set(re.findall(r"\b(llama_[a-z_]+|LLAMA_[A-Z_]+|[a-z_]+_type)\b", text))
    return names


def _designated_value(data: bytes, name_end: int) -> tuple[int, int] | None:
    """The value after a designator `.member = value` (up to the `,` or `}` that ends it), or None."""
    tokens = tokenize(data, name_end, min(len(data), name_end + 4096))
    if not tokens or tokens[0].text != b"=":
        return None
    return value_after_equals(tokens)


def _absorb_padding(data: bytes, end: int, growth: int) -> int:
    """Where a longer name ends, given alignment padding after it (`p.flash_attn      = x` keeps its `=` column)."""
    spaces = 0
    while end + spaces < len(data) and data[end + spaces] == 0x20:
        spaces += 1
    if growth > 0 and spaces > growth and data[end + spaces : end + spaces + 1] == b"=":
        return end + growth
    return end


def _with_note(edit: Edit, note: str) -> Edit:
    return Edit(edit.file, edit.start, edit.end, edit.replacement, edit.rule, edit.line, edit.before,
                edit.confidence, note, edit.absorbed)  # fmt: skip


def _is_const_object(type_: ci.Type) -> bool:
    if type_.kind == ci.TypeKind.LVALUEREFERENCE:
        type_ = type_.get_pointee()
    return type_.is_const_qualified() and type_.kind not in (ci.TypeKind.POINTER,)


def _statement_bounds(source: SourceFile, start: int, end: int) -> tuple[int, int]:
    """The statement `call;` to remove: with its whole line when nothing else is on it."""
    data = source.data
    tokens = tokenize(data, end, min(len(data), end + 32))
    if tokens and tokens[0].text == b";":
        end = tokens[0].end
    line_start = source.line_start(start)
    line_end = data.find(b"\n", end)
    line_end = len(data) if line_end < 0 else line_end + 1
    rest = data[end:line_end].strip()
    # a trailing `// comment` describes the removed call: it goes with it
    if data[line_start:start].strip() == b"" and (rest == b"" or rest.startswith(b"//")):
        return line_start, line_end
    return start, end


def params_insertion(rule: Rule, var: ci.Cursor, ancestors: tuple[ci.Cursor, ...], source: SourceFile,
                     tokens: list[Token], collected: Collected) -> Edit | None:  # fmt: skip
    """An opt-in assignment added to a llama_context_params set-up (after `params.after = ...;`, or after the
    declaration and the assignments that follow it when `after` is `setup`)."""
    name = var.spelling
    statement_index = next((i for i in range(len(ancestors) - 1, -1, -1) if ancestors[i].kind == K.DECL_STMT), None)
    if statement_index is None or statement_index == 0 or ancestors[statement_index - 1].kind != K.COMPOUND_STMT:
        return None
    block, declaration = ancestors[statement_index - 1], ancestors[statement_index]
    decl_text = source.text(*_bounds(declaration))
    if "llama_context_default_params" not in decl_text:
        return None
    siblings = children(block)
    position = next(i for i, kid in enumerate(siblings) if span_of(kid) == span_of(declaration))
    setup = [declaration]
    for kid in siblings[position + 1 :]:
        kid_tokens = tokenize(source.data, *_bounds(kid))
        if len(kid_tokens) >= 3 and kid_tokens[0].name == name and kid_tokens[1].text in (b".", b"->"):
            setup.append(kid)
        else:
            break
    block_text = source.data[span_of(block).start : span_of(block).end]
    for member in [str(rule.params.get("member", "")), *rule.params.get("unless_set", [])]:
        pattern = rb"\b" + re.escape(name.encode()) + rb"\s*(\.|->)\s*" + re.escape(member.encode()) + rb"\b"
        if member and re.search(pattern, block_text):
            return None  # set explicitly already (or a second run)
    after = str(rule.params["after"])
    anchor = setup[-1]
    if after != "setup":
        assigns = rb"(\.|->)\s*" + re.escape(after.encode()) + rb"\s*="
        matches = [s for s in setup[1:] if re.search(assigns, source.data[slice(*_bounds(s))])]
        if not matches:
            return None
        anchor = matches[-1]
        if re.search(rb"=\s*1\s*$", source.data[slice(*_bounds(anchor))]):
            return None  # a single sequence: nothing to unify
    end = _statement_end(source, span_of(anchor).end)
    indent = source.indent_at(span_of(anchor).start)
    statement = _align_assignment(str(rule.fix).format_map({"params": name}), source.text(*_bounds(anchor)))
    text = source.newline + indent + statement
    return source.make_edit(end, end, text, rule.id, SEMANTIC, "opt-in rule")


def _align_assignment(statement: str, neighbour: str) -> str:
    """`a.b = c;` padded so its `=` lines up with an aligned neighbour (`a.n_seq_max       = ...`)."""
    match = re.match(r"^([^=]*?\S)(\s{2,})=", neighbour)
    left, sep, right = statement.partition(" = ")
    if match is None or not sep:
        return statement
    width = len(match.group(1)) + len(match.group(2))
    return f"{left.ljust(width - 1)} = {right}" if len(left) < width - 1 else statement


def _bounds(cursor: ci.Cursor) -> tuple[int, int]:
    span = span_of(cursor)
    return span.start, span.end


def _statement_end(source: SourceFile, end: int) -> int:
    tokens = tokenize(source.data, end, min(len(source.data), end + 32))
    return tokens[0].end if tokens and tokens[0].text == b";" else end


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


def _cache_key(config: EngineConfig) -> str:
    """Digest of everything a plan depends on: the engine's code and data, the rules and options, the llama.cpp
    tree, the flags, and every consumer file's bytes."""
    digest = hashlib.sha256(_config_digest(config).encode())
    for path in consumer_files(config.root):
        digest.update(str(path).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def _config_digest(config: EngineConfig) -> str:
    """Digest of what a plan depends on besides the consumer's files."""
    digest = hashlib.sha256()
    engine_dir = Path(__file__).resolve().parent
    for path in sorted(engine_dir.glob("*.py")) + sorted(data_dir("templates").glob("*.j2")):
        digest.update(path.read_bytes())
    digest.update(config.ruleset.path.read_bytes())
    settings = {
        "tree": str(config.llama_tree.resolve()),
        "options": config.options,
        "enabled": sorted(config.enabled),
        "flags": list(config.extra_flags),
        "db": config.compile_db.entries if config.compile_db else None,
        "api": config.api.cache_key() if config.api else None,
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def build_plan(config: EngineConfig) -> Plan:
    """The plan for config; reused from config.plan_cache when nothing it depends on changed."""
    if config.plan_cache is None:
        return Engine(config).plan()
    started = time.monotonic()
    root = config.root.resolve() if config.root.is_dir() else config.root.resolve().parent
    cached = config.plan_cache / f"{_cache_key(config)}.json"
    if cached.is_file():
        plan = Plan.from_cache(root, json.loads(cached.read_text(encoding="utf-8")))
        if plan is not None:
            plan.seconds = time.monotonic() - started
            plan.cached = True
            return plan
    plan = Engine(config).plan()
    config.plan_cache.mkdir(parents=True, exist_ok=True)
    temp = cached.with_suffix(".tmp")
    temp.write_text(json.dumps(plan.to_cache()), encoding="utf-8")
    temp.replace(cached)
    return plan
