"""A small C/C++ lexer over bytes, and call spans found with it.

The engine decides *which* call sites to touch from libclang's cursors (or tree-sitter's nodes); the exact
bytes of a call (callee, parentheses, arguments) come from this lexer, so the same code rewrites a call in a
function body, in a macro definition or in a file libclang could not parse. It works on bytes because every
offset in the engine is a byte offset (libclang's are), and a UTF-8 comment must not shift them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Order matters: comments and literals first, so nothing inside them is ever read as an identifier.
_TOKEN = re.compile(
    rb"""
    (?P<space>(?:[ \t\f\v\r\n]|\\\r?\n)+)
  | (?P<comment>//(?:[^\n\\]|\\.|\\\n)*|/\*.*?\*/)
  | (?P<raw>(?:u8|u|U|L)?R"(?P<delim>[^()\\\s]{0,16})\(.*?\)(?P=delim)")
  | (?P<string>(?:u8|u|U|L)?"(?:[^"\\\n]|\\.)*")
  | (?P<char>(?:u8|u|U|L)?'(?:[^'\\\n]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>\.?[0-9](?:[eEpP][+-]|[A-Za-z0-9_.'])*)
  | (?P<punct>\.\.\.|<<=|>>=|->\*|<=>|::|->|\+\+|--|<<|>>|<=|>=|==|!=|&&|\|\||\+=|-=|\*=|/=|%=|&=|\|=|\^=|\#\#|.)
    """,
    re.VERBOSE | re.DOTALL,
)

OPEN_TO_CLOSE = {b"(": b")", b"[": b"]", b"{": b"}"}
CLOSERS = {b")", b"]", b"}"}


@dataclass(frozen=True)
class Token:
    kind: str  # ident, number, string, char, punct
    start: int
    end: int
    text: bytes

    @property
    def name(self) -> str:
        return self.text.decode("utf-8", "replace")


def tokenize(data: bytes, start: int = 0, end: int | None = None) -> list[Token]:
    """Tokens of data[start:end]; whitespace and comments are dropped, raw strings kept whole."""
    stop = len(data) if end is None else end
    tokens: list[Token] = []
    pos = start
    while pos < stop:
        match = _TOKEN.match(data, pos, stop)
        if match is None:  # an unterminated comment or literal: the rest is not code
            break
        kind = match.lastgroup or "punct"
        if kind == "delim":
            kind = "raw"
        if kind not in ("space", "comment"):
            tokens.append(Token("string" if kind == "raw" else kind, match.start(), match.end(), match.group()))
        pos = match.end()
    return tokens


def code_mask(data: bytes) -> bytearray:
    """1 for each byte that is code, 0 inside comments and string/char literals (where nothing is rewritten)."""
    mask = bytearray(b"\x01" * len(data))
    pos = 0
    while pos < len(data):
        match = _TOKEN.match(data, pos)
        if match is None:
            mask[pos:] = b"\x00" * (len(data) - pos)
            break
        if match.lastgroup in ("comment", "raw", "delim", "string", "char"):
            mask[match.start() : match.end()] = b"\x00" * (match.end() - match.start())
        pos = match.end()
    return mask


@dataclass(frozen=True)
class CallSpan:
    """A call `name ( arg, arg )` by byte offsets: the callee, the parentheses and each argument (trimmed)."""

    name_start: int
    name_end: int
    open_paren: int
    close_paren: int  # offset of ")"
    args: tuple[tuple[int, int], ...]

    @property
    def end(self) -> int:
        return self.close_paren + 1


def _matching_close(tokens: list[Token], open_index: int) -> int | None:
    """Index of the token closing the bracket at open_index, or None when unbalanced."""
    stack: list[bytes] = []
    for index in range(open_index, len(tokens)):
        text = tokens[index].text
        if text in OPEN_TO_CLOSE:
            stack.append(OPEN_TO_CLOSE[text])
        elif text in CLOSERS:
            if not stack or stack.pop() != text:
                return None
            if not stack:
                return index
    return None


def call_at(tokens: list[Token], name_index: int) -> CallSpan | None:
    """The call whose callee is tokens[name_index], or None if no balanced `( ... )` follows it."""
    if name_index + 1 >= len(tokens) or tokens[name_index + 1].text != b"(":
        return None
    close = _matching_close(tokens, name_index + 1)
    if close is None:
        return None
    args: list[tuple[int, int]] = []
    depth = 0
    first = name_index + 2
    for index in range(name_index + 2, close):
        text = tokens[index].text
        if text in OPEN_TO_CLOSE:
            depth += 1
        elif text in CLOSERS:
            depth -= 1
        elif text == b"," and depth == 0:
            args.append((tokens[first].start, tokens[index - 1].end))
            first = index + 1
    if first < close:
        args.append((tokens[first].start, tokens[close - 1].end))
    name = tokens[name_index]
    return CallSpan(name.start, name.end, tokens[name_index + 1].start, tokens[close].start, tuple(args))


def index_at(tokens: list[Token], offset: int) -> int | None:
    """Index of the token starting exactly at offset (binary search: tokens are sorted)."""
    low, high = 0, len(tokens)
    while low < high:
        mid = (low + high) // 2
        if tokens[mid].start < offset:
            low = mid + 1
        else:
            high = mid
    if low < len(tokens) and tokens[low].start == offset:
        return low
    return None


IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


def is_identifier(text: str) -> bool:
    return IDENTIFIER.fullmatch(text.encode()) is not None


def value_after_equals(tokens: list[Token]) -> tuple[int, int] | None:
    """Byte span of the value after `=` (tokens[0]) up to the `,`, `}` or `;` that ends it at depth 0, or None:
    a designator's `.member = value` or an assignment's right-hand side."""
    depth = 0
    for index, token in enumerate(tokens[1:], start=1):
        if token.text in (b"(", b"[", b"{"):
            depth += 1
        elif token.text in (b")", b"]", b"}") and depth > 0:
            depth -= 1
        elif token.text in (b",", b"}", b";") and depth == 0:
            return (tokens[1].start, tokens[index - 1].end) if index > 1 else None
    return None
