"""Small questions asked of libclang cursors: where a node is written, what wraps it, which operator it is."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import clang.cindex as ci

from migrate.rewrite.parse import file_offset
from migrate.rewrite.tokens import tokenize

K = ci.CursorKind
FUNCTION_KINDS = {
    K.FUNCTION_DECL,
    K.CXX_METHOD,
    K.CONSTRUCTOR,
    K.DESTRUCTOR,
    K.CONVERSION_FUNCTION,
    K.FUNCTION_TEMPLATE,
}
# Nodes that only wrap an expression (implicit casts, parentheses): looked through when asking "what is this".
WRAPPERS = {K.UNEXPOSED_EXPR, K.PAREN_EXPR}
CONDITION_OWNERS = {K.IF_STMT, K.WHILE_STMT, K.FOR_STMT, K.DO_STMT, K.CONDITIONAL_OPERATOR}
NULL_LITERALS = {K.CXX_NULL_PTR_LITERAL_EXPR, K.GNU_NULL_EXPR}
ASSIGNMENT_OPS = {"=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>="}


@dataclass(frozen=True)
class Span:
    file: str | None
    start: int
    end: int


def span_of(cursor: ci.Cursor) -> Span:
    """Where a cursor is written (macro arguments: as written; macro bodies: the expansion point)."""
    file, start = file_offset(cursor.extent.start)
    _, end = file_offset(cursor.extent.end)
    return Span(file, start, max(start, end))


def children(cursor: ci.Cursor) -> list[ci.Cursor]:
    return list(cursor.get_children())


def unwrap(cursor: ci.Cursor) -> ci.Cursor:
    """Look through implicit casts and parentheses down to the expression that matters."""
    while cursor.kind in WRAPPERS:
        kids = children(cursor)
        if len(kids) != 1:
            break
        cursor = kids[0]
    return cursor


def walk(root: ci.Cursor, ancestors: tuple[ci.Cursor, ...] = ()) -> Iterator[tuple[ci.Cursor, tuple[ci.Cursor, ...]]]:
    """Every cursor below root with its ancestors (root first), depth first, in source order."""
    stack: list[tuple[ci.Cursor, tuple[ci.Cursor, ...]]] = [(root, ancestors)]
    while stack:
        cursor, above = stack.pop()
        yield cursor, above
        kids = children(cursor)
        chain = (*above, cursor)
        stack.extend((kid, chain) for kid in reversed(kids))


def meaningful_parent(ancestors: tuple[ci.Cursor, ...]) -> tuple[ci.Cursor | None, int]:
    """The nearest ancestor that is not a wrapper, and its index in ancestors."""
    for index in range(len(ancestors) - 1, -1, -1):
        if ancestors[index].kind not in WRAPPERS:
            return ancestors[index], index
    return None, -1


def operator_between(data: bytes, left: ci.Cursor, right: ci.Cursor) -> str | None:
    """The operator token written between two operands (libclang 18's Python API does not expose it)."""
    left_span, right_span = span_of(left), span_of(right)
    if right_span.start < left_span.end:
        return None
    tokens = tokenize(data, left_span.end, right_span.start)
    return tokens[0].name if len(tokens) == 1 else None


def unary_operator(data: bytes, cursor: ci.Cursor) -> str | None:
    """The operator of a UNARY_OPERATOR: the token before its operand (prefix) or after it (postfix)."""
    kids = children(cursor)
    if len(kids) != 1:
        return None
    outer, inner = span_of(cursor), span_of(kids[0])
    before = tokenize(data, outer.start, inner.start)
    if before:
        return before[0].name
    after = tokenize(data, inner.end, outer.end)
    return after[0].name if after else None


def is_null_literal(cursor: ci.Cursor, data: bytes) -> bool:
    node = unwrap(cursor)
    if node.kind in NULL_LITERALS:
        return True
    if node.kind == K.CSTYLE_CAST_EXPR:  # C's NULL: ((void*)0)
        kids = children(node)
        return bool(kids) and is_null_literal(kids[-1], data)
    if node.kind == K.INTEGER_LITERAL:
        span = span_of(node)
        return data[span.start : span.end].strip() == b"0"
    return False


def enclosing_function(ancestors: tuple[ci.Cursor, ...]) -> tuple[ci.Cursor | None, int]:
    """The innermost function-like declaration (not a lambda) holding a node, and its index."""
    for index in range(len(ancestors) - 1, -1, -1):
        if ancestors[index].kind in FUNCTION_KINDS:
            return ancestors[index], index
    return None, -1


def decl_file(cursor: ci.Cursor | None) -> str | None:
    if cursor is None or cursor.location.file is None:
        return None
    return cursor.location.file.name


def same_cursor(a: ci.Cursor, b: ci.Cursor) -> bool:
    return a.hash == b.hash and a.kind == b.kind and a.extent == b.extent


@dataclass(frozen=True)
class IfParts:
    condition: ci.Cursor
    then: ci.Cursor
    otherwise: ci.Cursor | None


def if_parts(data: bytes, if_stmt: ci.Cursor) -> IfParts | None:
    """Condition, then-branch and else-branch of an if statement, told apart by where the `( ... )` closes
    (libclang lists an init-statement or a condition variable as children too)."""
    span = span_of(if_stmt)
    tokens = tokenize(data, span.start, span.end)
    open_index = next((i for i, t in enumerate(tokens[:3]) if t.text == b"("), None)
    if open_index is None:
        return None
    depth = 0
    close = None
    for token in tokens[open_index:]:
        if token.text == b"(":
            depth += 1
        elif token.text == b")":
            depth -= 1
            if depth == 0:
                close = token.start
                break
    if close is None:
        return None
    kids = children(if_stmt)
    inside = [kid for kid in kids if span_of(kid).end <= close]
    after = [kid for kid in kids if span_of(kid).start > close]
    if not inside or not after:
        return None
    return IfParts(inside[-1], after[0], after[1] if len(after) > 1 else None)
