"""Edits as byte ranges, and the files they apply to.

An `Edit` replaces original bytes [start, end) of one file; a zero-width edit inserts. Edits are computed
against the original bytes and applied bottom-up, so no edit shifts another's offsets. Two edits that overlap
are a bug in a rule, never something to resolve silently: `apply_edits` raises `EditConflict`.
Everything not inside an edit stays byte-identical: line endings (CRLF), encoding, comments.
"""

from __future__ import annotations

import bisect
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from verify.errors import ToolError

SEMANTIC = "semantic"  # the site resolved, through libclang, to the llama.cpp declaration the rule names
SYNTACTIC = "syntactic"  # matched by name only (tree-sitter fallback, macro never expanded, undeclared name)
# Notes of syntactic edits, which say why the match is by name (apply's refusal tells the cases apart by them).
NOTE_UNPARSED = "libclang could not parse this file: matched by name"
NOTE_UNDECLARED = "name not declared by the source-version headers; matched by name"
NOTE_MACRO_BODY = "macro body, matched by name"


class EditConflict(Exception):
    """Two edits overlap; the message names both."""


class InputError(ToolError):
    """Input the engine refuses (unreadable file, syntax error, nothing to migrate); the message says why."""


@dataclass(frozen=True)
class Edit:
    file: Path
    start: int
    end: int
    replacement: str
    rule: str
    line: int  # 1-based line of `start` in the original file
    before: str  # the original text of [start, end)
    confidence: str = SEMANTIC
    note: str = ""  # why this form was chosen (e.g. "inline: ctx is reassigned in this function")
    absorbed: tuple[str, ...] = ()  # rules of calls nested inside this one, rewritten as part of it
    # matched by name because the --from tree does not declare the name (its `note` says so to the reader; apply's
    # refusal of syntactic edits gives this case its own remedy)
    undeclared: bool = False
    # made by a mined rule (migrate/mine/chain.py: a part of the bump no hand-written rules file covers as written);
    # the plan's JSON and report say so per edit
    mined: bool = False

    @property
    def rules(self) -> tuple[str, ...]:
        return (self.rule, *self.absorbed)

    @property
    def is_insertion(self) -> bool:
        return self.start == self.end

    def describe(self) -> str:
        return f"{self.file}:{self.line} [{self.rule}]"


@dataclass
class SourceFile:
    """One consumer file: its original bytes, newline convention and line index."""

    path: Path
    data: bytes
    newline: str = "\n"
    line_starts: list[int] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> SourceFile:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise InputError(
                f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                "convert the file to UTF-8 and retry"
            ) from exc
        return cls.from_bytes(path, data)

    @classmethod
    def from_bytes(cls, path: Path, data: bytes) -> SourceFile:
        crlf = data.count(b"\r\n")
        newline = "\r\n" if crlf and crlf * 2 >= data.count(b"\n") else "\n"
        starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A]
        return cls(path, data, newline, starts)

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.line_starts, offset)

    def line_start(self, offset: int) -> int:
        return self.line_starts[self.line_of(offset) - 1]

    def indent_at(self, offset: int) -> str:
        """Leading whitespace of the line holding offset."""
        start = self.line_start(offset)
        end = start
        while end < len(self.data) and self.data[end] in b" \t":
            end += 1
        return self.data[start:end].decode()

    def starts_line(self, offset: int) -> bool:
        """True when only blanks precede offset on its line."""
        return self.data[self.line_start(offset) : offset].strip(b" \t") == b""

    def text(self, start: int, end: int) -> str:
        return self.data[start:end].decode("utf-8", "replace")

    def removal_span(self, start: int, end: int) -> tuple[int, int]:
        """What removing the statement at [start, end) takes: its whole line when nothing else is on it (a trailing
        `// comment` describes the removed code: it goes with it), else just the statement."""
        line_end = self.data.find(b"\n", end)
        line_end = len(self.data) if line_end < 0 else line_end + 1
        rest = self.data[end:line_end].strip()
        if self.starts_line(start) and (rest == b"" or rest.startswith(b"//")):
            return self.line_start(start), line_end
        return start, end

    def absorb_padding(self, end: int, growth: int) -> int:
        """Where a name that grows by `growth` ends, given alignment padding after it (`p.old      = x` keeps its `=`
        column)."""
        spaces = 0
        while end + spaces < len(self.data) and self.data[end + spaces] == 0x20:
            spaces += 1
        if growth > 0 and spaces > growth and self.data[end + spaces : end + spaces + 1] == b"=":
            return end + growth
        return end

    def make_edit(self, start: int, end: int, replacement: str, rule: str, confidence: str = SEMANTIC,
                  note: str = "", absorbed: tuple[str, ...] = (), undeclared: bool = False) -> Edit:  # fmt: skip
        before = self.text(start, end)
        return Edit(self.path, start, end, replacement, rule, self.line_of(start), before, confidence, note, absorbed,
                    undeclared)  # fmt: skip


def check_overlaps(edits: list[Edit]) -> list[Edit]:
    """Edits of one file sorted by position; raises EditConflict if two overlap.

    Insertions at the same point are allowed (kept in the order given); an insertion strictly inside a
    replaced range is a conflict, as is any shared byte between two replacements.
    """
    ordered = sorted(enumerate(edits), key=lambda pair: (pair[1].start, pair[1].end, pair[0]))
    result = [edit for _, edit in ordered]
    for previous, current in zip(result, result[1:], strict=False):
        if current.start < previous.end or (previous.start < current.start < previous.end):
            raise EditConflict(f"overlapping edits: {previous.describe()} and {current.describe()}")
    return result


def apply_edits(data: bytes, edits: list[Edit]) -> bytes:
    """The bytes after applying edits (all of one file), bottom-up."""
    result = data
    for edit in reversed(check_overlaps(edits)):
        result = result[: edit.start] + edit.replacement.encode("utf-8") + result[edit.end :]
    return result


def render_range(data: bytes, start: int, end: int, edits: list[Edit]) -> str:
    """Original text of [start, end) with the edits lying wholly inside it applied (for composing edits)."""
    inner = [e for e in edits if start <= e.start and e.end <= end and not (e.is_insertion and e.start in (start, end))]
    shifted = [Edit(e.file, e.start - start, e.end - start, e.replacement, e.rule, e.line, e.before) for e in inner]
    return apply_edits(data[start:end], shifted).decode("utf-8", "replace")


def unified_diff(path: str, before: bytes, after: bytes) -> str:
    """A git-style unified diff of one file, for people: CRLF is shown as a plain line end (the files keep it)."""
    old = before.decode("utf-8", "replace").splitlines(keepends=True)
    new = after.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(old, new, f"a/{path}", f"b/{path}", n=3)
    out = []
    for line in lines:
        text = line.replace("\r\n", "\n")
        out.append(text if text.endswith("\n") else text + "\n\\ No newline at end of file\n")
    return "".join(out)
