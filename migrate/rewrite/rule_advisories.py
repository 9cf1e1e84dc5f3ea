"""Advisories written as data (a rules file's `advisories:`): code that compiles at the target and behaves
differently, found by the declarations it uses and reported with the file's message; never rewritten.

An advisory watches calls of functions (each `match` entry: function and header, and the arguments its conditions
read there) or uses of a field; `when` narrows it with the conditions advisories.py evaluates (an argument written
as a value, an integer, a pattern; the holding function bounding it or not). Each value read (an argument, each
element of a braced list, or the value assigned to a field) gets the first of the advisory's messages whose own
condition holds. One finding per reported id, line and message (`once: function`: per function). Findings come out
advisory by advisory in the file's order, uses in the order written. The walk reuses the nodes the collector
already visited (`Collected.nodes`): nothing is parsed or walked again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import clang.cindex as ci

from migrate.rewrite.advisories import Use, elements, holds, render
from migrate.rewrite.collect import Collected
from migrate.rewrite.cursors import K, children, meaningful_parent, operator_between, span_of
from migrate.rewrite.edits import SourceFile
from migrate.rewrite.plan import Advisory, Plan
from migrate.rewrite.rules import AdvisoryMatch, AdvisoryRule
from migrate.rewrite.tokens import tokenize


def _declared_in(decl: ci.Cursor, header: str) -> bool:
    return decl.location.file is not None and os.path.basename(decl.location.file.name) == header


@dataclass(frozen=True)
class Watch:
    """One advisory's entry for a declaration, and where the advisory stands in the file's order."""

    order: int
    advisory: AdvisoryRule
    entry: AdvisoryMatch


class Index:
    """The watched declarations of the advisories that run, by function name and by (struct, member)."""

    def __init__(self, rules: list[AdvisoryRule]) -> None:
        self.functions: dict[str, list[Watch]] = {}
        self.fields: dict[tuple[str | None, str | None], list[Watch]] = {}
        for order, rule in enumerate(rules):
            for entry in rule.matches:
                match = entry.match
                if match.function:
                    self.functions.setdefault(match.function, []).append(Watch(order, rule, entry))
                else:
                    self.fields.setdefault((match.struct, match.member), []).append(Watch(order, rule, entry))

    def watches(self, cursor: ci.Cursor) -> list[Watch]:
        """The entries a node is a use of (its declaration resolved, in the entry's header)."""
        kind = cursor.kind
        if kind == K.CALL_EXPR and self.functions:
            decl = cursor.referenced
            if decl is None or decl.kind != K.FUNCTION_DECL:
                return []
            candidates = self.functions.get(decl.spelling, [])
        elif kind in (K.MEMBER_REF_EXPR, K.MEMBER_REF) and self.fields:
            decl = cursor.referenced
            if decl is None or decl.kind != K.FIELD_DECL or decl.semantic_parent is None:
                return []
            candidates = self.fields.get((decl.semantic_parent.spelling, decl.spelling), [])
        else:
            return []
        return [w for w in candidates if _declared_in(decl, w.entry.match.header)]


def find(rules: list[AdvisoryRule], collected: Collected, sources: dict[Path, SourceFile], fresh: set[str],
         plan: Plan, active: set[str]) -> list[Advisory]:  # fmt: skip
    """Advisories of `rules` in the fresh files of one translation unit; an advisory whose `unless_enabled` names an
    active rule (by id, in `active`) is silent — that rule removes its cause."""
    running = [r for r in rules if not set(r.unless_enabled) & active]
    if not running:
        return []
    index = Index(running)
    buckets: list[list[Advisory]] = [[] for _ in running]
    seen: set[tuple[object, ...]] = set()
    for cursor, ancestors in collected.nodes:
        watches = index.watches(cursor)
        if not watches:
            continue
        span = span_of(cursor)
        if span.file not in fresh or Path(span.file) not in sources:
            continue
        source = sources[Path(span.file)]
        for watch in watches:
            use = _use(cursor, ancestors, source, watch)
            if use is None:
                continue
            for value in _values(use, watch):
                advisory = _report(watch, use, value, plan, seen)
                if advisory is not None:
                    buckets[watch.order].append(advisory)
    return [advisory for bucket in buckets for advisory in bucket]


def _use(cursor: ci.Cursor, ancestors: tuple[ci.Cursor, ...], source: SourceFile, watch: Watch) -> Use | None:
    """The use as the conditions read it; None for a call written through a macro when its arguments are read
    (their text is the macro's, not this call's)."""
    if cursor.kind == K.CALL_EXPR:
        if _reads_arguments(watch) and not _written_in_place(cursor, source):
            return None
        arguments = []
        for arg in cursor.get_arguments():
            extent = span_of(arg)
            arguments.append(source.text(extent.start, extent.end))
        return Use(cursor, ancestors, source, tuple(arguments))
    return Use(cursor, ancestors, source, assigned=_assigned_value(cursor, ancestors, source))


ARGUMENT_CONDITIONS = {"argument", "integers", "argument_count"}


def _reads_arguments(watch: Watch) -> bool:
    rule = watch.advisory
    conditions = set(rule.when).union(*(m.when for m in rule.messages))
    return bool(watch.entry.arguments) or bool(ARGUMENT_CONDITIONS & conditions)


def _written_in_place(call: ci.Cursor, source: SourceFile) -> bool:
    start = span_of(call).start
    name = call.referenced.spelling.encode()
    return source.data[start : start + len(name)] == name


def _values(use: Use, watch: Watch) -> list[str | None]:
    """The values the conditions read: each argument named (each element of a braced one), or the value assigned
    to a field; one None for a call whose conditions read no argument."""
    if use.cursor.kind != K.CALL_EXPR:
        return [use.assigned]
    argument = watch.advisory.when.get("argument")
    positions = watch.entry.arguments or ((int(argument),) if argument is not None else ())
    if not positions:
        return [None]
    return [item for index in positions if index < len(use.arguments) for item in elements(use.arguments[index])]


def _report(watch: Watch, use: Use, value: str | None, plan: Plan, seen: set[tuple[object, ...]]) -> Advisory | None:
    """The finding of the first message whose conditions hold, unless it was reported already."""
    rule = watch.advisory
    if not holds(rule.when, use, value):
        return None
    message = next((m for m in rule.messages if holds(m.when, use, value)), None)
    if message is None:
        return None
    reported = (watch.entry.rule or rule.id) if message.report_as == "rule" else rule.id
    span = span_of(use.cursor)
    line = use.source.line_of(span.start)
    text = render(message.message, use, value)
    function = use.function
    if message.once == "function" and function is not None:
        key: tuple[object, ...] = (rule.id, str(use.source.path), span_of(function).start)
    else:
        key = (reported, span.file, line, text)
    if key in seen:
        return None
    seen.add(key)
    return Advisory(plan.relative(span.file), line, reported, text)


def _assigned_value(cursor: ci.Cursor, ancestors: tuple[ci.Cursor, ...], source: SourceFile) -> str | None:
    """The text assigned to a field use (`x.f = v` or `.f = v`), or None when the use is not a write."""
    if cursor.kind == K.MEMBER_REF:
        end = span_of(cursor).start + len(cursor.spelling)
        tokens = tokenize(source.data, end, min(len(source.data), end + 1024))
        if not tokens or tokens[0].text != b"=":
            return None
        depth, pieces = 0, []
        for token in tokens[1:]:
            if token.text in (b"(", b"[", b"{"):
                depth += 1
            elif token.text in (b")", b"]", b"}"):
                if depth == 0:
                    break
                depth -= 1
            elif token.text in (b",", b";") and depth == 0:
                break
            pieces.append(token.name)
        return " ".join(pieces)
    parent, _ = meaningful_parent(ancestors)
    if parent is None or parent.kind != K.BINARY_OPERATOR:
        return None
    kids = children(parent)
    if len(kids) != 2 or span_of(kids[0]).end != span_of(cursor).end:
        return None
    if operator_between(source.data, kids[0], kids[1]) != "=":
        return None
    value = span_of(kids[1])
    return source.text(value.start, value.end)


__all__ = ["find"]
