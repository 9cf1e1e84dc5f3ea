"""Walk one translation unit and collect the sites the active rules care about.

Only what lies in the consumer's files is walked (never llama.cpp's or the system's headers). A call counts
only when libclang resolves it to the declaration the rule names, in the header the rule names: a user's own
function of the same name, a comment, a string or an `#if 0` block never reach a rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import clang.cindex as ci

from migrate.apidiff.xref import top_level
from migrate.rewrite.cursors import FUNCTION_KINDS, K, span_of, walk
from migrate.rewrite.edits import SEMANTIC
from migrate.rewrite.parse import ParsedFile
from migrate.rewrite.rules import KIND_SPECS, Rule


@dataclass
class CallSite:
    rule: Rule
    call: ci.Cursor
    ancestors: tuple[ci.Cursor, ...]
    file: str
    name_offset: int  # where the callee name is written; for a macro body: the expansion point
    in_macro_body: bool
    confidence: str = SEMANTIC


@dataclass
class FieldSite:
    rule: Rule
    member: ci.Cursor
    ancestors: tuple[ci.Cursor, ...]
    file: str
    name_offset: int


@dataclass
class DecodeSite:
    rule: Rule
    call: ci.Cursor
    ancestors: tuple[ci.Cursor, ...]
    file: str
    offset: int


@dataclass
class Collected:
    calls: list[CallSite] = field(default_factory=list)
    fields: list[FieldSite] = field(default_factory=list)
    decodes: list[DecodeSite] = field(default_factory=list)
    params_vars: list[tuple[ci.Cursor, tuple[ci.Cursor, ...], str]] = field(default_factory=list)
    value_refs: list[tuple[Rule, str, int]] = field(default_factory=list)  # API names used not as a callee
    macro_expanded_names: set[str] = field(default_factory=set)  # rule names resolved inside macro expansions
    other_calls: list[tuple[str, str, int, str]] = field(default_factory=list)  # (name, file, offset, decl file)
    macros: list[ci.Cursor] = field(default_factory=list)  # macro definitions in the consumer's files
    file_scope: set[str] = field(default_factory=set)  # every name declared at file scope, headers included
    # Every node walked, in preorder with its ancestors: later passes read subtrees from here instead of
    # asking libclang again (a big function is walked once, not once per question).
    nodes: list[tuple[ci.Cursor, tuple[ci.Cursor, ...]]] = field(default_factory=list)
    # The same nodes by the file of the top-level declaration they are under (every consumer file of the unit has an
    # entry): the API cross reference reads them instead of walking the unit again.
    walked: dict[str, list[ci.Cursor]] = field(default_factory=dict)
    _starts: dict[tuple[int, int, int], int] = field(default_factory=dict)

    def file_scope_names(self) -> set[str]:
        return self.file_scope

    def subtree(self, cursor: ci.Cursor) -> list[tuple[ci.Cursor, tuple[ci.Cursor, ...]]]:
        """The walked nodes under cursor (itself included), or a fresh walk if it was not walked."""
        key = _node_key(cursor)
        start = self._starts.get(key)
        if start is None:
            return list(walk(cursor))
        depth = len(self.nodes[start][1])
        end = start + 1
        while end < len(self.nodes) and len(self.nodes[end][1]) > depth:
            end += 1
        return self.nodes[start:end]


def _node_key(cursor: ci.Cursor) -> tuple[int, int, int]:
    extent = cursor.extent
    return cursor.kind.value, extent.start.offset, extent.end.offset




def _header_matches(decl: ci.Cursor | None, header: str) -> bool:
    return decl is not None and decl.location.file is not None and os.path.basename(decl.location.file.name) == header


def _struct_of(field_decl: ci.Cursor) -> str:
    parent = field_decl.semantic_parent
    return parent.spelling if parent is not None else ""


class Collector:
    def __init__(self, rules: list[Rule], consumer_files: set[str], data: dict[str, bytes]) -> None:
        self.consumer_files = consumer_files
        self.data = data  # file → original bytes, to tell macro-body text from text written in place
        apart = [r for r in rules if KIND_SPECS[r.kind].calls_apart]
        self.function_rules = {r.match.function: r for r in rules if r.match.function and r not in apart}
        self.decode_rule = apart[0] if apart else None  # its calls are Collected.decodes
        # structs whose variables are set-ups a rule adds to (params_insert)
        self.setup_structs = tuple({r.match.struct for r in rules if KIND_SPECS[r.kind].setups and r.match.struct})
        self.field_rules = {(r.match.struct, r.match.member): r for r in rules if r.match.field}

    def collect(self, parsed: ParsedFile) -> Collected:
        found = Collected()
        found.file_scope |= parsed.scope  # names a precompiled preamble declared (its unit does not list them)
        found.walked = {name: [] for name in self.consumer_files}
        for top, kind, location_file in top_level(parsed.tu).ordered:  # macro expansions and #includes left out
            found.file_scope.add(top.spelling)
            if location_file not in self.consumer_files:
                continue
            if kind == K.MACRO_DEFINITION:
                found.macros.append(top)
                continue
            walked = found.walked[location_file]
            for cursor, ancestors in walk(top):
                walked.append(cursor)
                if cursor.kind in FUNCTION_KINDS or cursor.kind == K.LAMBDA_EXPR:
                    found._starts[_node_key(cursor)] = len(found.nodes)
                found.nodes.append((cursor, ancestors))
                self._visit(cursor, ancestors, found)
        return found

    def _visit(self, cursor: ci.Cursor, ancestors: tuple[ci.Cursor, ...], found: Collected) -> None:
        kind = cursor.kind
        if kind == K.CALL_EXPR:
            self._visit_call(cursor, ancestors, found)
        elif kind == K.DECL_REF_EXPR:
            decl = cursor.referenced
            if decl is not None and decl.kind == K.FUNCTION_DECL and decl.spelling in self.function_rules:
                rule = self.function_rules[decl.spelling]
                if _header_matches(decl, rule.match.header):
                    span = span_of(cursor)
                    if span.file in self.consumer_files:
                        found.value_refs.append((rule, span.file, span.start))
        elif kind in (K.MEMBER_REF_EXPR, K.MEMBER_REF):  # MEMBER_REF: a designator, `{ .flash_attn = true }`
            self._visit_member(cursor, ancestors, found)
        elif kind == K.VAR_DECL and self.setup_structs and cursor.type.get_canonical().spelling.endswith(
                self.setup_structs):
            span = span_of(cursor)
            if span.file in self.consumer_files:
                found.params_vars.append((cursor, ancestors, span.file))

    def _visit_call(self, cursor: ci.Cursor, ancestors: tuple[ci.Cursor, ...], found: Collected) -> None:
        decl = cursor.referenced
        if decl is None or decl.kind != K.FUNCTION_DECL:
            return
        name = decl.spelling
        span = span_of(cursor)
        if span.file not in self.consumer_files:
            return
        data = self.data[span.file]
        written_in_place = data[span.start : span.start + len(name)] == name.encode()
        decode = self.decode_rule
        if decode is not None and name == decode.match.function and _header_matches(decl, decode.match.header):
            found.decodes.append(DecodeSite(self.decode_rule, cursor, ancestors, span.file, span.start))
            return
        rule = self.function_rules.get(name)
        if rule is None:
            return
        if not _header_matches(decl, rule.match.header):
            found.other_calls.append((name, span.file, span.start, decl.location.file.name if decl.location.file
                                      else "?"))  # fmt: skip
            return
        if not written_in_place:
            found.macro_expanded_names.add(name)
        found.calls.append(CallSite(rule, cursor, ancestors, span.file, span.start, not written_in_place))

    def _visit_member(self, cursor: ci.Cursor, ancestors: tuple[ci.Cursor, ...], found: Collected) -> None:
        decl = cursor.referenced
        if decl is None or decl.kind != K.FIELD_DECL:
            return
        struct = _struct_of(decl)
        location = cursor.location
        file = location.file.name if location.file else None
        if file not in self.consumer_files:
            return
        offset = location.offset
        rule = self.field_rules.get((struct, decl.spelling))
        if rule is not None and _header_matches(decl, rule.match.header):
            found.fields.append(FieldSite(rule, cursor, ancestors, file, offset))
