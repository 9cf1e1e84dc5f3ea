"""The default values llama.cpp's `llama_*_default_params()` functions give their params structs, read from the
tree's src/ without compiling it.

The bodies are one aggregate initialiser, positional with the field names in comments
(`/*.n_ctx =*/ 512,`), sometimes followed by assignments (`result.n_gpu_layers = 999;` under `#ifdef
GGML_USE_METAL`). A positional value belongs to the struct's field at that position as the header declares it (the
comment is only a hint, and the compiler ignores it too); a designated one (`.n_ctx = 512`) to the field it names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from migrate.apidiff.surface import DefaultSource, FieldDefault, FunctionDecl, StructField

DEFAULTS_SUFFIX = "_default_params"
INITIALISER = re.compile(r"\b([A-Za-z_]\w*)\s*=\s*\{")
DESIGNATOR = re.compile(r"^\.\s*([A-Za-z_]\w*)\s*=\s*")
OPENERS, CLOSERS = "([{", ")]}"
# What `mask` blanks; one pass, so a quote inside a comment or a `//` inside a string is not taken for one.
LEXEMES = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.DOTALL)


def _blank(match: re.Match[str]) -> str:
    text = match.group(0)
    if text[0] in "\"'":  # the quotes stay: a literal is still a value
        return text[0] + re.sub(r"[^\n]", " ", text[1:-1]) + text[-1]
    return re.sub(r"[^\n]", " ", text)


def mask(text: str) -> str:
    """`text` with comments and the insides of string and character literals blanked (newlines kept): offsets
    and line numbers stay those of the file, and a brace or comma in a comment no longer counts."""
    return LEXEMES.sub(_blank, text)


def _closing(masked: str, open_at: int) -> int:
    """Offset of the bracket that closes the one at `open_at`."""
    depth = 0
    for i in range(open_at, len(masked)):
        if masked[i] in OPENERS:
            depth += 1
        elif masked[i] in CLOSERS:
            depth -= 1
            if depth == 0:
                return i
    return len(masked)


def _elements(masked: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each top-level comma-separated element of masked[start:end]."""
    depth, begin = 0, start
    for i in range(start, end):
        char = masked[i]
        if char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            depth -= 1
        elif char == "," and depth == 0:
            yield begin, i
            begin = i + 1
    if masked[begin:end].strip():
        yield begin, end


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _uncommented(text: str) -> str:
    """The code of `text`, comments dropped and whitespace collapsed; literals as written."""
    return _collapse(LEXEMES.sub(lambda m: m.group(0) if m.group(0)[0] in "\"'" else " ", text))


@dataclass
class _Source:
    path: str  # relative to the tree root
    text: str
    masked: str = field(init=False)

    def __post_init__(self) -> None:
        self.masked = mask(self.text)

    def line_at(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1

    def body_of(self, function: str) -> tuple[int, int] | None:
        """(offset of `{`, offset of `}`) of the definition of the parameterless `function`."""
        found = re.search(rf"\b{re.escape(function)}\s*\(\s*(?:void\s*)?\)\s*\{{", self.masked)
        if found is None:
            return None
        open_at = found.end() - 1
        return open_at, _closing(self.masked, open_at)


@dataclass
class _Reader:
    """The defaults of one function: the initialiser's values, then the assignments after it."""

    source: _Source
    function: str
    struct: str
    fields: list[str]  # the struct's fields in declaration order
    found: dict[str, FieldDefault] = field(default_factory=dict)

    def read(self, body: tuple[int, int]) -> None:
        masked = self.source.masked
        init = INITIALISER.search(masked, body[0] + 1, body[1])
        if init is None:
            return
        close = _closing(masked, init.end() - 1)
        self._initialiser(init.end(), close)
        self._assignments(init.group(1), close + 1, body[1])

    def _initialiser(self, start: int, end: int) -> None:
        position = 0
        for begin, finish in _elements(self.source.masked, start, end):
            text = _uncommented(self.source.text[begin:finish])
            offset = begin + len(self.source.masked[begin:finish]) - len(self.source.masked[begin:finish].lstrip())
            designated = DESIGNATOR.match(text)
            if designated is not None:
                name, value = designated.group(1), text[designated.end() :]
                position = self.fields.index(name) + 1 if name in self.fields else position
            elif position < len(self.fields):
                name, value = self.fields[position], text
                position += 1
            else:
                continue  # more values than the header declares fields: not this struct's layout
            self._set(name, value, offset)

    def _assignments(self, var: str, start: int, end: int) -> None:
        """`var.field = value;` statements: unconditional ones replace the default, those inside an `#if` are
        recorded with their condition (they hold for some builds only)."""
        conditions: list[str] = []
        offset = start
        assign = re.compile(rf"\b{re.escape(var)}\s*\.\s*([A-Za-z_]\w*)\s*=\s*([^;=][^;]*);")
        for line in self.source.masked[start:end].splitlines(keepends=True):
            directive = line.strip()
            if directive.startswith("#"):
                _track(conditions, directive)
            else:
                for match in assign.finditer(line):
                    value = _uncommented(self.source.text[offset + match.start(2) : offset + match.end(2)])
                    self._assign(match.group(1), value, offset + match.start(2), conditions)
            offset += len(line)

    def _assign(self, name: str, value: str, offset: int, conditions: list[str]) -> None:
        if not conditions:
            self._set(name, value, offset)
        elif name in self.found:
            self.found[name].conditional.append(f"{value} if {' && '.join(conditions)}")

    def _set(self, name: str, value: str, offset: int) -> None:
        self.found[name] = FieldDefault(self.struct, name, value, DefaultSource.DEFAULT_PARAMS, self.source.path,
                                        self.source.line_at(offset), self.function)  # fmt: skip


def _track(conditions: list[str], directive: str) -> None:
    """Keep `conditions` the stack of `#if` conditions the next line is under."""
    word, _, rest = directive[1:].strip().partition(" ")
    rest = _collapse(rest)
    if word in ("if", "ifdef"):
        conditions.append(rest)
    elif word == "ifndef":
        conditions.append(f"!{rest}")
    elif word in ("else", "elif") and conditions:
        conditions[-1] = f"!({conditions[-1]})" if word == "else" else rest
    elif word == "endif" and conditions:
        conditions.pop()


def default_params_functions(functions: list[FunctionDecl], fields: list[StructField]) -> dict[str, str]:
    """function name -> the struct it returns, for each parameterless `*_default_params` returning a struct whose
    fields the surface knows."""
    structs = {f.struct for f in fields}
    found = {}
    for decl in functions:
        struct = decl.result_type.removeprefix("struct ")
        if decl.name.endswith(DEFAULTS_SUFFIX) and not decl.param_types and struct in structs:
            found[decl.name] = struct
    return found


def read_defaults(root: Path, sources: list[str], functions: list[FunctionDecl],
                  fields: list[StructField]) -> list[FieldDefault]:  # fmt: skip
    """The defaults each `*_default_params()` of the surface sets, from the first of `sources` that defines it."""
    wanted = default_params_functions(functions, fields)
    order: dict[str, list[str]] = {}
    for item in fields:
        order.setdefault(item.struct, []).append(item.name)
    texts = [_Source(name, (root / name).read_text(errors="replace")) for name in sources]
    result: list[FieldDefault] = []
    for function, struct in wanted.items():
        for source in texts:
            body = source.body_of(function)
            if body is not None:
                reader = _Reader(source, function, struct, order[struct])
                reader.read(body)
                result += reader.found.values()
                break
    return result
