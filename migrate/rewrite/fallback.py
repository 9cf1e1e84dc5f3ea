"""Syntactic fallback: when libclang cannot parse a file (a header it cannot find), match by name with tree-sitter.

Every edit made here is marked "syntactic" in the plan. It is deliberately narrower than the semantic path:
call sites only (tree-sitter's tree has no comments or strings in call nodes, and `#if 0` branches are
skipped), the memory handle always inline (no type information to prove a hoist safe), no statement removal,
no decode rewrite (each llama_decode becomes an advisory), and a name the file defines itself is left alone.
"""

from __future__ import annotations

import functools
from typing import Any

import tree_sitter_cpp
from tree_sitter import Language, Node, Parser

from migrate.rewrite.calls import CallJob, compose_calls, inline_values, option_values
from migrate.rewrite.edits import NOTE_MACRO_BODY, NOTE_UNPARSED, SYNTACTIC, Edit, SourceFile
from migrate.rewrite.handlers import template_call
from migrate.rewrite.plan import REVIEW, Advisory, ManualItem, Plan
from migrate.rewrite.rules import KIND_SPECS, Rule
from migrate.rewrite.tokens import call_at, index_at, tokenize


@functools.cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_cpp.language()))


def _walk(node: Node) -> list[Node]:
    nodes = []
    stack = [node]
    while stack:
        current = stack.pop()
        nodes.append(current)
        stack.extend(reversed(current.children))
    return nodes


def _disabled(node: Node) -> bool:
    """Inside the taken-never branch of `#if 0` (not its #else)."""
    child, parent = node, node.parent
    while parent is not None:
        if parent.type in ("preproc_if", "preproc_elif"):
            condition = parent.child_by_field_name("condition")
            alternative = parent.child_by_field_name("alternative")
            in_alternative = alternative is not None and alternative.start_byte <= child.start_byte
            if condition is not None and condition.text in (b"0", b"false") and not in_alternative:
                return True
        child, parent = parent, parent.parent
    return False


def _defined_names(nodes: list[Node]) -> set[str]:
    """Functions the file declares or defines itself (a user's own same-name function)."""
    names = set()
    for node in nodes:
        if node.type == "function_declarator":
            declarator = node.child_by_field_name("declarator")
            if declarator is not None and declarator.type == "identifier" and declarator.text:
                names.add(declarator.text.decode())
    return names


def plan_syntactic(source: SourceFile, rules: list[Rule], options: dict[str, Any], plan: Plan) -> list[Edit]:
    tree = _parser().parse(source.data)
    nodes = _walk(tree.root_node)
    own = _defined_names(nodes)
    by_name = {r.match.function: r for r in rules if r.match.function}
    checked = next((r for r in rules if KIND_SPECS[r.kind].calls_apart), None)  # return-code checks (decode.py)
    fields = {r.match.member: r for r in rules if KIND_SPECS[r.kind].folds and "fold" not in r.params}
    tokens = tokenize(source.data)
    jobs: list[CallJob] = []
    edits: list[Edit] = []
    relative = plan.relative(source.path)
    for node in nodes:
        if _disabled(node):
            continue
        if node.type == "call_expression":
            function = node.child_by_field_name("function")
            if function is None or function.type != "identifier" or not function.text:
                continue
            name = function.text.decode()
            line = source.line_of(function.start_byte)
            if name in own:
                continue
            if checked is not None and name == checked.match.function:
                plan.advisories.append(Advisory(relative, line, checked.id,
                                                f"file parsed syntactically: {name} error handling not "
                                                "rewritten; fix the include path and re-run"))  # fmt: skip
                continue
            rule = by_name.get(name)
            if rule is None:
                continue
            index = index_at(tokens, function.start_byte)
            span = call_at(tokens, index) if index is not None else None
            if template_call(rule) and span is not None and span.args:
                jobs.append(CallJob(source, span, rule, inline_values(rule, source.text(*span.args[0])), SYNTACTIC,
                                    NOTE_UNPARSED))  # fmt: skip
            elif rule.match.when:  # a condition on types (e.g. a const argument) cannot be checked by name
                plan.manual.append(ManualItem(relative, line, rule.id, f"(syntactic match, {rule.match.when} not "
                                              f"checked) {rule.guidance or ''}", REVIEW))  # fmt: skip
            else:
                plan.manual.append(ManualItem(relative, line, rule.id, f"(syntactic match) {rule.guidance or ''}"))
        elif node.type == "preproc_function_def":
            jobs += _macro_jobs(node, source, by_name, own)
        elif node.type == "field_identifier" and node.text and node.text.decode() in fields:
            edits += _field(node, source, fields[node.text.decode()])
    return edits + compose_calls(jobs, lambda rule: option_values(rule, options))


def _macro_jobs(node: Node, source: SourceFile, by_name: dict[str | None, Rule], own: set[str]) -> list[CallJob]:
    value = node.child_by_field_name("value")
    if value is None:
        return []
    tokens = tokenize(source.data, value.start_byte, value.end_byte)
    jobs = []
    for index, token in enumerate(tokens):
        rule = by_name.get(token.name)
        if rule is None or token.name in own or not template_call(rule):
            continue
        span = call_at(tokens, index)
        if span is not None and span.args:
            jobs.append(CallJob(source, span, rule, inline_values(rule, source.text(*span.args[0])), SYNTACTIC,
                                NOTE_MACRO_BODY))  # fmt: skip
    return jobs


def _field(node: Node, source: SourceFile, rule: Rule) -> list[Edit]:
    """`x.old = value` of a renamed field (one field, not folded): the name and the value mapped by name."""
    field_expression = node.parent
    assignment = field_expression.parent if field_expression is not None else None
    if assignment is None or assignment.type != "assignment_expression":
        return []
    left, right = assignment.child_by_field_name("left"), assignment.child_by_field_name("right")
    if left != field_expression or right is None or right.text is None:
        return []
    text = right.text.decode().strip()
    if text in ("true", "1", "false", "0"):
        value = str(rule.params["true" if text in ("true", "1") else "false"])
    else:
        value = str(rule.fix).format_map({"expr": text})
    note = NOTE_UNPARSED
    return [
        source.make_edit(node.start_byte, node.end_byte, str(rule.params["member"]), rule.id, SYNTACTIC, note),
        source.make_edit(right.start_byte, right.end_byte, value, rule.id, SYNTACTIC, note),
    ]
