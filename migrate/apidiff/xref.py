"""Cross reference: where a consumer's code uses a declaration the diff lists.

The consumer's files are parsed against the OLD tree, where they compile, and every use resolves to its
declaration: a user's own function that happens to share a name, a comment or a string never counts. A use of
something removed or changed is either covered by a rewrite rule or a manual action. `uses_in_file` is the walk
itself, for callers that parsed the unit already (the plan's API check, migrate/rewrite/apicheck.py).
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import clang.cindex as ci

from migrate.apidiff.compare import ApiDiff, Break, ChangeKind
from migrate.apidiff.parse import (
    ERROR_SEVERITY,
    FUNCTION_KINDS,
    TYPEDEF_KINDS,
    HeaderMap,
    K,
    canonical,
    clang_args,
    qualified_name,
    record_name,
)
from migrate.apidiff.surface import ApiDiffError, candidate_headers
from migrate.sources import SourceTree
from verify.clangsetup import index

# Expressions and references in consumer code that name a declaration.
USE_KINDS = frozenset({K.CALL_EXPR, K.DECL_REF_EXPR, K.MEMBER_REF_EXPR, K.MEMBER_REF, K.TYPE_REF})
C_SUFFIXES = frozenset({".c"})


@dataclass
class ApiUse:
    """One place in the consumer's code that names a declaration removed or changed at the target."""

    file: str
    line: int  # 1-based
    column: int  # 1-based, in bytes as the compiler counts
    symbol: str
    kind: ChangeKind
    old: str
    new: str | None
    note: str | None = None
    in_macro: bool = False  # the name is not spelled here: the use comes from a macro expanded at this spot
    compiles: bool = False  # whether this use still compiles at the target (the diff's verdict, or this call's)
    judged_on_call: bool = False  # `compiles` was decided on this call's arguments (see Break.const_dropped)

    def where(self, base: Path | None = None) -> str:
        """file:line:column, the file relative to `base` when it lies below it (reads better in a PR)."""
        path = Path(self.file)
        if base is not None and path.is_relative_to(base):
            path = path.relative_to(base)
        return f"{path}:{self.line}:{self.column}"


@dataclass
class CoveredUse(ApiUse):
    """A use that a rewrite rule handles."""


@dataclass
class ManualAction(ApiUse):
    """A use no rule handles: somebody must change it by hand."""


@dataclass
class CrossReference:
    covered: list[CoveredUse] = field(default_factory=list)
    manual: list[ManualAction] = field(default_factory=list)
    parse_errors: list[str] = field(default_factory=list)  # file:line: message, for files libclang could not parse
    parse_seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class OldHeaders:
    """Recognises declarations from the old tree's tracked headers, also when the consumer includes its own copy of
    llama.cpp (a submodule): the path then ends with the same `include/llama.h` / `common/x.h`."""

    def __init__(self, root: Path, headers: Iterable[str]) -> None:
        self.exact = HeaderMap(root, headers)
        self.suffixes = {tuple(Path(h).parts): h for h in headers}
        self.seen: dict[str, bool] = {}

    def tracked(self, cursor: ci.Cursor) -> bool:
        file = cursor.location.file
        if file is None:
            return False
        if file.name not in self.seen:
            parts = Path(file.name).resolve().parts
            self.seen[file.name] = self.exact.header(cursor) is not None or parts[-2:] in self.suffixes
        return self.seen[file.name]


def _function_break(diff: ApiDiff, ref: ci.Cursor) -> Break | None:
    name = qualified_name(ref)
    func_type = ref.type
    if func_type.kind == ci.TypeKind.FUNCTIONPROTO:
        params = [canonical(t) for t in func_type.argument_types()]
        params += ["..."] if func_type.is_function_variadic() else []
        exact = diff.breaks.get(f"f:{name}|{canonical(ref.result_type)}({', '.join(params)})")
        if exact is not None:
            return exact
    # Signature spelled differently (a C consumer, a template instance): by name, when the name tells.
    item = diff.breaks.get(f"f:{name}")
    if item is not None and (item.kind == ChangeKind.REMOVED or diff.old_overloads.get(name) == 1):
        return item
    return None


def _type_kind(ref: ci.Cursor) -> str | None:
    if ref.kind in TYPEDEF_KINDS:
        return "typedef"
    return {K.STRUCT_DECL: "struct", K.CLASS_DECL: "class", K.UNION_DECL: "union", K.ENUM_DECL: "enum"}.get(ref.kind)


def _break_for(diff: ApiDiff, ref: ci.Cursor) -> Break | None:
    if ref.kind in FUNCTION_KINDS:
        return _function_break(diff, ref)
    if ref.kind == K.FIELD_DECL:
        return diff.breaks.get(f"s:{record_name(ref.semantic_parent)}.{ref.spelling}")
    if ref.kind == K.ENUM_CONSTANT_DECL:
        return diff.breaks.get(f"e:{qualified_name(ref)}")
    kind = _type_kind(ref)
    return diff.breaks.get(f"t:{kind} {qualified_name(ref)}") if kind else None


_NO_USES = frozenset({K.MACRO_INSTANTIATION, K.INCLUSION_DIRECTIVE})
_TOP_LEVEL: weakref.WeakKeyDictionary[object, dict[str, list[ci.Cursor]]] = weakref.WeakKeyDictionary()


def _top_level_by_file(tu: ci.TranslationUnit) -> dict[str, list[ci.Cursor]]:
    """The unit's top-level cursors by the file they are in: one pass per unit, however many files are scanned.
    Only the consumer's own declarations are walked: walking the headers' cursors too costs seconds, finds nothing."""
    found = _TOP_LEVEL.get(tu)
    if found is None:
        found = {}
        for cursor in tu.cursor.get_children():
            if cursor.kind in _NO_USES:
                continue  # a macro expansion or an #include at the top: a leaf that holds no use
            file = cursor.location.file
            if file is not None:
                found.setdefault(file.name, []).append(cursor)
        _TOP_LEVEL[tu] = found
    return found


def _spelled_here(lines: list[bytes], cursor: ci.Cursor, symbol: str) -> bool:
    # Columns count bytes; compare bytes so a non-UTF-8 file gives the same answer.
    line, column = cursor.location.line, cursor.location.column
    if not 0 < line <= len(lines):
        return False
    return lines[line - 1][column - 1 :].startswith(re.split(r"::|\.", symbol)[-1].encode())


def _parse_consumer(path: Path, root: Path, extra_args: list[str]) -> ci.TranslationUnit | None:
    if not path.is_file():
        raise ApiDiffError(f"{path}: no such file")
    language = "c" if path.suffix in C_SUFFIXES else "c++"
    try:
        return index().parse(str(path), args=[*clang_args(root, language), *extra_args])
    except ci.TranslationUnitLoadError:
        return None


def uses_in_file(diff: ApiDiff, path: Path, tu: ci.TranslationUnit, old_headers: OldHeaders) -> list[ApiUse]:
    """Each use in `path` (a file of the parsed unit `tu`) of what `diff` lists, once: libclang reports a qualified
    call (`console::set_display(...)`) twice, as the call (at `console`, where the name is not spelled, so it looks
    like a macro expansion) and as the callee (at the name); the echo is dropped and the use at the name kept. A
    use really expanded from a macro has no such twin."""
    uses = list(_all_uses_in_file(diff, path, tu, old_headers))
    spelled = {(u.line, u.symbol) for u in uses if not u.in_macro}
    return [u for u in uses if not u.in_macro or (u.line, u.symbol) not in spelled]


def _all_uses_in_file(diff: ApiDiff, path: Path, tu: ci.TranslationUnit,
                      old_headers: OldHeaders) -> Iterator[ApiUse]:  # fmt: skip
    name = str(path)
    lines = path.read_bytes().splitlines()
    seen: set[tuple[int, int, str]] = set()
    # a call is visited before its callee's reference (preorder): its verdict waits here for the use(s) to come
    judged: dict[tuple[int, str], tuple[int, ...]] = {}  # -> the parameters passed a pointer to const
    for top in _top_level_by_file(tu).get(name, []):
        for cursor in top.walk_preorder():
            if cursor.kind not in USE_KINDS:
                continue
            ref = cursor.referenced
            if ref is None or not old_headers.tracked(ref):
                continue
            location = cursor.location
            if location.file is None or location.file.name != name:
                continue
            item = _break_for(diff, ref)
            if item is not None and item.const_dropped and cursor.kind == K.CALL_EXPR:
                judged[(location.line, item.symbol)] = _const_arguments(cursor, item.const_dropped)
            spot = (location.line, location.column, item.symbol if item else "")
            if item is None or spot in seen:
                continue
            seen.add(spot)
            yield _use(item, cursor, name, lines, judged.get((location.line, item.symbol)))


def _use(item: Break, cursor: ci.Cursor, name: str, lines: list[bytes], const_args: tuple[int, ...] | None) -> ApiUse:
    """The use at `cursor`; `const_args`: this call was judged (a re-signature that only dropped `const`), and these
    1-based parameters are passed a pointer to const."""
    location = cursor.location
    note, compiles = item.note, item.compiles
    if const_args is not None:
        compiles = not const_args
        which = ", ".join(map(str, const_args))
        verdict = ("this call passes no pointer to const there: it still compiles" if compiles else
                   f"this call passes a pointer to const as parameter(s) {which}: it will not compile (C: a warning)")
        note = f"{item.note}; {verdict}" if item.note else verdict
    return ApiUse(name, location.line, location.column, item.symbol, item.kind, item.old, item.new, note,
                  not _spelled_here(lines, cursor, item.symbol), compiles, const_args is not None)  # fmt: skip


def _written_argument(arg: ci.Cursor) -> ci.Cursor:
    """The argument as written: below the implicit conversion to the old parameter type (which adds the very
    `const` in question), i.e. through libclang's unexposed single-child wrappers."""
    while arg.kind == K.UNEXPOSED_EXPR:
        children = list(arg.get_children())
        if len(children) != 1:
            break
        arg = children[0]
    return arg


def _points_to_const(arg: ci.Cursor) -> bool:
    kind = arg.type.get_canonical()
    if kind.kind == ci.TypeKind.POINTER:
        return kind.get_pointee().is_const_qualified()
    if kind.kind in (ci.TypeKind.CONSTANTARRAY, ci.TypeKind.INCOMPLETEARRAY):
        return kind.element_type.is_const_qualified()
    return False  # nullptr, 0: convert to any pointer


def _const_arguments(call: ci.Cursor, indexes: tuple[int, ...]) -> tuple[int, ...]:
    """The parameters (1-based) among `indexes` that lost `const` and that this call passes a pointer to const:
    none, and the call still compiles."""
    args = list(call.get_arguments())
    return tuple(i + 1 for i in indexes if i < len(args) and _points_to_const(_written_argument(args[i])))


def _root_of(tree: SourceTree | Path) -> Path:
    return tree.path if isinstance(tree, SourceTree) else Path(tree)


def cross_reference(
    diff: ApiDiff,
    files: list[Path],
    old_tree: SourceTree | Path,
    covered: set[str],
    extra_args: list[str] | None = None,
    old_headers: Iterable[str] | None = None,
) -> CrossReference:
    """Every use in `files` of a declaration removed or changed at the target, split into covered and manual.

    `covered` names what rewrite rules handle: function names, "struct.field", enum constants, type names.
    The files are parsed against the OLD tree, where the code they hold compiles.
    """
    root = _root_of(old_tree).resolve()
    headers = list(old_headers) if old_headers is not None else candidate_headers(root)
    tracked = OldHeaders(root, headers)
    result = CrossReference()
    started = time.perf_counter()
    for path in (Path(f).resolve() for f in files):
        tu = _parse_consumer(path, root, extra_args or [])
        if tu is None:
            result.parse_errors.append(f"{path}: libclang could not parse the file at all")
            continue
        # A file with errors is still walked: libclang recovers, and the uses it did resolve are real.
        result.parse_errors += [
            f"{d.location.file}:{d.location.line}: {d.spelling}" for d in tu.diagnostics if d.severity >= ERROR_SEVERITY
        ]
        for use in uses_in_file(diff, path, tu, tracked):
            if use.symbol in covered:
                result.covered.append(CoveredUse(**asdict(use)))
            else:
                result.manual.append(ManualAction(**asdict(use)))
    result.parse_seconds = round(time.perf_counter() - started, 3)
    return result
