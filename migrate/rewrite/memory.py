"""Where the memory handle comes from at each `llama_memory_*` site: one hoisted variable, or inline.

A function that uses the memory API gets one `llama_memory_t mem = llama_get_memory(ctx);` near its top, reused by
every site (one handle reads like the rest of the code; a call per site is noise). That is only done when it is
provably the same handle everywhere: the context is a local variable or parameter, the same one at every site, never
reassigned nor its address taken, not null-tested between the new declaration and a use (llama_get_memory(NULL)
crashes where the old guarded call did not run), reachable by every site (lambdas must capture by default), and no
goto or case label jumps past the declaration. Anywhere else each site says `llama_get_memory(ctx)` inline.
The new name never collides with or shadows a name the function or the file can see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import clang.cindex as ci

from migrate.rewrite.collect import CallSite
from migrate.rewrite.cursors import (
    ASSIGNMENT_OPS,
    CONDITION_OWNERS,
    FUNCTION_KINDS,
    K,
    children,
    is_null_literal,
    meaningful_parent,
    operator_between,
    same_cursor,
    span_of,
    unary_operator,
    unwrap,
    walk,
)
from migrate.rewrite.edits import Edit, SourceFile
from migrate.rewrite.rules import HandleSpec
from migrate.rewrite.tokens import CallSpan, tokenize

LOCAL_DECLS = {K.PARM_DECL, K.VAR_DECL}


@dataclass
class MemorySite:
    site: CallSite
    span: CallSpan  # the call as written (callee, parentheses, arguments)
    ctx_text: str  # the first argument as written


@dataclass
class Handle:
    """The memory expression for one site, and why that form."""

    expression: str
    note: str


@dataclass
class FunctionHandles:
    handles: dict[int, Handle]  # keyed by the site's name offset
    insertion: Edit | None
    reason: str  # for the plan: hoisted (where) or why not


def _decl_key(cursor: ci.Cursor) -> tuple[str, str, int] | None:
    decl = cursor.referenced
    if decl is None or decl.kind not in LOCAL_DECLS or decl.location.file is None:
        return None
    return decl.spelling, decl.location.file.name, decl.location.offset


def context_decl(first_arg: ci.Cursor, function: ci.Cursor) -> tuple[ci.Cursor | None, str]:
    """The local variable or parameter the context argument names, or None and the reason it is not one."""
    node = unwrap(first_arg)
    if node.kind != K.DECL_REF_EXPR:
        return None, "the context is not a plain variable"
    decl = node.referenced
    if decl is None or decl.kind not in LOCAL_DECLS:
        return None, "the context is not a local variable or parameter"
    inside = function.extent.start.offset <= decl.location.offset <= function.extent.end.offset
    if decl.kind == K.VAR_DECL and not inside:
        return None, "the context is a global (any call may change it)"
    return decl, ""


def _lambda_captures_by_default(lam: ci.Cursor, data: bytes) -> bool:
    span = span_of(lam)
    tokens = tokenize(data, span.start, span.end)
    if len(tokens) < 3 or tokens[0].text != b"[":
        return False
    return tokens[1].text in (b"&", b"=") and tokens[2].text in (b",", b"]")


Nodes = list[tuple[ci.Cursor, tuple[ci.Cursor, ...]]]


def _refs_to(nodes: Nodes, decl: ci.Cursor) -> Nodes:
    key = (decl.spelling, decl.location.file.name if decl.location.file else "", decl.location.offset)
    return [
        (cursor, ancestors)
        for cursor, ancestors in nodes
        if cursor.kind == K.DECL_REF_EXPR and cursor.spelling == decl.spelling and _decl_key(cursor) == key
    ]


def _is_modified(ref: ci.Cursor, ancestors: tuple[ci.Cursor, ...], data: bytes) -> bool:
    parent, _ = meaningful_parent(ancestors)
    if parent is None:
        return False
    kids = children(parent)
    ref_span = span_of(ref)
    if parent.kind in (K.BINARY_OPERATOR, K.COMPOUND_ASSIGNMENT_OPERATOR) and len(kids) == 2:
        left = span_of(kids[0])
        is_left = left.start <= ref_span.start and ref_span.end <= left.end
        return is_left and operator_between(data, kids[0], kids[1]) in ASSIGNMENT_OPS
    if parent.kind == K.UNARY_OPERATOR:
        return unary_operator(data, parent) in ("&", "++", "--")
    if parent.kind == K.CALL_EXPR:
        return _passed_by_reference(parent, ref_span.start)
    return False


def _passed_by_reference(call: ci.Cursor, offset: int) -> bool:
    callee = call.referenced
    if callee is None:
        return False
    params = list(callee.get_arguments())
    for index, arg in enumerate(call.get_arguments()):
        span = span_of(arg)
        if span.start <= offset <= span.end and index < len(params):
            param_type = params[index].type
            return param_type.kind == ci.TypeKind.LVALUEREFERENCE and not param_type.get_pointee().is_const_qualified()
    return False


def _is_null_test(ref: ci.Cursor, ancestors: tuple[ci.Cursor, ...], data: bytes) -> bool:
    parent, index = meaningful_parent(ancestors)
    if parent is None:
        return False
    kids = children(parent)
    if parent.kind == K.UNARY_OPERATOR:
        return unary_operator(data, parent) == "!"
    if parent.kind == K.BINARY_OPERATOR and len(kids) == 2:
        operator = operator_between(data, kids[0], kids[1])
        if operator in ("&&", "||"):
            return True
        if operator in ("==", "!="):
            return any(is_null_literal(kid, data) for kid in kids)
    if parent.kind in CONDITION_OWNERS and kids:
        holder = ancestors[index + 1] if index + 1 < len(ancestors) else ref
        return same_cursor(kids[0], holder) or (parent.kind == K.FOR_STMT and len(kids) > 1)
    return False


def _common_prefix(chains: list[tuple[ci.Cursor, ...]]) -> list[ci.Cursor]:
    prefix: list[ci.Cursor] = []
    for nodes in zip(*chains, strict=False):
        if all(same_cursor(nodes[0], other) for other in nodes[1:]):
            prefix.append(nodes[0])
        else:
            break
    return prefix


def _hoist_block(prefix: list[ci.Cursor], function: ci.Cursor) -> int | None:
    """Index in prefix of the innermost compound statement fit to hold the declaration (not a switch body)."""
    function_index = next((i for i, node in enumerate(prefix) if same_cursor(node, function)), None)
    if function_index is None:
        return None
    for index in range(len(prefix) - 1, function_index, -1):
        node = prefix[index]
        if node.kind == K.COMPOUND_STMT and prefix[index - 1].kind != K.SWITCH_STMT:
            return index
    return None


def _jumps_across(nodes: Nodes, block: ci.Cursor, point: int) -> bool:
    """A goto from before the point to a label after it, or a case label after it in the same block."""
    labels: dict[str, int] = {}
    gotos: list[tuple[int, str]] = []
    for cursor, _ in nodes:
        if cursor.kind == K.LABEL_STMT:
            labels[cursor.spelling] = span_of(cursor).start
        elif cursor.kind == K.GOTO_STMT:
            target = next((kid.spelling for kid in children(cursor) if kid.kind == K.LABEL_REF), "")
            gotos.append((span_of(cursor).start, target))
    if any(start < point < labels.get(target, -1) for start, target in gotos):
        return True
    return any(kid.kind in (K.CASE_STMT, K.DEFAULT_STMT) and span_of(kid).start > point for kid in children(block))


def _insertion_point(source: SourceFile, statement_start: int) -> tuple[int, bool]:
    """Where the declaration goes: the start of the statement's line, above comment lines that lead into it."""
    if not source.starts_line(statement_start):
        return statement_start, False
    line = source.line_of(statement_start)
    while line > 1:
        previous = source.data[source.line_starts[line - 2] : source.line_starts[line - 1]].strip()
        if not previous.startswith(b"//"):
            break
        line -= 1
    return source.line_starts[line - 1], True


def choose_name(preferred: str, taken: set[str]) -> str:
    if preferred not in taken:
        return preferred
    number = 1
    while f"{preferred}_{number}" in taken:
        number += 1
    return f"{preferred}_{number}"


def names_in(function: ci.Cursor, data: bytes) -> set[str]:
    span = span_of(function)
    return {token.name for token in tokenize(data, span.start, span.end) if token.kind == "ident"}


class HoistPlanner:
    def __init__(self, source: SourceFile, file_scope_names: set[str], preferred: str, rule_id: str, handle: HandleSpec,
                 subtree: Callable[[ci.Cursor], Nodes] = lambda cursor: list(walk(cursor))) -> None:  # fmt: skip
        self.subtree = subtree
        self.handle = handle  # what every site of this function shares: its type and initialiser
        self.source = source
        self.file_scope_names = file_scope_names
        self.preferred = preferred
        self.rule_id = rule_id

    def plan(self, function: ci.Cursor, sites: list[MemorySite]) -> FunctionHandles:
        handles: dict[int, Handle] = {}
        candidates: list[MemorySite] = []
        for item in sites:
            reason = self._site_blocker(item, function)
            if reason:
                handles[item.site.name_offset] = Handle(self.handle.inline(item.ctx_text), f"inline: {reason}")
            else:
                candidates.append(item)
        if not candidates:
            first = next(iter(handles.values()))
            return FunctionHandles(handles, None, first.note.replace("inline: ", "inline at every site: ", 1))
        insertion, name_or_reason = self._hoist(function, candidates)
        for item in candidates:
            if insertion is None:
                handles[item.site.name_offset] = Handle(self.handle.inline(item.ctx_text), f"inline: {name_or_reason}")
            else:
                handles[item.site.name_offset] = Handle(name_or_reason, "hoisted handle")
        reason = f"hoisted `{name_or_reason}`" if insertion else name_or_reason
        return FunctionHandles(handles, insertion, reason)

    def _site_blocker(self, item: MemorySite, function: ci.Cursor) -> str:
        if item.site.in_macro_body:
            return "inside a macro body"
        for node in item.site.ancestors:
            if node.kind == K.LAMBDA_EXPR and not _lambda_captures_by_default(node, self.source.data):
                return "inside a lambda with an explicit capture list"
        args = list(item.site.call.get_arguments())
        if not args:
            return "no context argument"
        decl, reason = context_decl(args[0], function)
        return reason if decl is None else ""

    def _hoist(self, function: ci.Cursor, items: list[MemorySite]) -> tuple[Edit | None, str]:
        """(insertion edit, handle name) when one handle can serve every site, else (None, why not)."""
        data = self.source.data
        decls = [context_decl(list(item.site.call.get_arguments())[0], function)[0] for item in items]
        keys = {(d.spelling, d.location.offset) for d in decls if d is not None}
        if len(keys) != 1:
            return None, "different context expressions in this function"
        decl = decls[0]
        assert decl is not None
        nodes = self.subtree(function)
        refs = _refs_to(nodes, decl)
        for ref, ancestors in refs:
            if _is_modified(ref, ancestors, data):
                return None, f"`{decl.spelling}` is reassigned or its address taken (line {ref.location.line})"
        chains = [(*item.site.ancestors, item.site.call) for item in items]
        prefix = _common_prefix(chains)
        block_index = _hoist_block(prefix, function)
        if block_index is None:
            return None, "no block holds every site"
        block = prefix[block_index]
        first = min(items, key=lambda item: item.site.name_offset)
        chain = (*first.site.ancestors, first.site.call)
        statement = chain[block_index + 1] if len(chain) > block_index + 1 else None
        if statement is None:
            return None, "no statement to put the handle before"
        point, own_line = _insertion_point(self.source, span_of(statement).start)
        if decl.kind == K.VAR_DECL and span_of(decl).end > point:
            return None, f"`{decl.spelling}` is declared inside the statement that first uses it"
        last = max(item.site.name_offset for item in items)
        for ref, ancestors in refs:
            offset = span_of(ref).start
            if point <= offset <= last and _is_null_test(ref, ancestors, data):
                return None, f"`{decl.spelling}` is null-tested between the handle and a use (line {ref.location.line})"
        if _jumps_across(nodes, block, point):
            return None, "a goto or case label jumps past where the handle would be declared"
        taken = names_in(function, data) | self.file_scope_names
        name = choose_name(self.preferred, taken)
        return self._declaration(point, own_line, statement, name, items[0].ctx_text), name

    def _declaration(self, point: int, own_line: bool, statement: ci.Cursor, name: str, ctx_text: str) -> Edit:
        declaration = f"{self.handle.type} {name} = {self.handle.inline(ctx_text)};"
        if own_line:
            text = self.source.indent_at(span_of(statement).start) + declaration + self.source.newline
        else:
            text = declaration + " "
        return self.source.make_edit(point, point, text, self.rule_id, note="memory handle hoisted")


def is_function(cursor: ci.Cursor) -> bool:
    return cursor.kind in FUNCTION_KINDS
