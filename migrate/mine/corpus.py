"""Before/after pairs of API calls, read from two versions of the same code (a corpus at A and at B).

A corpus is a folder of C/C++ sources at both ends of a bump: llama.cpp's own tools/, examples/ and common/ (migrated
by its maintainers in the commits that changed the API) or a consumer's code at two releases (node-llama-cpp's
addon). For each call of an API the diff lists as removed or changed, the pair is found in three steps:
1. the enclosing function at A, found with the lexer (migrate/rewrite/tokens.py): a `{` after a `)` whose name is
   not a keyword opens a function body (constructor initialiser lists are skipped back over);
2. the same function at B: same name in the same file, else the one function of that name in B's corpus (llama.cpp
   moves code between files: tools/server/server.cpp became server-context.cpp);
3. the two bodies' tokens aligned by a diff (difflib, no junk heuristic): the call's tokens at A map onto a span
   at B, and the call that starts there is its after-text. A handle variable the B body introduces (`auto * mem =
   llama_get_memory(ctx);` then `f(mem, ...)`) is inlined into the after-text, so a pair says what the call became
   whatever the maintainer hoisted.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from migrate.rewrite.tokens import Token, tokenize

SOURCE_SUFFIXES = {".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".hxx", ".cu", ".m", ".mm"}
MAX_FILE_BYTES = 1_500_000  # generated sources (tools/server's embedded web page) are data, not migrated code
DEFAULT_CORPUS = ("tools", "examples", "common")
NOT_A_FUNCTION = {"if", "for", "while", "switch", "catch", "return", "sizeof", "decltype", "alignof", "defined",
                  "static_assert", "noexcept", "__attribute__", "alignas", "typeid", "operator"}  # fmt: skip
AFTER_PARAMS = {"const", "noexcept", "override", "final", "mutable", "&", "&&", "volatile", "try"}
MEMBER_ACCESS = {".", "->", "::"}


@dataclass(frozen=True)
class Function:
    """A function definition: its name (qualified as written: `AddonContext::Init`), body token range (the tokens
    between the braces) and the line of its name."""

    file: Path
    name: str
    tokens: list[Token] = field(repr=False, compare=False)
    body_start: int  # index of the first token after `{`
    body_end: int  # index of the closing `}`
    line: int

    def texts(self) -> list[str]:
        return [t.name for t in self.tokens[self.body_start : self.body_end]]


class PairFate(StrEnum):
    """What became of one use at B."""

    PAIRED = "paired"  # a call at B took its place
    UNCHANGED = "unchanged"  # the same call text at B (a valid case)
    REMOVED = "removed"  # the diff deletes it and nothing replaces it
    NO_FILE = "no_function_at_b"  # the enclosing function is not found at B
    UNALIGNED = "unaligned"  # the diff does not map it onto a call at B


@dataclass(frozen=True)
class Use:
    """A call of an API name at A: where it is, its text and its arguments' texts."""

    api: str
    file: Path
    line: int
    function: str
    text: str
    args: tuple[tuple[str, ...], ...]  # each argument as its tokens
    index: int = 0  # of the callee among the function body's tokens
    end: int = 0  # of its closing parenthesis, in the body


@dataclass(frozen=True)
class Pair:
    """A use at A and what it became at B (after-text with hoisted handles inlined; None: not paired)."""

    use: Use
    fate: PairFate
    after: tuple[str, ...] | None = None  # tokens of the call at B
    after_text: str | None = None  # as written at B (handles inlined)
    b_file: Path | None = None
    b_line: int | None = None
    inlined: tuple[str, ...] = ()  # "mem = llama_get_memory(ctx)" for each handle inlined
    # the code right around the call changed too (`f(ctx) == 0` became `g(...) == -1`): "`== 0` → `== -1`"
    surroundings: str = ""


def source_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()
                  and p.stat().st_size <= MAX_FILE_BYTES)  # fmt: skip


def _line(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _matching(tokens: list[Token], index: int, opener: str, closer: str, step: int) -> int | None:
    """Index of the bracket matching tokens[index], scanning forward (step 1) or backward (step -1)."""
    depth = 0
    position = index
    while 0 <= position < len(tokens):
        text = tokens[position].name
        if text == opener:
            depth += 1
        elif text == closer:
            depth -= 1
            if depth == 0:
                return position
        position += step
    return None


def _name_before(tokens: list[Token], open_paren: int) -> tuple[str, int] | None:
    """The (qualified) name written before `(` at open_paren, and the index of its first token."""
    index = open_paren - 1
    if index >= 0 and tokens[index].name == ">":  # template arguments: `Napi::ObjectWrap<AddonContext>(info)`
        opened = _matching(tokens, index, ">", "<", -1)
        index = opened - 1 if opened is not None else index
    if index < 0 or tokens[index].kind != "ident" or tokens[index].name in NOT_A_FUNCTION:
        return None
    parts = [tokens[index].name]
    while index >= 2 and tokens[index - 1].name == "::" and tokens[index - 2].kind == "ident":
        parts.insert(0, tokens[index - 2].name)
        index -= 2
    if index >= 1 and tokens[index - 1].name == "~":  # a destructor
        parts[-1] = "~" + parts[-1]
        index -= 1
    return "::".join(parts), index


def _function_name(tokens: list[Token], brace: int) -> str | None:
    """The name of the function whose body opens at tokens[brace], or None when the brace opens something else."""
    index = brace - 1
    while index >= 0 and tokens[index].name in AFTER_PARAMS:
        index -= 1
    for _ in range(64):  # back over a constructor's initialiser list: `) : a(x), b{y} {`
        if index < 0 or tokens[index].name not in (")", "}"):
            return None
        opener = "(" if tokens[index].name == ")" else "{"
        open_at = _matching(tokens, index, tokens[index].name, opener, -1)
        if open_at is None:
            return None
        named = _name_before(tokens, open_at)
        if named is None:
            return None
        name, first = named
        before = tokens[first - 1].name if first >= 1 else ""
        if opener == "(" and before not in (",", ":"):
            return name
        if before not in (",", ":"):
            return None
        index = first - 2
        while index >= 0 and tokens[index].name in AFTER_PARAMS:
            index -= 1
    return None


def functions_in(path: Path) -> list[Function]:
    """Every function definition of a file (not the lambdas inside them: they belong to their function)."""
    data = path.read_bytes()
    tokens = tokenize(data)
    found: list[Function] = []
    index = 0
    while index < len(tokens):
        if tokens[index].name != "{":
            index += 1
            continue
        name = _function_name(tokens, index)
        close = _matching(tokens, index, "{", "}", 1) if name else None
        if name is None or close is None:
            index += 1  # a namespace, class, enum or initialiser: functions may be inside
            continue
        name_token = next(t for t in reversed(tokens[:index]) if t.name == name.split("::")[-1].lstrip("~"))
        found.append(Function(path, name, tokens, index + 1, close, _line(data, name_token.start)))
        index = close + 1
    return found


def uses_in(function: Function, apis: set[str], data: bytes) -> list[Use]:
    """Calls of `apis` in a function body (not member calls `x.f(...)`, not a qualified `ns::f(...)`)."""
    uses = []
    tokens = function.tokens
    for index in range(function.body_start, function.body_end):
        token = tokens[index]
        if token.kind != "ident" or token.name not in apis or tokens[index + 1].name != "(":
            continue
        if tokens[index - 1].name in MEMBER_ACCESS:
            continue
        close = _matching(tokens, index + 1, "(", ")", 1)
        if close is None or close > function.body_end:
            continue
        uses.append(Use(token.name, function.file, _line(data, token.start), function.name,
                        data[token.start : tokens[close].end].decode("utf-8", "replace"),
                        split_args(tokens, index + 1, close), index - function.body_start,
                        close - function.body_start))  # fmt: skip
    return uses


def split_args(tokens: list[Token], open_paren: int, close: int) -> tuple[tuple[str, ...], ...]:
    """The arguments between tokens[open_paren] and tokens[close], each as its token texts."""
    args: list[tuple[str, ...]] = []
    current: list[str] = []
    depth = 0
    for token in tokens[open_paren + 1 : close]:
        text = token.name
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
        if text == "," and depth == 0:
            args.append(tuple(current))
            current = []
            continue
        current.append(text)
    if current or args:
        args.append(tuple(current))
    return tuple(args)


@dataclass
class Side:
    """One end of a corpus: its folders' files, functions indexed lazily by name (only files naming it are read)."""

    roots: list[Path]
    _functions: dict[Path, list[Function]] = field(default_factory=dict)
    _files: list[Path] | None = None

    def files(self) -> list[Path]:
        if self._files is None:
            self._files = [f for root in self.roots for f in source_files(root)]
        return self._files

    def functions(self, path: Path) -> list[Function]:
        if path not in self._functions:
            self._functions[path] = functions_in(path) if path.is_file() else []
        return self._functions[path]

    def find(self, relative: Path, name: str, occurrence: int, old_file: Path | None = None) -> Function | None:
        """The function `name` at this side: in the same file (its n-th definition of that name), else the only
        definition of that name anywhere in the corpus, else — when the file itself is gone — the definition in the
        file most like the old one (tools/main/main.cpp became tools/completion/completion.cpp)."""
        exists = False
        for root in self.roots:
            exists = exists or (root / relative).is_file()
            here = self.functions(root / relative)
            same = [f for f in here if f.name == name]
            if same:
                return same[min(occurrence, len(same) - 1)]
            # a function renamed with a prefix at B (common/: cpu_get_num_math → common_cpu_get_num_math)
            prefixed = [f for f in here if f.name.endswith("_" + name)]
            if len(prefixed) == 1:
                return prefixed[0]
        short = name.split("::")[-1].encode()
        matches = []
        for path in self.files():
            if short in path.read_bytes():
                matches += [f for f in self.functions(path) if f.name == name]
        if len(matches) == 1:
            return matches[0]
        if exists or old_file is None or not matches:
            return None
        return _most_alike(old_file, matches)


MOVED_FILE_SIMILARITY = 0.5  # identifier-set Jaccard index a moved file must reach with the old one


def _identifiers(path: Path) -> set[str]:
    return {t.name for t in tokenize(path.read_bytes()) if t.kind == "ident"}


def _most_alike(old_file: Path, candidates: list[Function]) -> Function | None:
    """The candidate whose file shares the most identifiers with the old file, if it shares enough (a renamed file
    keeps most of its names; another program's `main` does not)."""
    old = _identifiers(old_file)
    scored = []
    for function in candidates:
        new = _identifiers(function.file)
        scored.append((len(old & new) / max(1, len(old | new)), function))
    best = max(scored, key=lambda item: item[0])
    return best[1] if best[0] >= MOVED_FILE_SIMILARITY else None


def _relative(path: Path, roots: list[Path]) -> Path:
    for root in roots:
        if path.is_relative_to(root):
            return path.relative_to(root)
    return Path(path.name)


Opcodes = list[tuple[str, int, int, int, int]]


def alignment(a: list[str], b: list[str]) -> Opcodes:
    """The diff of two function bodies' tokens (no junk heuristic: `(` and `,` are code, not noise)."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()


def mapped_span(opcodes: Opcodes, start: int, end: int) -> tuple[int, int] | None:
    """Where tokens a[start:end+1] went in b, by the diff of a and b (None: deleted)."""
    first = last = None
    for tag, i1, i2, j1, j2 in opcodes:
        if i2 <= start or i1 > end:
            continue
        if tag == "delete":
            continue
        if tag == "equal":
            lo, hi = j1 + max(start, i1) - i1, j1 + min(end, i2 - 1) - i1
        else:
            lo, hi = j1, j2 - 1
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
    return None if first is None or last is None or last < first else (first, last)


def _call_in(b: list[str], span: tuple[int, int]) -> tuple[int, int] | None:
    """The call at B that the span holds: of the calls `name ( ... )` starting in it, the one closing where the span
    ends (the old call's `)` is usually aligned), else the first closing at or after that, else the first."""
    calls = []
    for index in range(span[0], span[1] + 1):
        named = b[index][:1].isalpha() or b[index][:1] == "_"
        if index + 1 < len(b) and b[index + 1] == "(" and named and b[index] not in NOT_A_FUNCTION:
            depth = 0
            for close in range(index + 1, len(b)):
                depth += {"(": 1, ")": -1}.get(b[close], 0)
                if depth == 0:
                    calls.append((index, close))
                    break
    for wanted in (lambda c: c[1] == span[1], lambda c: c[1] >= span[1], lambda c: True):
        chosen = next((c for c in calls if wanted(c)), None)
        if chosen is not None:
            return chosen
    return None


def _handle_definitions(b_function: Function) -> dict[str, tuple[str, ...]]:
    """`name = initialiser;` declarations of the B body whose initialiser is a call: hoisted handles."""
    texts = b_function.texts()
    found: dict[str, tuple[str, ...]] = {}
    for index in range(1, len(texts) - 3):
        if texts[index + 1] != "=" or not texts[index].isidentifier() or texts[index - 1] not in ("*", "auto", ">") \
                and not texts[index - 1].isidentifier():  # fmt: skip
            continue
        end = index + 2
        depth = 0
        while end < len(texts) and not (texts[end] == ";" and depth == 0):
            depth += {"(": 1, ")": -1}.get(texts[end], 0)
            end += 1
        value = tuple(texts[index + 2 : end])
        if len(value) >= 3 and value[1] == "(" and value[-1] == ")" and texts[index] not in found:
            found[texts[index]] = value
    return found


def inline_handles(after: tuple[str, ...], a_texts: set[str], handles: dict[str, tuple[str, ...]]) -> tuple[
        tuple[str, ...], tuple[str, ...]]:  # fmt: skip
    """The after-call with each argument that is a handle the B body introduced (a name A's body does not have)
    replaced by the handle's initialiser; and what was inlined."""
    out: list[str] = []
    inlined: list[str] = []
    for index, text in enumerate(after):
        bounded = index > 0 and after[index - 1] in ("(", ",") and index + 1 < len(after) and after[index + 1] in (
            ",", ")")  # fmt: skip
        if bounded and text in handles and text not in a_texts:
            out += handles[text]
            inlined.append(f"{text} = {' '.join(handles[text])}")
        else:
            out.append(text)
    return tuple(out), tuple(inlined)


def pair_uses(a_side: Side, b_side: Side, apis: set[str]) -> list[Pair]:
    """Every use of `apis` at A with its fate at B."""
    pairs: list[Pair] = []
    for path in a_side.files():
        data = path.read_bytes()
        if not any(api.encode() in data for api in apis):
            continue
        seen: dict[str, int] = {}
        for function in a_side.functions(path):
            occurrence = seen.get(function.name, 0)
            seen[function.name] = occurrence + 1
            uses = uses_in(function, apis, data)
            if not uses:
                continue
            b_function = b_side.find(_relative(path, a_side.roots), function.name, occurrence, path)
            if b_function is None:
                pairs += [Pair(use, PairFate.NO_FILE) for use in uses]
                continue
            a, b = function.texts(), b_function.texts()
            opcodes = alignment(a, b)
            pairs += [_pair(use, a, b, opcodes, b_function) for use in uses]
    return pairs


def _pair(use: Use, a: list[str], b: list[str], opcodes: Opcodes, b_function: Function) -> Pair:
    span = mapped_span(opcodes, use.index, use.end)
    if span is None:
        return Pair(use, PairFate.REMOVED)
    call = _call_in(b, span)
    if call is None:
        return Pair(use, PairFate.UNALIGNED)
    after = tuple(b[call[0] : call[1] + 1])
    if after == tuple(a[use.index : use.end + 1]):
        return _located(use, PairFate.UNCHANGED, after, (), b_function, call)
    if after[0] != use.api and after[0] in a:  # a call A's body already makes: the diff lined up the wrong code
        return Pair(use, PairFate.UNALIGNED)
    after, inlined = inline_handles(after, set(a), _handle_definitions(b_function))
    pair = _located(use, PairFate.PAIRED, after, inlined, b_function, call)
    around_a, around_b = _around(a, use.index, use.end), _around(b, call[0], call[1])
    if around_a != around_b:
        shown = [" ".join(x) for side in (around_a, around_b) for x in side]
        return replace(pair, surroundings=f"`{shown[0]} … {shown[1]}` became `{shown[2]} … {shown[3]}`")
    return pair


STATEMENT_EDGES = {";", "{", "}"}
AROUND = 4  # tokens compared on each side of a call


def _around(tokens: list[str], start: int, end: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tokens just before and just after a call, within its statement (at most AROUND each side)."""
    before: list[str] = []
    index = start - 1
    while index >= 0 and len(before) < AROUND and tokens[index] not in STATEMENT_EDGES:
        before.insert(0, tokens[index])
        index -= 1
    after: list[str] = []
    index = end + 1
    while index < len(tokens) and len(after) < AROUND and tokens[index] not in STATEMENT_EDGES:
        after.append(tokens[index])
        index += 1
    return tuple(before), tuple(after)


def _located(use: Use, fate: PairFate, after: tuple[str, ...], inlined: tuple[str, ...], b_function: Function,
             call: tuple[int, int]) -> Pair:  # fmt: skip
    tokens = b_function.tokens
    first, last = tokens[b_function.body_start + call[0]], tokens[b_function.body_start + call[1]]
    data = b_function.file.read_bytes()
    text = data[first.start : last.end].decode("utf-8", "replace")
    if inlined:
        text = render(after)
    return Pair(use, fate, after, text, b_function.file, _line(data, first.start), inlined)


def render(tokens: tuple[str, ...] | list[str]) -> str:
    """Tokens as code: a space after each comma, none inside brackets or around member access."""
    out = ""
    for index, text in enumerate(tokens):
        previous = tokens[index - 1] if index else ""
        attached = text in (")", "]", ",", "(", "[", "::", ".", "->", ";")
        after_opener = previous in ("(", "[", "::", ".", "->", "!", "~")
        unary = previous in ("-", "+", "*", "&", "!", "~") and (index == 1 or tokens[index - 2] in (
            "(", ",", "=", "return"))
        glue = not out or attached or after_opener or unary
        out += text if glue else " " + text
    return out
