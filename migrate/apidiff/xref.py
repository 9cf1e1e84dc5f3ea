"""Cross reference: where a consumer's code uses a declaration the diff lists.

The consumer's files are parsed against the OLD tree, where they compile, and every use resolves to its
declaration: a user's own function that happens to share a name, a comment or a string never counts. A use of
something removed or changed is either covered by a rewrite rule or a manual action. `uses_in_file` is the walk
itself, for callers that parsed the unit already (the plan's API check, migrate/rewrite/apicheck.py).

llama.cpp internals: a consumer that includes a header of the tree outside the public ones (`src/llama-vocab.h`,
found after the consumer's own include paths, as its build puts `src/` on the path) uses declarations the public
diff does not cover. Each such header is diffed between the two trees on its own (`diff_internal`) and the uses of
what it lost or changed are cross-referenced like public ones; a consumer that includes none gets the same result
as before.
"""

from __future__ import annotations

import dataclasses
import re
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import clang.cindex as ci

from migrate.apidiff.compare import ApiDiff, Break, ChangeKind, DefaultChange
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
# Where changed defaults come from (a call, a variable) and where a field is assigned (a member, a designator).
DEFAULT_KINDS = frozenset({K.CALL_EXPR, K.VAR_DECL, K.MEMBER_REF_EXPR, K.MEMBER_REF})
# Headers of a llama.cpp tree the public diff compares (or that belong to ggml's own public API); any other header of
# the tree a consumer includes is an internal one.
PUBLIC_PREFIXES = ("include/", "common/", "ggml/include/")


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
    review: list[ApiUse] = field(default_factory=list)  # uses that still compile: a person checks the meaning
    parse_errors: list[str] = field(default_factory=list)  # file:line: message, for files libclang could not parse
    parse_seconds: float = 0.0
    # llama.cpp internals the files include (header relative to the tree -> what its own diff found)
    internal: dict[str, str] = field(default_factory=dict)

    def add(self, use: ApiUse, covered: set[str]) -> None:
        """A rule rewrites it (covered); else it still compiles (to review), or somebody must change it (manual)."""
        if use.symbol in covered:
            self.covered.append(CoveredUse(**asdict(use)))
        elif use.compiles:  # the diff's verdict (or this call's)
            self.review.append(use)
        else:
            self.manual.append(ManualAction(**asdict(use)))

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


_TOP_LEVEL: weakref.WeakKeyDictionary[object, TopLevel] = weakref.WeakKeyDictionary()


@dataclass
class TopLevel:
    """A unit's top-level cursors, read once for every walk of the unit (the rewrite's collector and this cross
    reference): in order with their kind and file, and by file — declarations (walked for uses) and macro
    expansions. `#include`s are left out: leaves that hold no use."""

    ordered: list[tuple[ci.Cursor, ci.CursorKind, str | None]] = field(default_factory=list)  # expansions left out
    declarations: dict[str, list[ci.Cursor]] = field(default_factory=dict)
    expansions: dict[str, list[ci.Cursor]] = field(default_factory=dict)


def top_level(tu: ci.TranslationUnit) -> TopLevel:
    """One pass per unit, however many files are scanned and walks made. Only the consumer's own declarations are
    walked: walking the headers' cursors too costs seconds, finds nothing."""
    found = _TOP_LEVEL.get(tu)
    if found is None:
        found = TopLevel()
        for cursor in tu.cursor.get_children():
            kind = cursor.kind
            if kind == K.INCLUSION_DIRECTIVE:
                continue
            file = cursor.location.file
            name = file.name if file is not None else None
            if kind == K.MACRO_INSTANTIATION:
                if name is not None:
                    found.expansions.setdefault(name, []).append(cursor)
                continue
            found.ordered.append((cursor, kind, name))
            if name is not None:
                found.declarations.setdefault(name, []).append(cursor)
        _TOP_LEVEL[tu] = found
    return found


def _preorder(top: TopLevel, name: str) -> Iterator[ci.Cursor]:
    for declaration in top.declarations.get(name, []):
        yield from declaration.walk_preorder()


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
    # src/ last: an internal header the consumer includes by name (`llama-vocab.h`) is found there, after its own
    internals = [f"-I{(root / 'src').resolve()}"] if (root / "src").is_dir() else []
    try:
        # the detailed record keeps macro expansions and definitions: macro uses are cross-referenced too
        return index().parse(str(path), args=[*clang_args(root, language), *extra_args, *internals],
                             options=ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD)  # fmt: skip
    except ci.TranslationUnitLoadError:
        return None


@dataclass
class InternalDiff:
    """One internal header of llama.cpp compared between two trees on its own."""

    header: str  # relative to the tree: `src/llama-vocab.h`
    status: str  # "compared: 0 removed, 1 changed", or "not compared: why"
    diff: ApiDiff | None = None
    old_headers: OldHeaders | None = None  # recognises its declarations in a unit (also in a copy of the tree)
    # what it declares at the target, named as the diff's uses name them (functions, constants, types, macros,
    # "struct.field"): a public declaration that moved here still compiles for code that includes it
    new_names: frozenset[str] = frozenset()


def diff_internal(header: str, old_root: Path, new_root: Path, old_label: tuple[str, str] = ("", ""),
                  new_label: tuple[str, str] = ("", "")) -> InternalDiff:  # fmt: skip
    """`header` (relative to both trees) diffed between them, as the public headers are; the labels are each tree's
    (tag, commit) as the diff shows them."""
    from migrate.apidiff.compare import diff as compare
    from migrate.apidiff.parse import parse_surface

    old_root, new_root = old_root.resolve(), new_root.resolve()
    try:
        before = parse_surface(old_root, *old_label, [header])
        after = parse_surface(new_root, *new_label, [header])
    except ApiDiffError as exc:
        return InternalDiff(header, f"not compared: {exc}")
    error = before.skipped_headers.get(header) or after.skipped_headers.get(header)
    if error:
        return InternalDiff(header, f"not compared: it does not parse on its own ({error})")
    found = compare(before, after)
    changed = {kind: sum(c.get(kind, 0) for c in found.counts().values()) for kind in ("removed", "changed")}
    names = [*(f.name for f in after.functions), *(c.name for c in after.constants), *(t.name for t in after.types),
             *(m.name for m in after.macros), *(f.key for f in after.fields)]  # fmt: skip
    return InternalDiff(header, f"compared: {changed['removed']} removed, {changed['changed']} changed", found,
                        OldHeaders(old_root, [header]), frozenset(names))  # fmt: skip


# What a public declaration that left the public headers may have become: declared in an internal header instead.
MOVABLE = frozenset({ChangeKind.REMOVED, ChangeKind.CONSTANT_REMOVED, ChangeKind.TYPE_REMOVED,
                     ChangeKind.FIELD_REMOVED, ChangeKind.MACRO_REMOVED})  # fmt: skip


def moved_into(use: ApiUse, internals: Iterable[tuple[str, frozenset[str]]]) -> ApiUse:
    """A use of a declaration gone from the public headers that an internal header its unit includes declares at
    the target (`internals`: (header, what it declares there)): moved there, it still compiles."""
    if use.kind not in MOVABLE or use.compiles:
        return use
    for header, names in internals:
        if use.symbol in names:
            return dataclasses.replace(use, kind=ChangeKind.MOVED, compiles=True,
                                       note=f"declared at the target in `{header}`, which this code includes")
    return use


def _labels(tree: SourceTree | Path) -> tuple[str, str]:
    return (tree.provided, tree.commit) if isinstance(tree, SourceTree) else ("", "")


def internal_includes(tu: ci.TranslationUnit, root: Path) -> list[str]:
    """The headers of the llama.cpp tree at `root` outside its public ones that code outside the tree includes,
    relative to the tree (in the order first included)."""
    found: list[str] = []
    for inclusion in tu.get_includes():
        source, included = inclusion.source, inclusion.include
        if source is None or included is None:
            continue
        target = Path(included.name).resolve()
        if not target.is_relative_to(root) or Path(source.name).resolve().is_relative_to(root):
            continue
        relative = target.relative_to(root).as_posix()
        if not relative.startswith(PUBLIC_PREFIXES) and relative not in found:
            found.append(relative)
    return found


def uses_in_file(diff: ApiDiff, path: Path, tu: ci.TranslationUnit, old_headers: OldHeaders,
                 walked: list[ci.Cursor] | None = None) -> list[ApiUse]:  # fmt: skip
    """Each use in `path` (a file of the parsed unit `tu`) of what `diff` lists, once: libclang reports a qualified
    call (`console::set_display(...)`) twice, as the call (at `console`, where the name is not spelled, so it looks
    like a macro expansion) and as the callee (at the name); the echo is dropped and the use at the name kept. A
    use really expanded from a macro has no such twin. `walked`: the file's cursors in preorder, as a walk made
    before found them (the rewrite's collector); None: they are walked here."""
    uses = list(_all_uses_in_file(diff, path, tu, old_headers, walked))
    spelled = {(u.line, u.symbol) for u in uses if not u.in_macro}
    return [u for u in uses if not u.in_macro or (u.line, u.symbol) not in spelled]


def _all_uses_in_file(diff: ApiDiff, path: Path, tu: ci.TranslationUnit, old_headers: OldHeaders,
                      walked: list[ci.Cursor] | None) -> Iterator[ApiUse]:  # fmt: skip
    name = str(path)
    data = path.read_bytes()
    lines = data.splitlines()
    seen: set[tuple[int, int, str]] = set()
    # a call is visited before its callee's reference (preorder): its verdict waits here for the use(s) to come
    judged: dict[tuple[int, str], tuple[int, ...]] = {}  # -> the parameters passed a pointer to const
    defaults = DefaultUses(diff, old_headers, name, data) if diff.defaults_by_setter else None
    top = top_level(tu)
    for cursor in _preorder(top, name) if walked is None else walked:
        kind = cursor.kind
        if defaults is not None and kind in DEFAULT_KINDS:
            defaults.visit(cursor, kind)
        if kind not in USE_KINDS:
            continue
        ref = cursor.referenced
        if ref is None or not old_headers.tracked(ref):
            continue
        location = cursor.location
        if location.file is None or location.file.name != name:
            continue
        item = _break_for(diff, ref)
        if item is not None and item.const_dropped and kind == K.CALL_EXPR:
            judged[(location.line, item.symbol)] = _const_arguments(cursor, item.const_dropped)
        spot = (location.line, location.column, item.symbol if item else "")
        if item is None or spot in seen:
            continue
        seen.add(spot)
        yield _use(item, cursor, name, lines, judged.get((location.line, item.symbol)))
    yield from _macro_uses(diff, top, name, lines, old_headers)
    if defaults is not None:
        yield from defaults.uses(lines)


def _macro_uses(diff: ApiDiff, top: TopLevel, name: str, lines: list[bytes],
                old_headers: OldHeaders) -> Iterator[ApiUse]:  # fmt: skip
    """Uses in `name` of a tracked header's macro that the diff lists: every one of a macro that no longer compiles;
    of one that still does (changed tokens, same parameters), the first of the file, with the count."""
    first: dict[str, ApiUse] = {}
    count: dict[str, int] = {}
    found = [*_expansions(diff, top.expansions.get(name, []), old_headers), *_in_own_macros(diff, top, name)]
    for item, where in sorted(found, key=lambda f: (f[1].location.line, f[1].location.column)):
        use = _use(item, where, name, lines, None)
        if not item.compiles:
            yield use
            continue
        first.setdefault(item.symbol, use)
        count[item.symbol] = count.get(item.symbol, 0) + 1
    for symbol, use in first.items():
        if count[symbol] > 1:
            use.note = f"{use.note}; {count[symbol]} uses in this file, listed once"
        yield use


def _expansions(diff: ApiDiff, expansions: list[ci.Cursor],
                old_headers: OldHeaders) -> Iterator[tuple[Break, ci.Cursor]]:  # fmt: skip
    for cursor in expansions:
        item = diff.breaks.get(f"m:{cursor.spelling}")
        if item is None:
            continue
        ref = cursor.referenced
        if ref is not None and old_headers.tracked(ref):  # not the consumer's own macro of that name
            yield item, cursor


def _in_own_macros(diff: ApiDiff, top: TopLevel, name: str) -> Iterator[tuple[Break, ci.Token]]:
    """The listed macros named in the bodies of `name`'s own macros that the unit expands (directly, or through
    another of them): libclang records only the outer expansion (`MY_PATH`), not the one inside its body
    (`DEFAULT_MODEL_PATH`). A macro defined here and never expanded is not a use: its body is never compiled."""
    own = [c for c in top.declarations.get(name, []) if c.kind == K.MACRO_DEFINITION]
    bodies = {c.spelling: [t for t in list(c.get_tokens())[1:] if t.kind == ci.TokenKind.IDENTIFIER] for c in own}
    if not any(f"m:{t.spelling}" in diff.breaks for body in bodies.values() for t in body):
        return
    expanded = {c.spelling for cursors in top.expansions.values() for c in cursors}
    reached = set(bodies) & expanded
    grown = reached
    while grown:
        grown = {t.spelling for m in grown for t in bodies[m]} & set(bodies) - reached
        reached |= grown
    for macro, body in bodies.items():
        if macro in reached:
            yield from ((diff.breaks[f"m:{t.spelling}"], t) for t in body
                        if f"m:{t.spelling}" in diff.breaks and t.spelling not in bodies)  # fmt: skip


class DefaultUses:
    """Where a file gets defaults that changed: a call of a default-params function whose defaults changed, or an
    object of a struct whose member initialisers changed, made fresh (not copied) — unless the file assigns every
    changed field itself somewhere (`p.n_gpu_layers = ...`, `{ .n_gpu_layers = ... }`)."""

    def __init__(self, diff: ApiDiff, old_headers: OldHeaders, name: str, data: bytes) -> None:
        self.diff, self.old_headers, self.name, self.data = diff, old_headers, name, data
        self.sources: list[tuple[ci.Cursor, str, str]] = []  # (cursor, setter key, symbol shown)
        self.assigned: set[str] = set()  # "struct.field"

    def visit(self, cursor: ci.Cursor, kind: ci.CursorKind) -> None:
        if kind == K.CALL_EXPR:
            ref = cursor.referenced
            if ref is None or ref.kind != K.FUNCTION_DECL:
                return
            key = f"d:{ref.spelling}"
            if key in self.diff.defaults_by_setter and self.old_headers.tracked(ref) and self._here(cursor):
                self.sources.append((cursor, key, f"{ref.spelling}()"))
        elif kind == K.VAR_DECL:
            record = cursor.type.get_canonical()
            if record.kind != ci.TypeKind.RECORD:
                return  # a pointer or reference: the object was made elsewhere
            decl = record.get_declaration()
            struct = record_name(decl)
            key = f"d:{struct}"
            if (key in self.diff.defaults_by_setter and self.old_headers.tracked(decl) and self._here(cursor)
                    and _made_fresh(cursor)):  # fmt: skip
                self.sources.append((cursor, key, struct))
        elif kind in (K.MEMBER_REF_EXPR, K.MEMBER_REF):
            ref = cursor.referenced
            if ref is not None and ref.kind == K.FIELD_DECL and self._assigned(cursor):
                self.assigned.add(f"{record_name(ref.semantic_parent)}.{ref.spelling}")

    def _here(self, cursor: ci.Cursor) -> bool:
        file = cursor.location.file
        return file is not None and file.name == self.name

    def _assigned(self, cursor: ci.Cursor) -> bool:
        """The member is the left side of a plain `=` (or a designator's): the text after it, blanks skipped."""
        end = cursor.extent.end
        if end.file is None or end.file.name != self.name:
            return False
        rest = self.data[end.offset : end.offset + 64].lstrip()
        return rest.startswith(b"=") and not rest.startswith(b"==")

    def uses(self, lines: list[bytes]) -> Iterator[ApiUse]:
        for cursor, key, symbol in self.sources:
            left = [c for c in self.diff.defaults_by_setter[key] if c.old.key not in self.assigned]
            if left:
                yield _default_use(cursor, symbol, left, self.name, lines)


def _made_fresh(var: ci.Cursor) -> bool:
    """`T x;`, `T x{}`, `T x = {...}`: the object has the struct's own defaults (not a copy of another object's)."""
    for child in var.get_children():
        if child.kind in (K.TYPE_REF, K.NAMESPACE_REF, K.TEMPLATE_REF, K.INIT_LIST_EXPR):
            continue
        ref = child.referenced if child.kind == K.CALL_EXPR else None
        if ref is not None and ref.kind == K.CONSTRUCTOR and not list(child.get_arguments()):
            continue  # the implicit default constructor
        return False
    return True


def _default_use(cursor: ci.Cursor, symbol: str, changes: list[DefaultChange], name: str,
                 lines: list[bytes]) -> ApiUse:  # fmt: skip
    location = cursor.location
    fields = ", ".join(f"`{c.old.name}`: `{c.old.shown()}` → `{c.new.shown()}`" for c in changes)
    note = f"{fields}; this file never assigns {'it' if len(changes) == 1 else 'them'}"
    return ApiUse(name, location.line, location.column, symbol, ChangeKind.DEFAULT_CHANGED,
                  "; ".join(f"{c.old.name} = {c.old.shown()}" for c in changes),
                  "; ".join(f"{c.new.name} = {c.new.shown()}" for c in changes), note,
                  not _spelled_here(lines, cursor, symbol.rstrip("()")), compiles=True)  # fmt: skip


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
    new_tree: SourceTree | Path | None = None,
) -> CrossReference:
    """Every use in `files` of a declaration removed or changed at the target, split into covered and manual.

    `covered` names what rewrite rules handle: function names, "struct.field", enum constants, type names.
    The files are parsed against the OLD tree, where the code they hold compiles. With `new_tree`, the internal
    headers of llama.cpp the files include are diffed too and their uses cross-referenced (`CrossReference.internal`
    says which and what each diff found).
    """
    root = _root_of(old_tree).resolve()
    headers = list(old_headers) if old_headers is not None else candidate_headers(root)
    tracked = OldHeaders(root, headers)
    result = CrossReference()
    internal: dict[str, InternalDiff] = {}
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
        included: list[InternalDiff] = []
        for header in internal_includes(tu, root) if new_tree is not None else []:
            if header not in internal:
                internal[header] = diff_internal(header, root, _root_of(new_tree), _labels(old_tree),
                                                 _labels(new_tree))  # fmt: skip
                result.internal[header] = internal[header].status
            included.append(internal[header])
        for use in uses_in_file(diff, path, tu, tracked):
            result.add(moved_into(use, [(i.header, i.new_names) for i in included]), covered)
        for item in internal.values():
            if item.diff is not None and item.old_headers is not None:
                for use in uses_in_file(item.diff, path, tu, item.old_headers):
                    result.add(use, covered)
    result.parse_seconds = round(time.perf_counter() - started, 3)
    return result
