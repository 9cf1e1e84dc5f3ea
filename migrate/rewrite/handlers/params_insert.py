"""Kind params_insert (opt-in): an assignment added where a params struct is set up."""

from __future__ import annotations

import re

import clang.cindex as ci

from migrate.rewrite.cursors import K, children, span_of
from migrate.rewrite.defaults import default_params_call
from migrate.rewrite.edits import SEMANTIC, Edit, SourceFile
from migrate.rewrite.handlers.base import Findings, Handler, HandlerResult, UnitFacts, handler
from migrate.rewrite.plan import Advisory
from migrate.rewrite.rules import Rule
from migrate.rewrite.tokens import tokenize


@handler("params_insert")
class ParamsInsert(Handler):
    """Opt-in: an assignment added where a params struct is set up; `params.advisory` is reported beside it."""

    def unit(self, facts: UnitFacts) -> HandlerResult:
        found = Findings(facts)
        inserts = facts.of_kind(self.kind)
        for var, ancestors, file in facts.collected.params_vars if inserts else []:
            if file not in facts.fresh:
                continue
            source = facts.source(file)
            for rule in inserts:
                edit = params_insertion(rule, var, ancestors, source)
                if edit is None:
                    continue
                found.edit(edit)
                found.used(rule)
                note = rule.params.get("advisory")
                if note:
                    found.advisory(Advisory(facts.relative(file), edit.line, note["id"], note["message"]))
        return found.result()


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
