"""Advisories written as data (a rules file's `advisories:`): code that compiles at the target and behaves
differently, found by the declaration it uses and reported with the file's message; never rewritten.

An advisory matches a call of `match.function` (declared in `match.header`), or a use of the field `match.field`;
`when` narrows it: `argument: i` + `equals: v` (the i-th argument is written as v), `assigned: true` (the field is
written: an assignment or a designator), `equals: v` for a field (the value assigned is written as v). One advisory
per rule and line. The walk reuses the nodes the collector already visited (`Collected.nodes`): nothing is parsed
or walked again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import clang.cindex as ci

from migrate.rewrite.collect import Collected
from migrate.rewrite.cursors import K, children, meaningful_parent, operator_between, span_of
from migrate.rewrite.edits import SourceFile
from migrate.rewrite.plan import Advisory, Plan
from migrate.rewrite.rules import AdvisoryRule
from migrate.rewrite.tokens import tokenize


def _declared_in(decl: ci.Cursor, header: str) -> bool:
    return decl.location.file is not None and os.path.basename(decl.location.file.name) == header


def _normal(text: str) -> str:
    return "".join(text.split())


def _same(written: str, wanted: Any) -> bool:
    wanted_text = ("true" if wanted else "false") if isinstance(wanted, bool) else str(wanted)
    written = _normal(written)
    while written.startswith("(") and written.endswith(")"):
        written = written[1:-1]
    return written == _normal(wanted_text)


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


def _argument(call: ci.Cursor, index: int, source: SourceFile) -> str | None:
    args = list(call.get_arguments())
    if index >= len(args):
        return None
    extent = span_of(args[index])
    return source.text(extent.start, extent.end)


def find(rules: list[AdvisoryRule], collected: Collected, sources: dict[Path, SourceFile], fresh: set[str],
         plan: Plan) -> list[Advisory]:  # fmt: skip
    """Advisories of `rules` in the fresh files of one translation unit."""
    if not rules:
        return []
    by_function = {r.match.function: r for r in rules if r.match.function}
    by_field = {(r.match.struct, r.match.member): r for r in rules if r.match.field}
    found: dict[tuple[str, int, str], Advisory] = {}
    for cursor, ancestors in collected.nodes:
        kind = cursor.kind
        rule: AdvisoryRule | None = None
        if kind == K.CALL_EXPR and by_function:
            decl = cursor.referenced
            if decl is None or decl.kind != K.FUNCTION_DECL:
                continue
            rule = by_function.get(decl.spelling)
            if rule is None or not _declared_in(decl, rule.match.header):
                continue
        elif kind in (K.MEMBER_REF_EXPR, K.MEMBER_REF) and by_field:
            decl = cursor.referenced
            if decl is None or decl.kind != K.FIELD_DECL or decl.semantic_parent is None:
                continue
            rule = by_field.get((decl.semantic_parent.spelling, decl.spelling))
            if rule is None or not _declared_in(decl, rule.match.header):
                continue
        else:
            continue
        span = span_of(cursor)
        if span.file not in fresh or Path(span.file) not in sources:
            continue
        source = sources[Path(span.file)]
        if not _holds(rule, cursor, ancestors, source):
            continue
        line = source.line_of(span.start)
        advisory = Advisory(plan.relative(span.file), line, rule.id, rule.message)
        found.setdefault((advisory.file, line, rule.id), advisory)
    return list(found.values())


def _holds(rule: AdvisoryRule, cursor: ci.Cursor, ancestors: tuple[ci.Cursor, ...], source: SourceFile) -> bool:
    when = rule.when
    if not when:
        return True
    if rule.match.function:
        if "argument" in when:
            written = _argument(cursor, int(when["argument"]), source)
            return written is not None and ("equals" not in when or _same(written, when["equals"]))
        return True
    value = _assigned_value(cursor, ancestors, source)
    if when.get("assigned") and value is None:
        return False
    if "equals" in when:
        return value is not None and _same(value, when["equals"])
    return True


__all__ = ["find"]
