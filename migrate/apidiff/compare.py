"""Compare two surfaces by declaration, not by text: what was removed, added, changed, moved to another header or
given another default, each change with where it is written on both sides.

`ApiDiff.breaks` indexes what a consumer's use can run into (cross reference, xref.py), each with the verdict
whether code naming it still compiles: set here, from the declarations, never read back from a note's words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from migrate.apidiff.surface import (
    ApiSurface,
    DefaultSource,
    EnumConstant,
    FieldDefault,
    FunctionDecl,
    MacroDef,
    StructField,
    TypeDecl,
    Where,
)

REVALUED_NOTE = "code that names the constant still compiles; check where its number is stored or exchanged"
DEFAULTS_NOTE = "new trailing parameters have defaults: calls written for the old signature still compile"
MACRO_NOTE = "the same name and parameters expand to other tokens: code using it compiles, and may mean another thing"
# A gone header is "renamed" when at least this share of its declarations went to one header the old tree lacked.
RENAMED_SHARE = 0.5


class ChangeKind(StrEnum):
    """What happened to a declaration between the two builds, as shown in reports and manual actions."""

    REMOVED = "removed"
    RESIGNATURED = "re-signatured"
    DEPRECATED = "newly deprecated"
    FIELD_REMOVED = "field removed"
    FIELD_RETYPED = "field retyped"
    CONSTANT_REMOVED = "enum constant removed"
    CONSTANT_REVALUED = "enum constant re-valued"
    TYPE_REMOVED = "type removed"
    TYPE_CHANGED = "type changed"
    HEADER_REMOVED = "header removed"
    HEADER_RENAMED = "header renamed"
    MOVED = "moved to another header"
    MACRO_REMOVED = "macro removed"
    MACRO_CHANGED = "macro changed"
    DEFAULT_CHANGED = "default value changed"


class DeclKind(StrEnum):
    """What a moved declaration is."""

    FUNCTION = "function"
    TYPE = "type"
    CONSTANT = "enum constant"
    MACRO = "macro"


@dataclass
class FunctionChange:
    old: FunctionDecl
    new: list[FunctionDecl]  # every declaration of that name at the new build

    @property
    def name(self) -> str:
        return self.old.name

    def new_declarations(self) -> str:
        return "; ".join(decl.declaration for decl in self.new)


@dataclass
class FieldChange:
    old: StructField
    new: StructField


@dataclass
class ConstantChange:
    old: EnumConstant
    new: EnumConstant


@dataclass
class TypeChange:
    old: TypeDecl
    new: TypeDecl


@dataclass
class HeaderChange:
    """A header the consumer could include at the old build that the new one does not have."""

    header: str
    kind: ChangeKind  # HEADER_REMOVED or HEADER_RENAMED
    old: Where  # the header itself
    new: Where | None  # the header it was renamed to
    moved_to: dict[str, int]  # where its declarations went: header -> how many
    gone: int  # its declarations found nowhere at the new build (listed as removed)


@dataclass
class MovedDecl:
    """A declaration the new build has in another header: not removed, but an include may need to change."""

    kind: DeclKind
    name: str
    old: Where
    new: Where


@dataclass
class MacroChange:
    old: MacroDef
    new: MacroDef
    kind: ChangeKind = ChangeKind.MACRO_CHANGED


@dataclass
class DefaultChange:
    """A params struct field both builds have, whose default value differs: code compiles, behaves differently."""

    old: FieldDefault
    new: FieldDefault
    kind: ChangeKind = ChangeKind.DEFAULT_CHANGED

    @property
    def key(self) -> str:
        return self.old.key


@dataclass
class Break:
    """Something a consumer may use at the old build that is gone or different at the new one."""

    symbol: str  # how `covered` names it: function name, "struct.field", constant or type name
    kind: ChangeKind
    old: str
    new: str | None
    note: str | None = None
    compiles: bool = False  # whether code naming it still compiles at the new build
    # a re-signature that only dropped `const` from these pointer parameters: whether a call still compiles
    # depends on what it passes there, so each call is judged on its arguments
    const_dropped: tuple[int, ...] = ()


@dataclass
class ApiDiff:
    old: str  # labels: "b5415 (cf3129665b14)"
    new: str
    headers: list[str]  # compared: present and parsed at both builds
    removed_functions: list[FunctionDecl] = field(default_factory=list)
    added_functions: list[FunctionDecl] = field(default_factory=list)
    changed_functions: list[FunctionChange] = field(default_factory=list)
    deprecated_functions: list[FunctionDecl] = field(default_factory=list)  # the new declarations
    removed_fields: list[StructField] = field(default_factory=list)
    added_fields: list[StructField] = field(default_factory=list)
    retyped_fields: list[FieldChange] = field(default_factory=list)
    removed_constants: list[EnumConstant] = field(default_factory=list)
    added_constants: list[EnumConstant] = field(default_factory=list)
    revalued_constants: list[ConstantChange] = field(default_factory=list)
    removed_types: list[TypeDecl] = field(default_factory=list)
    added_types: list[TypeDecl] = field(default_factory=list)
    changed_types: list[TypeChange] = field(default_factory=list)
    removed_headers: list[HeaderChange] = field(default_factory=list)  # removed or renamed
    moved: list[MovedDecl] = field(default_factory=list)
    removed_macros: list[MacroDef] = field(default_factory=list)
    added_macros: list[MacroDef] = field(default_factory=list)
    changed_macros: list[MacroChange] = field(default_factory=list)
    changed_defaults: list[DefaultChange] = field(default_factory=list)
    # What cross_reference looks cursors up in: "f:name|signature", "f:name", "s:struct.field", "e:CONST",
    # "t:kind name", "m:MACRO"
    breaks: dict[str, Break] = field(default_factory=dict, repr=False)
    # Old overloads per function name, for uses whose exact signature is not in the surface (e.g. a .c consumer).
    old_overloads: dict[str, int] = field(default_factory=dict, repr=False)
    # Changed defaults by what hands them out: "d:llama_context_default_params" (a default-params function) or
    # "d:common_params" (a struct whose member initialisers changed; every object of it gets them)
    defaults_by_setter: dict[str, list[DefaultChange]] = field(default_factory=dict, repr=False)

    def counts(self) -> dict[str, dict[str, int]]:
        renamed = sum(1 for h in self.removed_headers if h.kind == ChangeKind.HEADER_RENAMED)
        return {
            "functions": {"removed": len(self.removed_functions), "added": len(self.added_functions),
                          "changed": len(self.changed_functions), "deprecated": len(self.deprecated_functions)},
            "fields": {"removed": len(self.removed_fields), "added": len(self.added_fields),
                       "changed": len(self.retyped_fields)},
            "enum_constants": {"removed": len(self.removed_constants), "added": len(self.added_constants),
                               "changed": len(self.revalued_constants)},
            "types": {"removed": len(self.removed_types), "added": len(self.added_types),
                      "changed": len(self.changed_types)},
            "macros": {"removed": len(self.removed_macros), "added": len(self.added_macros),
                       "changed": len(self.changed_macros)},
            "headers": {"removed": len(self.removed_headers) - renamed, "renamed": renamed},
            "moved": {"moved": len(self.moved)},
            "defaults": {"changed": len(self.changed_defaults)},
        }  # fmt: skip

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("breaks")
        data.pop("old_overloads")
        data.pop("defaults_by_setter")
        data["counts"] = self.counts()
        return data

    def function_names(self, which: str) -> set[str]:
        items = getattr(self, which)
        return {item.name for item in items}


def _by_name(functions: Iterable[FunctionDecl]) -> dict[str, list[FunctionDecl]]:
    grouped: dict[str, list[FunctionDecl]] = {}
    for decl in functions:
        grouped.setdefault(decl.name, []).append(decl)
    return grouped


def _in(headers: set[str], items: Iterable) -> list:
    return [item for item in items if item.header in headers]


@dataclass(frozen=True)
class _Sides:
    """Which headers each side of a comparison covers. Old side: the headers both builds parsed, and those the new
    build no longer has (their declarations are moved or removed). New side for "added": the shared headers only
    (a new header's declarations are new, not news); for "still there?": every header of the new build."""

    shared: set[str]
    gone: set[str]

    @property
    def old(self) -> set[str]:
        return self.shared | self.gone


def _diff_functions(result: ApiDiff, old: ApiSurface, new: ApiSurface, sides: _Sides) -> None:
    old_by_name, new_by_name = _by_name(old.functions), _by_name(new.functions)
    old_sigs = {(d.name, d.signature) for d in old.functions}
    new_sigs = {(d.name, d.signature): d for d in new.functions}
    for decl in _in(sides.old, old.functions):
        match = new_sigs.get((decl.name, decl.signature))
        if decl.name not in new_by_name:
            result.removed_functions.append(decl)
        elif match is None:
            fresh = [d for d in new_by_name[decl.name] if (d.name, d.signature) not in old_sigs]
            result.changed_functions.append(FunctionChange(decl, fresh or new_by_name[decl.name]))
        elif match.deprecated and not decl.deprecated:
            result.deprecated_functions.append(match)
    changed_names = {change.name for change in result.changed_functions}
    for decl in _in(sides.shared, new.functions):
        if (decl.name, decl.signature) not in old_sigs and decl.name not in changed_names:
            result.added_functions.append(decl)
    result.old_overloads = {name: len(decls) for name, decls in old_by_name.items()}


def _diff_fields(result: ApiDiff, old: ApiSurface, new: ApiSurface, sides: _Sides) -> None:
    new_fields = {f.key: f for f in new.fields}
    old_fields = {f.key: f for f in old.fields}
    new_structs = {f.struct for f in new.fields} | {t.name for t in new.types}
    for item in _in(sides.old, old.fields):
        match = new_fields.get(item.key)
        if match is None:
            # Fields of a struct that is gone altogether are counted with the type, not one by one.
            if item.struct in new_structs:
                result.removed_fields.append(item)
        elif match.canonical_type != item.canonical_type:
            result.retyped_fields.append(FieldChange(item, match))
    old_structs = {f.struct for f in old.fields} | {t.name for t in old.types}
    result.added_fields = [f for f in _in(sides.shared, new.fields)
                           if f.key not in old_fields and f.struct in old_structs]  # fmt: skip


def _pair(old_items: Iterable[Any], new_items: Iterable[Any], key: Callable[[Any], Any], sides: _Sides,
          differs: Callable[[Any, Any], bool]) -> tuple[list[Any], list[tuple[Any, Any]], list[Any]]:  # fmt: skip
    """Items matched by `key`: (removed, (old, new) pairs that `differs`, added on the shared headers)."""
    new_by_key = {key(item): item for item in new_items}
    old_keys = {key(item) for item in old_items}
    removed, changed = [], []
    for item in _in(sides.old, old_items):
        match = new_by_key.get(key(item))
        if match is None:
            removed.append(item)
        elif differs(item, match):
            changed.append((item, match))
    return removed, changed, [item for item in _in(sides.shared, new_items) if key(item) not in old_keys]


# Declarations matched by one key and compared on one property: (the surface's list, key, what differs, the
# ApiDiff lists of removed, changed and added ones, the change's type)
_KEYED: tuple[tuple[str, Callable[[Any], Any], Callable[[Any, Any], bool], str, str, str, type], ...] = (
    ("constants", lambda c: c.name, lambda a, b: a.value != b.value,
     "removed_constants", "revalued_constants", "added_constants", ConstantChange),
    ("types", lambda t: t.key, lambda a, b: a.underlying != b.underlying,
     "removed_types", "changed_types", "added_types", TypeChange),
    ("macros", lambda m: m.name, lambda a, b: (a.params, a.value) != (b.params, b.value),
     "removed_macros", "changed_macros", "added_macros", MacroChange),
)  # fmt: skip


def _diff_keyed(result: ApiDiff, old: ApiSurface, new: ApiSurface, sides: _Sides) -> None:
    for attr, key, differs, removed, changed, added, change in _KEYED:
        gone, pairs, fresh = _pair(getattr(old, attr), getattr(new, attr), key, sides, differs)
        getattr(result, removed).extend(gone)
        getattr(result, changed).extend(change(a, b) for a, b in pairs)
        setattr(result, added, fresh)


def _diff_defaults(result: ApiDiff, old: ApiSurface, new: ApiSurface) -> None:
    """Fields both builds default (a removed or added field is reported as such), whose default differs."""
    new_defaults = {d.key: d for d in new.defaults}
    for item in old.defaults:
        match = new_defaults.get(item.key)
        if match is not None and match.shown() != item.shown():
            result.changed_defaults.append(DefaultChange(item, match))


def _declarations(surface: ApiSurface, headers: set[str]) -> dict[tuple[DeclKind, str], Where]:
    """Where each function, type, enum constant and macro of `headers` is declared (first declaration)."""
    found: dict[tuple[DeclKind, str], Where] = {}
    groups: list[tuple[DeclKind, Iterable, str]] = [(DeclKind.FUNCTION, surface.functions, "name"),
                                                    (DeclKind.TYPE, surface.types, "key"),
                                                    (DeclKind.CONSTANT, surface.constants, "name"),
                                                    (DeclKind.MACRO, surface.macros, "name")]  # fmt: skip
    for kind, items, key in groups:
        for item in _in(headers, items):
            found.setdefault((kind, getattr(item, key)), Where(item.header, item.line))
    return found


def _diff_moves(result: ApiDiff, old: ApiSurface, new: ApiSurface, sides: _Sides) -> None:
    """Declarations now in another header. An enum constant moves with its enum: only the enum is listed."""
    before = _declarations(old, sides.old)
    after = _declarations(new, set(new.headers))
    moved_enums = set()
    for (kind, name), where in before.items():
        there = after.get((kind, name))
        if there is not None and there.file != where.file:
            result.moved.append(MovedDecl(kind, name, where, there))
            if kind == DeclKind.TYPE and name.startswith("enum "):
                moved_enums.add(name.removeprefix("enum "))
    enum_of = {c.name: c.enum for c in old.constants}
    result.moved = [m for m in result.moved if not (m.kind == DeclKind.CONSTANT and enum_of.get(m.name) in moved_enums)]
    _diff_headers(result, old, sides, before, after)


_Declared = dict[tuple[DeclKind, str], Where]


def _diff_headers(result: ApiDiff, old: ApiSurface, sides: _Sides, before: _Declared, after: _Declared) -> None:
    """Each header gone at the new build: renamed when most of what it declared went to one header the old build
    did not have, else removed; with where its declarations went."""
    old_headers = set(old.candidate_headers())
    for header in (h for h in old.candidate_headers() if h in sides.gone):
        keys = [key for key, where in before.items() if where.file == header]
        destinations = Counter(after[key].file for key in keys if key in after)
        gone = len(keys) - sum(destinations.values())
        top = destinations.most_common(1)
        renamed = bool(top) and top[0][0] not in old_headers and top[0][1] >= RENAMED_SHARE * len(keys)
        kind = ChangeKind.HEADER_RENAMED if renamed else ChangeKind.HEADER_REMOVED
        new_where = Where(top[0][0], 1) if renamed else None
        result.removed_headers.append(HeaderChange(header, kind, Where(header, 1), new_where, dict(destinations),
                                                   gone))  # fmt: skip


def _extends_with_defaults(old: FunctionDecl, new: FunctionDecl) -> bool:
    """The new declaration only appends parameters that have default values: old calls still compile."""
    n = len(old.param_types)
    return (
        new.result_type == old.result_type
        and new.param_types[:n] == old.param_types
        and len(new.param_types) > n
        and all(default is not None for default in new.param_defaults[n:])
    )


def const_dropped(old: FunctionDecl, new: FunctionDecl) -> tuple[int, ...]:
    """Indexes of the pointer parameters whose pointee lost `const` when that is the only change (`const T *` ->
    `T *`, as llama_sampler_init's iface at b7785); () for any other change. Canonical spellings put the
    qualifier first: "const llama_sampler_i *"."""
    if old.result_type != new.result_type or len(old.param_types) != len(new.param_types):
        return ()
    dropped = []
    for i, (before, after) in enumerate(zip(old.param_types, new.param_types, strict=True)):
        if before == after:
            continue
        if not (before.endswith("*") and before.startswith("const ") and before.removeprefix("const ") == after):
            return ()
        dropped.append(i)
    return tuple(dropped)


def _const_note(indexes: tuple[int, ...]) -> str:
    which = ", ".join(str(i + 1) for i in indexes)
    return (f"only `const` was dropped from pointer parameter(s) {which}: a call passing a non-const pointer "
            "there still compiles, one passing a pointer to const does not")


def _hint_note(decl: FunctionDecl) -> str | None:
    return f"deprecated at the old build: {decl.deprecation_hint}" if decl.deprecation_hint else None


def _resignature_break(change: FunctionChange) -> Break:
    dropped = const_dropped(change.old, change.new[0]) if len(change.new) == 1 else ()
    if dropped:
        note, compiles = _const_note(dropped), False  # decided per call, on what it passes
    elif any(_extends_with_defaults(change.old, new) for new in change.new):
        note, compiles = DEFAULTS_NOTE, True
    else:
        note, compiles = None, False
    return Break(change.name, ChangeKind.RESIGNATURED, change.old.declaration, change.new_declarations(), note,
                 compiles, dropped)  # fmt: skip


def _add_function_break(breaks: dict[str, Break], decl: FunctionDecl, item: Break) -> None:
    breaks[f"f:{decl.name}|{decl.signature}"] = item
    breaks.setdefault(f"f:{decl.name}", item)


def _index_function_breaks(result: ApiDiff) -> None:
    for decl in result.removed_functions:
        _add_function_break(result.breaks, decl, Break(decl.name, ChangeKind.REMOVED, decl.declaration, None,
                                                       _hint_note(decl)))  # fmt: skip
    for change in result.changed_functions:
        _add_function_break(result.breaks, change.old, _resignature_break(change))
    for decl in result.deprecated_functions:
        note = f"deprecated: {decl.deprecation_hint}" if decl.deprecation_hint else "deprecated"
        # a deprecated function still compiles, with a warning
        _add_function_break(result.breaks, decl, Break(decl.name, ChangeKind.DEPRECATED, decl.declaration,
                                                       decl.declaration, note, compiles=True))  # fmt: skip


def _index_breaks(result: ApiDiff, old: ApiSurface) -> None:
    _index_function_breaks(result)
    breaks = result.breaks
    for item in result.removed_fields:
        breaks[f"s:{item.key}"] = Break(item.key, ChangeKind.FIELD_REMOVED, item.declaration, None)
    for change in result.retyped_fields:
        breaks[f"s:{change.old.key}"] = Break(change.old.key, ChangeKind.FIELD_RETYPED, change.old.declaration,
                                              change.new.declaration)  # fmt: skip
    for item in result.removed_constants:
        breaks[f"e:{item.name}"] = Break(item.name, ChangeKind.CONSTANT_REMOVED, item.declaration, None)
    for change in result.revalued_constants:
        # the name follows the value: code that names it compiles and means the same
        breaks[f"e:{change.old.name}"] = Break(change.old.name, ChangeKind.CONSTANT_REVALUED, change.old.declaration,
                                               change.new.declaration, REVALUED_NOTE, compiles=True)  # fmt: skip
    gone_structs = {t.name for t in result.removed_types}
    for item in old.fields:
        if item.struct in gone_structs:
            note = f"struct {item.struct} was removed"
            breaks[f"s:{item.key}"] = Break(item.key, ChangeKind.FIELD_REMOVED, item.declaration, None, note)
    for decl in result.removed_types:
        breaks[f"t:{decl.key}"] = Break(decl.name, ChangeKind.TYPE_REMOVED, decl.declaration, None)
    for change in result.changed_types:
        breaks[f"t:{change.old.key}"] = Break(change.old.name, ChangeKind.TYPE_CHANGED, change.old.declaration,
                                              change.new.declaration)  # fmt: skip
    _index_macro_breaks(result)
    for default in result.changed_defaults:
        setter = default.old.function if default.old.source == DefaultSource.DEFAULT_PARAMS else default.old.struct
        if setter:
            result.defaults_by_setter.setdefault(f"d:{setter}", []).append(default)


def _index_macro_breaks(result: ApiDiff) -> None:
    """A removed macro does not compile; a changed one does when its parameters are the same (only what it expands
    to differs: reviewed), not when they changed."""
    for macro in result.removed_macros:
        result.breaks[f"m:{macro.name}"] = Break(macro.name, ChangeKind.MACRO_REMOVED, macro.declaration, None)
    for change in result.changed_macros:
        same = change.old.params == change.new.params
        old, new = change.old.declaration, change.new.declaration
        note = MACRO_NOTE if same else None
        result.breaks[f"m:{change.old.name}"] = Break(change.old.name, ChangeKind.MACRO_CHANGED, old, new, note, same)


def diff(old: ApiSurface, new: ApiSurface) -> ApiDiff:
    """Removed, added, changed and moved declarations, macros and defaults from `old` to `new`: over the headers both
    builds parsed, and the headers `new` no longer has at all."""
    shared = set(old.headers) & set(new.headers)
    sides = _Sides(shared, set(old.candidate_headers()) - set(new.candidate_headers()))
    result = ApiDiff(old.label(), new.label(), [h for h in old.headers if h in shared])
    _diff_functions(result, old, new, sides)
    _diff_fields(result, old, new, sides)
    _diff_keyed(result, old, new, sides)
    _diff_defaults(result, old, new)
    _diff_moves(result, old, new, sides)
    _index_breaks(result, old)
    return result
