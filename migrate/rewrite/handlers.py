"""One handler per rule kind, in a registry keyed by kind: what the engine does with a site a rule matched.

The engine walks a translation unit once (collect.py) and hands each call site and field site to the handler of its
rule's kind; a handler turns it into edits, manual items or advisories. A kind declares what it needs from the rules
file in `rules.KIND_SPECS`; here is what it does. Every name of the API a handler reads or writes comes from its
rule (match, fix, params, handle) or, as a documented default, from defaults.py.

Handlers are made per translation unit (`handlers_for`), so a kind that gathers its sites before acting (the memory
handle, hoisted once per function) keeps that state for one unit only. They write through the engine
(`engine.edits`, `engine.manual`) at the time they run: units.py swaps the engine's state while it records a unit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

import clang.cindex as ci

from migrate.rewrite import advisories as advise
from migrate.rewrite.calls import CallJob
from migrate.rewrite.collect import CallSite, Collected, FieldSite
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
from migrate.rewrite.defaults import default_params_call
from migrate.rewrite.edits import SEMANTIC, Edit, SourceFile
from migrate.rewrite.memory import HoistPlanner, MemorySite
from migrate.rewrite.plan import REVIEW, Plan
from migrate.rewrite.rules import KIND_SPECS, HandleSpec, Rule
from migrate.rewrite.tokens import CallSpan, tokenize, value_after_equals

if TYPE_CHECKING:
    from migrate.rewrite.engine import Engine


class Handler:
    """What one rule kind does. The defaults do nothing: a kind overrides the sites it has."""

    kind: ClassVar[str] = ""
    # The call is rebuilt from the rule's fix over its arguments: a use in a macro body, or of a name the --from tree
    # does not declare, is rewritten too (the rule's handle written inline), not only listed.
    template_call: ClassVar[bool] = False

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def call(self, site: CallSite, span: CallSpan, plan: Plan) -> None:
        """A call that resolved to the rule's function, read token by token as `span`."""

    def calls_done(self, collected: Collected, plan: Plan) -> list[CallJob]:
        """After every call site of the unit: the template calls to compose (nested calls become one edit)."""
        return []

    def field(self, site: FieldSite, plan: Plan) -> None:
        """A use of the rule's struct field (a field folded with others is planned apart: fold.py)."""

    def unit(self, collected: Collected, fresh: set[str], plan: Plan, language: str) -> None:
        """Once per unit, after its call and field sites: what the kind finds by itself (set-ups, checks)."""

    def rules(self) -> list[Rule]:
        """The active rules of this kind."""
        return [r for r in self.engine.rules if r.kind == self.kind]


HANDLERS: dict[str, type[Handler]] = {}
H = TypeVar("H", bound=type[Handler])


def handler(kind: str) -> Callable[[H], H]:
    """Register a class as the handler of `kind` (a kind rules.KIND_SPECS declares)."""

    def register(cls: H) -> H:
        if kind not in KIND_SPECS or kind in HANDLERS:
            raise AssertionError(f"handler for {kind!r}: not a declared kind, or registered twice")
        cls.kind = kind
        HANDLERS[kind] = cls
        return cls

    return register


def handlers_for(engine: Engine) -> dict[str, Handler]:
    """Fresh handlers for one unit, in registration order (the order their results are gathered)."""
    return {kind: cls(engine) for kind, cls in HANDLERS.items()}


def template_call(rule: Rule) -> bool:
    return HANDLERS[rule.kind].template_call


# --- calls ---------------------------------------------------------------------------------------------------------


@handler("manual_call")
class ManualCall(Handler):
    """A call (or a field) only a person can migrate: listed at each use, never rewritten."""

    def call(self, site: CallSite, span: CallSpan, plan: Plan) -> None:
        if site.rule.match.when == "const_argument":
            const_args = [a for a in site.call.get_arguments() if _is_const_object(unwrap(a).type)]
            if not const_args:
                return
        self.engine.manual(plan, site.file, site.name_offset, site.rule, site.rule.guidance or "")

    def field(self, site: FieldSite, plan: Plan) -> None:
        self.engine.manual(plan, site.file, site.name_offset, site.rule, site.rule.guidance or "")


@handler("no_successor")
class NoSuccessor(Handler):
    """Removed with nothing to call instead: the statement removed (action remove_statement) and listed, or listed."""

    def call(self, site: CallSite, span: CallSpan, plan: Plan) -> None:
        engine = self.engine
        source = engine.sources[Path(site.file)]
        parent, _ = meaningful_parent(site.ancestors)
        is_statement = parent is not None and parent.kind == K.COMPOUND_STMT
        if site.rule.action == "remove_statement" and is_statement:
            start, end = _statement_bounds(source, span.name_start, span.end)
            engine.edits.append(source.make_edit(start, end, "", site.rule.id, SEMANTIC, "statement removed"))
            engine.manual(plan, site.file, site.name_offset, site.rule, f"removed: {site.rule.guidance}", REVIEW)
        else:
            engine.manual(plan, site.file, site.name_offset, site.rule, site.rule.guidance or "")


@handler("append_argument")
class AppendArgument(Handler):
    """A call rebuilt from the rule's fix template over its arguments."""

    template_call = True

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.jobs: list[CallJob] = []

    def call(self, site: CallSite, span: CallSpan, plan: Plan) -> None:
        self.jobs.append(CallJob(self.engine.sources[Path(site.file)], span, site.rule, {}, SEMANTIC, ""))

    def calls_done(self, collected: Collected, plan: Plan) -> list[CallJob]:
        return self.jobs


FunctionKey = tuple[str, int, HandleSpec]  # (file, the enclosing function or minus the site's offset, the handle)


@handler("memory_call")
class MemoryCall(Handler):
    """A call moved onto a handle taken from its first argument: the sites of one function share one hoisted handle
    where that is provably safe (memory.py), else each says the handle's initialiser inline."""

    template_call = True

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.sites: dict[FunctionKey, list[MemorySite]] = {}
        self.functions: dict[FunctionKey, ci.Cursor | None] = {}

    def call(self, site: CallSite, span: CallSpan, plan: Plan) -> None:
        source = self.engine.sources[Path(site.file)]
        function, _ = enclosing_function(site.ancestors)
        key = (site.file, function.hash if function is not None else -site.name_offset, site.rule.handle)
        self.functions[key] = function
        ctx_text = source.text(*span.args[0]) if span.args else "ctx"
        self.sites.setdefault(key, []).append(MemorySite(site, span, ctx_text))

    def calls_done(self, collected: Collected, plan: Plan) -> list[CallJob]:
        engine = self.engine
        jobs = []
        preferred = str(engine.options.get("memory_variable", "mem"))
        hoist = bool(engine.options.get("hoist_memory", True))
        for key, sites in self.sites.items():
            function, handle = self.functions[key], key[2]
            source = engine.sources[Path(key[0])]
            handles: dict[int, tuple[str, str]] = {}
            if function is not None and hoist:
                planner = HoistPlanner(source, collected.file_scope, preferred, sites[0].site.rule.id, handle,
                                       collected.subtree)  # fmt: skip
                result = planner.plan(function, sites)
                if result.insertion is not None:
                    engine.edits.append(result.insertion)
                handles = {offset: (h.expression, h.note) for offset, h in result.handles.items()}
                plan.decisions.append(f"{plan.relative(source.path)}: {function.spelling}(): memory handle "
                                      f"{result.reason}")  # fmt: skip
            for item in sites:
                why = "inline: not inside a function" if function is None else "inline: hoisting disabled"
                expression, note = handles.get(item.site.name_offset, (handle.inline(item.ctx_text), why))
                jobs.append(CallJob(source, item.span, item.site.rule, {"mem": expression, "ctx": item.ctx_text},
                                    SEMANTIC, note))  # fmt: skip
        return jobs


# --- struct fields ---------------------------------------------------------------------------------------------------


@handler("bool_field_to_enum")
class BoolFieldToEnum(Handler):
    """A field renamed and its assigned value mapped (true/false through params, any other value through the fix).
    An opt-in `params_insert` rule that sets the same new member to a `value` decides the value instead."""

    def field(self, site: FieldSite, plan: Plan) -> None:
        engine = self.engine
        source = engine.sources[Path(site.file)]
        member = site.rule.match.member or ""
        if source.data[site.name_offset : site.name_offset + len(member)] != member.encode():
            engine.manual(plan, site.file, site.name_offset, site.rule,
                          f"`{member}` is used inside a macro; {site.rule.description}")  # fmt: skip
            return
        value = _designated_value(source.data, site.name_offset + len(member))
        if site.member.kind == K.MEMBER_REF and value is not None:
            self._assignment(site, source, plan, value)
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
            engine.manual(plan, site.file, site.name_offset, site.rule,
                          f"`{member}` is read here; at the target read `{site.rule.params['member']}` "
                          f"(an enum, AUTO = -1) instead. {site.rule.description}")  # fmt: skip
            return
        value_span = span_of(kids[1])
        self._assignment(site, source, plan, (value_span.start, value_span.end))

    def _assignment(self, site: FieldSite, source: SourceFile, plan: Plan, value: tuple[int, int]) -> None:
        """`x.old = v` (or the designator `.old = v`): the member renamed, the value mapped."""
        rule = site.rule
        name_end = site.name_offset + len(rule.match.member or "")
        new_member = str(rule.params["member"])
        name_end = _absorb_padding(source.data, name_end, len(new_member) - len(rule.match.member or ""))
        self.engine.edits.append(source.make_edit(site.name_offset, name_end, new_member, rule.id))
        start, end = value
        text = source.text(start, end).strip()
        setter = self._setter(new_member)
        if setter is not None:
            replacement, rule_id = str(setter.params["value"]), setter.id
            plan.rules_used.setdefault(setter.id, setter.description)
        elif text in ("true", "1", "false", "0"):
            replacement, rule_id = str(rule.params["true" if text in ("true", "1") else "false"]), rule.id
        else:
            replacement, rule_id = str(rule.fix).format_map({"expr": text}), rule.id
        self.engine.edits.append(source.make_edit(start, end, replacement, rule_id))
        plan.rules_used.setdefault(rule.id, rule.description)

    def _setter(self, member: str) -> Rule | None:
        """An active rule that sets `member` to one value wherever it is set up (an opt-in params_insert)."""
        return next((r for r in self.engine.rules if "value" in r.params and r.params.get("member") == member), None)


# --- what a kind finds by itself --------------------------------------------------------------------------------------


@handler("decode_error")
class DecodeError(Handler):
    """Checks of the matched call's return code, rewritten into a switch on the code (decode.py); its calls are
    collected apart (Collected.decodes)."""

    def unit(self, collected: Collected, fresh: set[str], plan: Plan, language: str) -> None:
        engine = self.engine
        introduced: dict[tuple[int, int], set[str]] = {}
        for site in collected.decodes:
            if site.file not in fresh:
                continue
            source = engine.sources[Path(site.file)]
            function, _ = enclosing_function(site.ancestors)
            key = (function.extent.start.offset, function.extent.end.offset) if function is not None else (0, 0)
            names = introduced.setdefault(key, set())
            rewriter = DecodeRewriter(source, engine.options, language, collected.file_scope, names)
            result = rewriter.rewrite(site, function)
            names |= result.names
            line = source.line_of(site.offset)
            if result.edits:
                engine.edits += [e if not result.note else _with_note(e, result.note) for e in result.edits]
                plan.rules_used.setdefault(site.rule.id, site.rule.description)
            if result.advisory:
                plan.advisories.append(advise.Advisory(plan.relative(site.file), line, site.rule.id, result.advisory))


@handler("params_insert")
class ParamsInsert(Handler):
    """Opt-in: an assignment added where a params struct is set up; `params.advisory` is reported beside it."""

    def unit(self, collected: Collected, fresh: set[str], plan: Plan, language: str) -> None:
        inserts = self.rules()
        if not inserts:
            return
        engine = self.engine
        for var, ancestors, file in collected.params_vars:
            if file not in fresh:
                continue
            source = engine.sources[Path(file)]
            for rule in inserts:
                edit = params_insertion(rule, var, ancestors, source)
                if edit is None:
                    continue
                engine.edits.append(edit)
                plan.rules_used.setdefault(rule.id, rule.description)
                note = rule.params.get("advisory")
                if note:
                    plan.advisories.append(advise.Advisory(plan.relative(file), edit.line, note["id"],
                                                           note["message"]))  # fmt: skip


def params_insertion(rule: Rule, var: ci.Cursor, ancestors: tuple[ci.Cursor, ...],
                     source: SourceFile) -> Edit | None:  # fmt: skip
    """An opt-in assignment added to a set-up of the rule's struct (after `params.after = ...;`, or after the
    declaration and the assignments that follow it when `after` is `setup`)."""
    name = var.spelling
    statement_index = next((i for i in range(len(ancestors) - 1, -1, -1) if ancestors[i].kind == K.DECL_STMT), None)
    if statement_index is None or statement_index == 0 or ancestors[statement_index - 1].kind != K.COMPOUND_STMT:
        return None
    block, declaration = ancestors[statement_index - 1], ancestors[statement_index]
    setup_call = str(rule.params.get("setup_call") or default_params_call(rule.match.struct or ""))
    if setup_call not in source.text(*_bounds(declaration)):
        return None
    setup = _setup_statements(block, declaration, name, source)
    block_text = source.data[span_of(block).start : span_of(block).end]
    for member in [str(rule.params.get("member", "")), *rule.params.get("unless_set", [])]:
        pattern = rb"\b" + re.escape(name.encode()) + rb"\s*(\.|->)\s*" + re.escape(member.encode()) + rb"\b"
        if member and re.search(pattern, block_text):
            return None  # set explicitly already (or a second run)
    anchor = _anchor(str(rule.params["after"]), setup, source)
    if anchor is None:
        return None
    end = _statement_end(source, span_of(anchor).end)
    indent = source.indent_at(span_of(anchor).start)
    statement = _align_assignment(str(rule.fix).format_map({"params": name}), source.text(*_bounds(anchor)))
    return source.make_edit(end, end, source.newline + indent + statement, rule.id, SEMANTIC, "opt-in rule")


def _setup_statements(block: ci.Cursor, declaration: ci.Cursor, name: str, source: SourceFile) -> list[ci.Cursor]:
    """The declaration and the `name.member = ...` statements right after it."""
    siblings = children(block)
    position = next(i for i, kid in enumerate(siblings) if span_of(kid) == span_of(declaration))
    setup = [declaration]
    for kid in siblings[position + 1 :]:
        kid_tokens = tokenize(source.data, *_bounds(kid))
        if len(kid_tokens) >= 3 and kid_tokens[0].name == name and kid_tokens[1].text in (b".", b"->"):
            setup.append(kid)
        else:
            break
    return setup


def _anchor(after: str, setup: list[ci.Cursor], source: SourceFile) -> ci.Cursor | None:
    """The statement the insertion follows: the set-up's last, or its last assignment to `after` (None: no such
    assignment, or one that sets a single sequence: nothing to add)."""
    if after == "setup":
        return setup[-1]
    assigns = rb"(\.|->)\s*" + re.escape(after.encode()) + rb"\s*="
    matches = [s for s in setup[1:] if re.search(assigns, source.data[slice(*_bounds(s))])]
    if not matches:
        return None
    if re.search(rb"=\s*1\s*$", source.data[slice(*_bounds(matches[-1]))]):
        return None  # a single sequence: nothing to unify
    return matches[-1]


# --- helpers ---------------------------------------------------------------------------------------------------------


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


def _designated_value(data: bytes, name_end: int) -> tuple[int, int] | None:
    """The value after a designator `.member = value` (up to the `,` or `}` that ends it), or None."""
    tokens = tokenize(data, name_end, min(len(data), name_end + 4096))
    if not tokens or tokens[0].text != b"=":
        return None
    return value_after_equals(tokens)


def _absorb_padding(data: bytes, end: int, growth: int) -> int:
    """Where a longer name ends, given alignment padding after it (`p.old      = x` keeps its `=` column)."""
    spaces = 0
    while end + spaces < len(data) and data[end + spaces] == 0x20:
        spaces += 1
    if growth > 0 and spaces > growth and data[end + spaces : end + spaces + 1] == b"=":
        return end + growth
    return end


def _with_note(edit: Edit, note: str) -> Edit:
    return Edit(edit.file, edit.start, edit.end, edit.replacement, edit.rule, edit.line, edit.before,
                edit.confidence, note, edit.absorbed)  # fmt: skip


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


# Every kind a rules file may name has its handler: a kind declared without one would be skipped without a word.
if set(HANDLERS) != set(KIND_SPECS):
    raise AssertionError(f"rule kinds without a handler: {sorted(set(KIND_SPECS) - set(HANDLERS))}")
