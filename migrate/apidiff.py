"""Stage "api-diff": what llama.cpp's public headers lost, gained and changed between two builds, and where a consumer
uses any of it.

Both trees' headers (`include/llama.h`, `include/llama-cpp.h`, the `common/*.h` a shim links against) are parsed with
libclang into an `ApiSurface`; `diff` compares two surfaces by declaration, not by text, so a reformatted header is no
change and a `const &` that became `&` is one. `cross_reference` parses the consumer's files against the OLD tree and
resolves every use to its declaration: a user's own function that happens to share a name, a comment or a string never
counts. A use of something removed or changed is either covered by a rewrite rule or a manual action.

Not covered: macros (e.g. `LLAMA_DEFAULT_SEED`), global variables and C++ member functions of the `common/` structs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import clang.cindex as ci

from migrate.paths import cache_root
from migrate.sources import SourceTree
from verify.clangsetup import gcc_include_dir
from verify.clangsetup import index as clang_index
from verify.errors import ToolError

# Bump when the surface JSON changes shape or what is collected changes: older cache files are then re-parsed.
SURFACE_FORMAT = 1
INCLUDE_HEADERS = ("include/llama.h", "include/llama-cpp.h")
# Third-party code that llama.cpp ships inside common/ at some builds (stb_image moved to vendor/ later): not its API.
VENDORED_HEADERS = frozenset({"stb_image.h"})
# The headers a shim is known to use; they must parse, where other common/ headers are dropped if they do not.
REQUIRED_HEADERS = ("include/llama.h", "common/common.h", "common/sampling.h")
ERROR_SEVERITY = ci.Diagnostic.Error
# libclang spells unnamed records with their file position, which differs between trees: normalise it away.
UNNAMED = re.compile(r"\((?:unnamed|anonymous)[^()]*\)")

REVALUED_NOTE = "code that names the constant still compiles; check where its number is stored or exchanged"

K = ci.CursorKind
RECORD_KINDS = frozenset({K.STRUCT_DECL, K.CLASS_DECL, K.UNION_DECL})
FUNCTION_KINDS = frozenset({K.FUNCTION_DECL, K.FUNCTION_TEMPLATE})
TYPEDEF_KINDS = frozenset({K.TYPEDEF_DECL, K.TYPE_ALIAS_DECL})
# Declarations that only group others: descend into them.
CONTAINER_KINDS = frozenset({K.NAMESPACE, K.LINKAGE_SPEC, K.UNEXPOSED_DECL})
# Expressions and references in consumer code that name a declaration.
USE_KINDS = frozenset({K.CALL_EXPR, K.DECL_REF_EXPR, K.MEMBER_REF_EXPR, K.MEMBER_REF, K.TYPE_REF})
C_SUFFIXES = frozenset({".c"})


class ApiDiffError(ToolError):
    """The API surface could not be built (e.g. llama.h does not parse); the message says why."""


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


# --- what a surface holds ------------------------------------------------------------------------------------


@dataclass
class FunctionDecl:
    name: str  # qualified for C++ namespaces
    declaration: str  # as a reader would write it: "void llama_kv_self_clear(struct llama_context * ctx)"
    result_type: str  # canonical
    param_types: list[str]  # canonical, top-level const dropped (it is not part of the function type)
    param_names: list[str]
    param_defaults: list[str | None]
    variadic: bool
    deprecated: bool
    deprecation_hint: str | None
    header: str  # relative to the tree root
    line: int

    @property
    def signature(self) -> str:
        """What makes two declarations the same function: canonical result and parameter types."""
        params = [*self.param_types, "..."] if self.variadic else self.param_types
        return f"{self.result_type}({', '.join(params)})"


@dataclass
class StructField:
    struct: str
    name: str
    type: str  # as written
    canonical_type: str
    header: str
    line: int

    @property
    def key(self) -> str:
        return f"{self.struct}.{self.name}"

    @property
    def declaration(self) -> str:
        return f"{self.type} {self.struct}.{self.name}"


@dataclass
class EnumConstant:
    enum: str
    name: str  # qualified the way code names it: LLAMA_FOO, or common_x::VALUE for a scoped enum
    value: int
    header: str
    line: int

    @property
    def declaration(self) -> str:
        return f"{self.name} = {self.value}"


@dataclass
class TypeDecl:
    name: str
    kind: str  # "struct", "class", "union", "enum", "typedef"
    underlying: str | None  # canonical target of a typedef / using
    header: str
    line: int

    @property
    def key(self) -> str:
        # A C header often declares both `struct X {...}` and `typedef struct X X`: keep them apart.
        return f"{self.kind} {self.name}"

    @property
    def declaration(self) -> str:
        return f"typedef {self.underlying} {self.name}" if self.kind == "typedef" else f"{self.kind} {self.name}"


@dataclass
class ApiSurface:
    """The declarations of one llama.cpp tree's public headers."""

    tree: str  # the build tag provided
    commit: str
    fingerprint: str  # hash of the headers' contents: a cache entry for a modified tree is not reused
    headers: list[str]
    skipped_headers: dict[str, str]  # header -> first error, for common/ headers that did not parse
    functions: list[FunctionDecl]
    fields: list[StructField]
    constants: list[EnumConstant]
    types: list[TypeDecl]
    parse_seconds: float
    from_cache: bool = False
    load_seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("from_cache")
        data.pop("load_seconds")
        data["format"] = SURFACE_FORMAT
        return data

    @classmethod
    def from_json(cls, data: dict) -> ApiSurface:
        return cls(
            tree=data["tree"],
            commit=data["commit"],
            fingerprint=data["fingerprint"],
            headers=list(data["headers"]),
            skipped_headers=dict(data["skipped_headers"]),
            functions=[FunctionDecl(**item) for item in data["functions"]],
            fields=[StructField(**item) for item in data["fields"]],
            constants=[EnumConstant(**item) for item in data["constants"]],
            types=[TypeDecl(**item) for item in data["types"]],
            parse_seconds=float(data["parse_seconds"]),
        )

    def label(self) -> str:
        return f"{self.tree} ({self.commit[:12]})"


# --- parsing a tree's headers ----------------------------------------------------------------------------------


def clang_args(root: Path, language: str = "c++") -> list[str]:
    """Flags that parse llama.cpp's headers, or a consumer file against them, without a build."""
    args = ["-x", language, "-std=c++17" if language == "c++" else "-std=c11"]
    gcc_include = gcc_include_dir()
    if gcc_include:
        args += ["-isystem", gcc_include]
    for sub in ("include", "ggml/include", "common", "", "vendor"):
        if (root / sub).is_dir():
            args.append(f"-I{(root / sub).resolve()}")
    return args


def candidate_headers(root: Path) -> list[str]:
    found = [name for name in INCLUDE_HEADERS if (root / name).is_file()]
    common = root / "common"
    if common.is_dir():
        found += [f"common/{p.name}" for p in sorted(common.glob("*.h")) if p.name not in VENDORED_HEADERS]
    return found


def headers_fingerprint(root: Path, headers: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for name in headers:
        digest.update(name.encode())
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def _index() -> ci.Index:
    return clang_index()


def _parse_headers(root: Path, headers: list[str]) -> ci.TranslationUnit:
    """One translation unit including every header: one parse instead of one per header."""
    source = "".join(f'#include "{(root / name).resolve()}"\n' for name in headers)
    name = str(root.resolve() / "apidiff_surface.cpp")
    options = ci.TranslationUnit.PARSE_SKIP_FUNCTION_BODIES
    return _index().parse(name, args=clang_args(root), unsaved_files=[(name, source)], options=options)


def _first_error(tu: ci.TranslationUnit) -> str | None:
    for diag in tu.diagnostics:
        if diag.severity >= ERROR_SEVERITY:
            where = f"{diag.location.file}:{diag.location.line}: " if diag.location.file else ""
            return f"{where}{diag.spelling}"
    return None


def _parse_clean(root: Path, headers: list[str]) -> tuple[ci.TranslationUnit, list[str], dict[str, str]]:
    """Parse all headers; when that fails, drop the optional headers that do not parse on their own."""
    tu = _parse_headers(root, headers)
    if _first_error(tu) is None:
        return tu, headers, {}
    required = [h for h in headers if h in REQUIRED_HEADERS]
    error = _first_error(_parse_headers(root, required)) if required else None
    if error:
        raise ApiDiffError(f"llama.cpp headers at {root} do not parse with libclang: {error}")
    kept, skipped = list(required), {}
    for header in headers:
        if header in required:
            continue
        error = _first_error(_parse_headers(root, [*required, header]))
        if error:
            skipped[header] = error
        else:
            kept.append(header)
    kept = [h for h in headers if h in kept]
    return _parse_headers(root, kept), kept, skipped


class _HeaderMap:
    """Maps libclang file names to tracked header names; a cache because every cursor asks."""

    def __init__(self, root: Path, headers: Iterable[str]) -> None:
        self.by_path = {str((root / h).resolve()): h for h in headers}
        self.seen: dict[str, str | None] = {}

    def header(self, cursor: ci.Cursor) -> str | None:
        file = cursor.location.file
        if file is None:
            return None
        name = file.name
        if name not in self.seen:
            self.seen[name] = self.by_path.get(str(Path(name).resolve()))
        return self.seen[name]


def _type_spelling(type_: ci.Type) -> str:
    return UNNAMED.sub("(unnamed)", type_.spelling)


def _canonical(type_: ci.Type) -> str:
    return _type_spelling(type_.get_canonical())


def qualified_name(cursor: ci.Cursor) -> str:
    """Name with its namespaces, classes and scoped enum: how code outside must write it."""
    parts = [cursor.spelling]
    parent = cursor.semantic_parent
    while parent is not None and parent.kind != K.TRANSLATION_UNIT:
        scoped_enum = parent.kind == K.ENUM_DECL and parent.is_scoped_enum()
        named_scope = parent.kind in RECORD_KINDS or parent.kind in (K.NAMESPACE, K.CLASS_TEMPLATE) or scoped_enum
        if named_scope and parent.spelling and not parent.is_anonymous():
            parts.append(parent.spelling)
        parent = parent.semantic_parent
    return "::".join(reversed(parts))


def _record_name(cursor: ci.Cursor) -> str:
    """The struct a field belongs to as code sees it: fields of an anonymous member struct belong to the parent."""
    while cursor.is_anonymous() and cursor.semantic_parent is not None:
        cursor = cursor.semantic_parent
    return qualified_name(cursor)


def _param_default(param: ci.Cursor) -> str | None:
    tokens = [t.spelling for t in param.get_tokens()]
    if "=" not in tokens:
        return None
    return " ".join(tokens[tokens.index("=") + 1 :])


def _deprecation_hint(cursor: ci.Cursor) -> str | None:
    """llama.h wraps declarations in DEPRECATED(decl, "hint"): the hint is the last string literal of the extent."""
    strings = [t.spelling for t in cursor.get_tokens() if t.kind == ci.TokenKind.LITERAL and t.spelling[:1] == '"']
    return strings[-1].strip('"') if strings else None


def _function(cursor: ci.Cursor, header: str) -> FunctionDecl:
    params = [c for c in cursor.get_children() if c.kind == K.PARM_DECL]
    func_type = cursor.type
    is_proto = func_type.kind == ci.TypeKind.FUNCTIONPROTO
    if is_proto:
        param_types = [_canonical(t) for t in func_type.argument_types()]
    else:
        param_types = [_canonical(p.type) for p in params]
    defaults = [_param_default(p) for p in params]
    written = [
        f"{_type_spelling(p.type)} {p.spelling}".rstrip() + (f" = {d}" if d else "")
        for p, d in zip(params, defaults, strict=True)
    ]
    variadic = is_proto and func_type.is_function_variadic()
    if variadic:
        written.append("...")
    name = qualified_name(cursor)
    deprecated = cursor.availability == ci.AvailabilityKind.DEPRECATED
    return FunctionDecl(
        name=name,
        declaration=f"{_type_spelling(cursor.result_type)} {name}({', '.join(written)})",
        result_type=_canonical(cursor.result_type),
        param_types=param_types,
        param_names=[p.spelling for p in params],
        param_defaults=defaults,
        variadic=variadic,
        deprecated=deprecated,
        deprecation_hint=_deprecation_hint(cursor) if deprecated else None,
        header=header,
        line=cursor.location.line,
    )


@dataclass
class _Collector:
    headers: _HeaderMap
    functions: dict[tuple[str, str], FunctionDecl] = field(default_factory=dict)
    fields: dict[str, StructField] = field(default_factory=dict)
    constants: dict[str, EnumConstant] = field(default_factory=dict)
    types: dict[str, TypeDecl] = field(default_factory=dict)

    def visit(self, parent: ci.Cursor) -> None:
        for cursor in parent.get_children():
            header = self.headers.header(cursor)
            if header is None:
                continue  # system and ggml headers, including every `namespace std {` they open
            if cursor.kind in CONTAINER_KINDS:
                self.visit(cursor)
            else:
                self.declaration(cursor, header)

    def declaration(self, cursor: ci.Cursor, header: str) -> None:
        if cursor.kind in FUNCTION_KINDS:
            decl = _function(cursor, header)
            # First declaration wins: a later definition or redeclaration adds nothing.
            self.functions.setdefault((decl.name, decl.signature), decl)
        elif cursor.kind in RECORD_KINDS and cursor.is_definition():
            self.record(cursor, header)
        elif cursor.kind == K.ENUM_DECL and cursor.is_definition():
            self.enum(cursor, header)
        elif cursor.kind in TYPEDEF_KINDS:
            self.add_type(cursor, "typedef", header, _canonical(cursor.underlying_typedef_type))

    def add_type(self, cursor: ci.Cursor, kind: str, header: str, underlying: str | None = None) -> None:
        if not cursor.spelling or UNNAMED.search(cursor.spelling):
            return
        decl = TypeDecl(qualified_name(cursor), kind, underlying, header, cursor.location.line)
        self.types.setdefault(decl.key, decl)

    def record(self, cursor: ci.Cursor, header: str) -> None:
        if not cursor.is_anonymous():
            kind = {K.STRUCT_DECL: "struct", K.CLASS_DECL: "class", K.UNION_DECL: "union"}[cursor.kind]
            self.add_type(cursor, kind, header)
        struct = _record_name(cursor)
        for child in cursor.get_children():
            if child.kind == K.FIELD_DECL:
                item = StructField(struct, child.spelling, _type_spelling(child.type), _canonical(child.type), header,
                                   child.location.line)  # fmt: skip
                self.fields.setdefault(item.key, item)
            elif child.kind in RECORD_KINDS and child.is_definition():
                self.record(child, header)
            elif child.kind == K.ENUM_DECL and child.is_definition():
                self.enum(child, header)

    def enum(self, cursor: ci.Cursor, header: str) -> None:
        self.add_type(cursor, "enum", header)
        enum_name = qualified_name(cursor) if cursor.spelling and not UNNAMED.search(cursor.spelling) else "(anonymous)"
        for child in cursor.get_children():
            if child.kind == K.ENUM_CONSTANT_DECL:
                item = EnumConstant(enum_name, qualified_name(child), child.enum_value, header, child.location.line)
                self.constants.setdefault(item.name, item)


def parse_surface(root: Path, tree: str = "", commit: str = "", headers: list[str] | None = None) -> ApiSurface:
    """Parse a llama.cpp tree's public headers, or the `headers` named (relative to the root; e.g. a header of
    src/ a consumer includes), without a cache."""
    root = root.resolve()
    if not (root / "include" / "llama.h").is_file():
        raise ApiDiffError(f"{root} is not a llama.cpp tree (no include/llama.h)")
    wanted = list(headers) if headers is not None else candidate_headers(root)
    started = time.perf_counter()
    tu, headers, skipped = _parse_clean(root, wanted)
    collector = _Collector(_HeaderMap(root, headers))
    collector.visit(tu.cursor)
    return ApiSurface(
        tree=tree or root.name,
        commit=commit or "unknown",
        fingerprint=headers_fingerprint(root, wanted),
        headers=headers,
        skipped_headers=skipped,
        functions=list(collector.functions.values()),
        fields=list(collector.fields.values()),
        constants=list(collector.constants.values()),
        types=list(collector.types.values()),
        parse_seconds=round(time.perf_counter() - started, 3),
    )


def surface_cache_path(tree: SourceTree, cache: str | Path | None = None) -> Path:
    commit = tree.commit if re.fullmatch(r"[0-9a-f]{12,40}", tree.commit) else None
    key = commit[:12] if commit else "tree-" + headers_fingerprint(tree.path, candidate_headers(tree.path))[:12]
    return cache_root(cache) / "apidiff" / f"{key}.json"


def _read_cached(path: Path, fingerprint: str) -> ApiSurface | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("format") != SURFACE_FORMAT or data.get("fingerprint") != fingerprint:
        return None
    try:
        return ApiSurface.from_json(data)
    except (KeyError, TypeError):
        return None  # a damaged entry is re-parsed and overwritten


def load_surface(tree: SourceTree, cache: str | Path | None = None, refresh: bool = False) -> ApiSurface:
    """The tree's surface from `<cache>/apidiff/<commit12>.json`, parsed and stored there when missing or stale."""
    started = time.perf_counter()
    path = surface_cache_path(tree, cache)
    fingerprint = headers_fingerprint(tree.path, candidate_headers(tree.path))
    surface = None if refresh else _read_cached(path, fingerprint)
    if surface is None:
        surface = parse_surface(tree.path, tree.provided, tree.commit)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent runs (tests, CI) share the cache
        tmp.write_text(json.dumps(surface.to_json(), indent=1))
        tmp.replace(path)
    else:
        surface.from_cache = True
    surface.load_seconds = round(time.perf_counter() - started, 3)
    return surface


# --- the diff ----------------------------------------------------------------------------------------------------


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
class Break:
    """Something a consumer may use at the old build that is gone or different at the new one."""

    symbol: str  # how `covered` names it: function name, "struct.field", constant or type name
    kind: ChangeKind
    old: str
    new: str | None
    note: str | None = None
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
    # What cross_reference looks cursors up in: "f:name|signature", "f:name", "s:struct.field", "e:CONST", "t:kind name"
    breaks: dict[str, Break] = field(default_factory=dict, repr=False)
    # Old overloads per function name, for uses whose exact signature is not in the surface (e.g. a .c consumer).
    old_overloads: dict[str, int] = field(default_factory=dict, repr=False)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "functions": {"removed": len(self.removed_functions), "added": len(self.added_functions),
                          "changed": len(self.changed_functions), "deprecated": len(self.deprecated_functions)},
            "fields": {"removed": len(self.removed_fields), "added": len(self.added_fields),
                       "changed": len(self.retyped_fields)},
            "enum_constants": {"removed": len(self.removed_constants), "added": len(self.added_constants),
                               "changed": len(self.revalued_constants)},
            "types": {"removed": len(self.removed_types), "added": len(self.added_types),
                      "changed": len(self.changed_types)},
        }  # fmt: skip

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("breaks")
        data.pop("old_overloads")
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


def _diff_functions(result: ApiDiff, old: ApiSurface, new: ApiSurface, shared: set[str]) -> None:
    # Old side: only the headers both builds have. New side: every header, so a function that moved to a new
    # header (common/download.h ...) is not reported removed.
    old_by_name, new_by_name = _by_name(old.functions), _by_name(new.functions)
    old_sigs = {(d.name, d.signature) for d in old.functions}
    new_sigs = {(d.name, d.signature): d for d in new.functions}
    for decl in _in(shared, old.functions):
        match = new_sigs.get((decl.name, decl.signature))
        if decl.name not in new_by_name:
            result.removed_functions.append(decl)
        elif match is None:
            fresh = [d for d in new_by_name[decl.name] if (d.name, d.signature) not in old_sigs]
            result.changed_functions.append(FunctionChange(decl, fresh or new_by_name[decl.name]))
        elif match.deprecated and not decl.deprecated:
            result.deprecated_functions.append(match)
    changed_names = {change.name for change in result.changed_functions}
    for decl in _in(shared, new.functions):
        if (decl.name, decl.signature) not in old_sigs and decl.name not in changed_names:
            result.added_functions.append(decl)
    result.old_overloads = {name: len(decls) for name, decls in old_by_name.items()}


def _diff_fields(result: ApiDiff, old: ApiSurface, new: ApiSurface, shared: set[str]) -> None:
    new_fields = {f.key: f for f in new.fields}
    old_fields = {f.key: f for f in old.fields}
    new_structs = {f.struct for f in new.fields} | {t.name for t in new.types}
    for item in _in(shared, old.fields):
        match = new_fields.get(item.key)
        if match is None:
            # Fields of a struct that is gone altogether are counted with the type, not one by one.
            if item.struct in new_structs:
                result.removed_fields.append(item)
        elif match.canonical_type != item.canonical_type:
            result.retyped_fields.append(FieldChange(item, match))
    old_structs = {f.struct for f in old.fields} | {t.name for t in old.types}
    result.added_fields = [f for f in _in(shared, new.fields) if f.key not in old_fields and f.struct in old_structs]


def _diff_constants(result: ApiDiff, old: ApiSurface, new: ApiSurface, shared: set[str]) -> None:
    new_constants = {c.name: c for c in new.constants}
    old_constants = {c.name: c for c in old.constants}
    for item in _in(shared, old.constants):
        match = new_constants.get(item.name)
        if match is None:
            result.removed_constants.append(item)
        elif match.value != item.value:
            result.revalued_constants.append(ConstantChange(item, match))
    result.added_constants = [c for c in _in(shared, new.constants) if c.name not in old_constants]


def _diff_types(result: ApiDiff, old: ApiSurface, new: ApiSurface, shared: set[str]) -> None:
    new_types = {t.key: t for t in new.types}
    old_types = {t.key: t for t in old.types}
    for item in _in(shared, old.types):
        match = new_types.get(item.key)
        if match is None:
            result.removed_types.append(item)
        elif match.underlying != item.underlying:
            result.changed_types.append(TypeChange(item, match))
    result.added_types = [t for t in _in(shared, new.types) if t.key not in old_types]


def _extends_with_defaults(old: FunctionDecl, new: FunctionDecl) -> bool:
    """The new declaration only appends parameters that have default values: old calls still compile."""
    n = len(old.param_types)
    return (
        new.result_type == old.result_type
        and new.param_types[:n] == old.param_types
        and len(new.param_types) > n
        and all(default is not None for default in new.param_defaults[n:])
    )


def _change_note(change: FunctionChange) -> str | None:
    if any(_extends_with_defaults(change.old, new) for new in change.new):
        return "new trailing parameters have defaults: calls written for the old signature still compile"
    return None


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


def _index_breaks(result: ApiDiff, old: ApiSurface) -> None:
    breaks = result.breaks
    for decl in result.removed_functions:
        item = Break(decl.name, ChangeKind.REMOVED, decl.declaration, None, _hint_note(decl))
        breaks[f"f:{decl.name}|{decl.signature}"] = item
        breaks.setdefault(f"f:{decl.name}", item)
    for change in result.changed_functions:
        dropped = const_dropped(change.old, change.new[0]) if len(change.new) == 1 else ()
        item = Break(change.name, ChangeKind.RESIGNATURED, change.old.declaration, change.new_declarations(),
                     _const_note(dropped) if dropped else _change_note(change), dropped)  # fmt: skip
        breaks[f"f:{change.name}|{change.old.signature}"] = item
        breaks.setdefault(f"f:{change.name}", item)
    for decl in result.deprecated_functions:
        note = f"deprecated: {decl.deprecation_hint}" if decl.deprecation_hint else "deprecated"
        item = Break(decl.name, ChangeKind.DEPRECATED, decl.declaration, decl.declaration, note)
        breaks[f"f:{decl.name}|{decl.signature}"] = item
        breaks.setdefault(f"f:{decl.name}", item)
    for item in result.removed_fields:
        breaks[f"s:{item.key}"] = Break(item.key, ChangeKind.FIELD_REMOVED, item.declaration, None)
    for change in result.retyped_fields:
        breaks[f"s:{change.old.key}"] = Break(change.old.key, ChangeKind.FIELD_RETYPED, change.old.declaration,
                                              change.new.declaration)  # fmt: skip
    for item in result.removed_constants:
        breaks[f"e:{item.name}"] = Break(item.name, ChangeKind.CONSTANT_REMOVED, item.declaration, None)
    for change in result.revalued_constants:
        breaks[f"e:{change.old.name}"] = Break(change.old.name, ChangeKind.CONSTANT_REVALUED, change.old.declaration,
                                               change.new.declaration, REVALUED_NOTE)  # fmt: skip
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


def diff(old: ApiSurface, new: ApiSurface) -> ApiDiff:
    """Removed, added and changed declarations from `old` to `new`, over the headers both builds have."""
    shared = set(old.headers) & set(new.headers)
    result = ApiDiff(old.label(), new.label(), [h for h in old.headers if h in shared])
    _diff_functions(result, old, new, shared)
    _diff_fields(result, old, new, shared)
    _diff_constants(result, old, new, shared)
    _diff_types(result, old, new, shared)
    _index_breaks(result, old)
    return result


# --- cross reference with a consumer ---------------------------------------------------------------------------


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
    compiles: bool | None = None  # judged from this call's arguments (see Break.const_dropped); None: not judged

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


class _OldHeaders:
    """Recognises declarations from the old tree's tracked headers, also when the consumer includes its own copy of
    llama.cpp (a submodule): the path then ends with the same `include/llama.h` / `common/x.h`."""

    def __init__(self, root: Path, headers: Iterable[str]) -> None:
        self.exact = _HeaderMap(root, headers)
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
        params = [_canonical(t) for t in func_type.argument_types()]
        params += ["..."] if func_type.is_function_variadic() else []
        exact = diff.breaks.get(f"f:{name}|{_canonical(ref.result_type)}({', '.join(params)})")
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
        return diff.breaks.get(f"s:{_record_name(ref.semantic_parent)}.{ref.spelling}")
    if ref.kind == K.ENUM_CONSTANT_DECL:
        return diff.breaks.get(f"e:{qualified_name(ref)}")
    kind = _type_kind(ref)
    return diff.breaks.get(f"t:{kind} {qualified_name(ref)}") if kind else None


def _top_level_in(tu: ci.TranslationUnit, path: str) -> Iterator[ci.Cursor]:
    # Only the consumer's own declarations: walking the headers' cursors too costs seconds and finds nothing.
    yield from _top_level_by_file(tu).get(path, [])


_NO_USES = frozenset({K.MACRO_INSTANTIATION, K.INCLUSION_DIRECTIVE})
_TOP_LEVEL: weakref.WeakKeyDictionary[object, dict[str, list[ci.Cursor]]] = weakref.WeakKeyDictionary()


def _top_level_by_file(tu: ci.TranslationUnit) -> dict[str, list[ci.Cursor]]:
    """The unit's top-level cursors by the file they are in: one pass per unit, however many files are scanned."""
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
        return _index().parse(str(path), args=[*clang_args(root, language), *extra_args])
    except ci.TranslationUnitLoadError:
        return None


def _uses_in_file(diff: ApiDiff, path: Path, tu: ci.TranslationUnit, old_headers: _OldHeaders) -> list[ApiUse]:
    """Each use once: libclang reports a qualified call (`console::set_display(...)`) twice, as the call (at
    `console`, where the name is not spelled, so it looks like a macro expansion) and as the callee (at the name);
    the echo is dropped and the use at the name kept. A use really expanded from a macro has no such twin."""
    uses = list(_all_uses_in_file(diff, path, tu, old_headers))
    spelled = {(u.line, u.symbol) for u in uses if not u.in_macro}
    return [u for u in uses if not u.in_macro or (u.line, u.symbol) not in spelled]


def _all_uses_in_file(diff: ApiDiff, path: Path, tu: ci.TranslationUnit,
                      old_headers: _OldHeaders) -> Iterator[ApiUse]:  # fmt: skip
    name = str(path)
    lines = path.read_bytes().splitlines()
    seen: set[tuple[int, int, str]] = set()
    # a call is visited before its callee's reference (preorder): its verdict waits here for the use(s) to come
    judged: dict[tuple[int, str], tuple[bool, str]] = {}
    for top in _top_level_in(tu, name):
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
                judged[(location.line, item.symbol)] = _const_verdict(cursor, item.const_dropped)
            spot = (location.line, location.column, item.symbol if item else "")
            if item is None or spot in seen:
                continue
            seen.add(spot)
            compiles, verdict = judged.get((location.line, item.symbol), (None, ""))
            note = f"{item.note}; {verdict}" if verdict else item.note
            yield ApiUse(name, location.line, location.column, item.symbol, item.kind, item.old, item.new,
                         note, not _spelled_here(lines, cursor, item.symbol), compiles)  # fmt: skip


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


def _const_verdict(call: ci.Cursor, indexes: tuple[int, ...]) -> tuple[bool, str]:
    """Whether this call still compiles where parameters lost `const`, and why."""
    args = list(call.get_arguments())
    const_args = [i + 1 for i in indexes if i < len(args) and _points_to_const(_written_argument(args[i]))]
    if const_args:
        which = ", ".join(map(str, const_args))
        return False, f"this call passes a pointer to const as parameter(s) {which}: it will not compile (C: a warning)"
    return True, "this call passes no pointer to const there: it still compiles"


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
    tracked = _OldHeaders(root, headers)
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
        for use in _uses_in_file(diff, path, tu, tracked):
            if use.symbol in covered:
                result.covered.append(CoveredUse(**asdict(use)))
            else:
                result.manual.append(ManualAction(**asdict(use)))
    result.parse_seconds = round(time.perf_counter() - started, 3)
    return result


# --- markdown -------------------------------------------------------------------------------------------------


def _cell(text: str | None) -> str:
    if not text:
        return "—"
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _names(items: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in items) or "—"


def _grouped(items: Iterable, group: str, name: str) -> list[str]:
    """Long lists as one line per group (header, struct or enum): `group`: `a`, `b`, ..."""
    groups: dict[str, list[str]] = {}
    for item in items:
        groups.setdefault(getattr(item, group), []).append(getattr(item, name))
    return [f"- `{key}`: {_names(values)}" for key, values in groups.items()]


def _counts_table(diff: ApiDiff) -> list[str]:
    rows = ["| | removed | added | changed | newly deprecated |", "| --- | ---: | ---: | ---: | ---: |"]
    labels = {"functions": "functions", "fields": "struct fields", "enum_constants": "enum constants", "types": "types"}
    for key, counts in diff.counts().items():
        deprecated = str(counts["deprecated"]) if "deprecated" in counts else ""
        rows.append(f"| {labels[key]} | {counts['removed']} | {counts['added']} | {counts['changed']} | {deprecated} |")
    return rows


def _functions_section(diff: ApiDiff) -> list[str]:
    lines = [f"#### Functions removed ({len(diff.removed_functions)})", *_grouped(diff.removed_functions, "header",
             "name")]  # fmt: skip
    lines += ["", f"#### Functions re-signatured ({len(diff.changed_functions)})"]
    if diff.changed_functions:
        lines += ["| function | before | after |", "| --- | --- | --- |"]
        lines += [f"| `{c.name}` | {_cell(c.old.declaration)} | {_cell(c.new_declarations())} |"
                  for c in diff.changed_functions]  # fmt: skip
    lines += ["", f"#### Functions newly deprecated ({len(diff.deprecated_functions)})"]
    lines += [f"- `{d.name}`: {d.deprecation_hint or 'deprecated'}" for d in diff.deprecated_functions]
    lines += ["", f"#### Functions added ({len(diff.added_functions)})", *_grouped(diff.added_functions, "header",
              "name")]  # fmt: skip
    return lines


def _fields_section(diff: ApiDiff) -> list[str]:
    lines = [
        f"#### Struct fields removed ({len(diff.removed_fields)})",
        *_grouped(diff.removed_fields, "struct", "name"),
    ]
    lines += ["", f"#### Struct fields retyped ({len(diff.retyped_fields)})"]
    if diff.retyped_fields:
        lines += ["| field | before | after |", "| --- | --- | --- |"]
        lines += [f"| `{c.old.key}` | {_cell(c.old.type)} | {_cell(c.new.type)} |" for c in diff.retyped_fields]
    lines += [
        "",
        f"#### Struct fields added ({len(diff.added_fields)})",
        *_grouped(diff.added_fields, "struct", "name"),
    ]
    return lines


def _enums_and_types_section(diff: ApiDiff) -> list[str]:
    lines = [f"#### Enum constants removed ({len(diff.removed_constants)})",
             *_grouped(diff.removed_constants, "enum", "name")]  # fmt: skip
    lines += ["", f"#### Enum constants re-valued ({len(diff.revalued_constants)})"]
    lines += [f"- `{c.old.name}`: {c.old.value} → {c.new.value}" for c in diff.revalued_constants]
    lines += ["", f"#### Enum constants added ({len(diff.added_constants)})",
              *_grouped(diff.added_constants, "enum", "name")]  # fmt: skip
    lines += ["", f"#### Types removed ({len(diff.removed_types)})", _names(t.key for t in diff.removed_types)]
    lines += ["", f"#### Types changed ({len(diff.changed_types)})"]
    lines += [f"- `{c.old.name}`: {_cell(c.old.underlying)} → {_cell(c.new.underlying)}" for c in diff.changed_types]
    lines += ["", f"#### Types added ({len(diff.added_types)})", _names(t.key for t in diff.added_types)]
    return lines


def _xref_section(xref: CrossReference, base: Path | None) -> list[str]:
    lines = ["### API cross reference", "",
             f"{len(xref.covered) + len(xref.manual)} uses of removed or changed API: {len(xref.covered)} covered by "
             f"rules, **{len(xref.manual)} manual action(s) required**.", ""]  # fmt: skip
    if xref.manual:
        lines += ["#### Manual action required", "", "| where | symbol | change | old declaration | new declaration |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for use in xref.manual:
            change = use.kind.value + (" (via macro)" if use.in_macro else "")
            change += f" — *{use.note}*" if use.note else ""
            lines.append(f"| {use.where(base)} | `{use.symbol}` | {change} | {_cell(use.old)} | {_cell(use.new)} |")
        lines.append("")
    if xref.covered:
        lines += ["#### Covered by rules", "", "| where | symbol | change |", "| --- | --- | --- |"]
        lines += [f"| {use.where(base)} | `{use.symbol}` | {use.kind.value} |" for use in xref.covered]
        lines.append("")
    if xref.parse_errors:
        lines += ["Parse errors (uses in code libclang could not read may be missing):", ""]
        lines += [f"- {error}" for error in xref.parse_errors[:20]]
    return lines


def to_markdown(diff: ApiDiff, xref: CrossReference | None = None, base: Path | None = None) -> str:
    """The report section: counts, compact lists of what changed, and the consumer's uses (paths below `base`
    shown relative)."""
    lines = [f"### API diff: {diff.old} → {diff.new}", "", f"Headers compared: {_names(diff.headers)}", ""]
    lines += _counts_table(diff) + [""]
    lines += _functions_section(diff) + [""]
    lines += _fields_section(diff) + [""]
    lines += _enums_and_types_section(diff) + [""]
    if xref is not None:
        lines += _xref_section(xref, base.resolve() if base else None)
    return "\n".join(lines).rstrip() + "\n"


# --- CLI ----------------------------------------------------------------------------------------------------------

EXIT_OK, EXIT_MANUAL, EXIT_USAGE = 0, 1, 2


def _summary(diff: ApiDiff, old: ApiSurface, new: ApiSurface) -> str:
    lines = [f"API diff {diff.old} -> {diff.new} over {len(diff.headers)} headers"]
    for surface in (old, new):
        how = "from cache" if surface.from_cache else "parsed"
        lines.append(
            f"  {surface.label()}: {how} in {surface.load_seconds:.2f} s (libclang parse {surface.parse_seconds:.2f} s)"
        )
        lines += [f"  skipped {header}: {error}" for header, error in surface.skipped_headers.items()]
    for key, counts in diff.counts().items():
        lines.append(f"  {key}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return "\n".join(lines)


def _xref_summary(xref: CrossReference) -> str:
    lines = [f"cross reference: {len(xref.covered)} covered, {len(xref.manual)} manual ({xref.parse_seconds:.2f} s)"]
    for use in xref.manual:
        lines.append(f"  MANUAL {use.where()}: {use.symbol} ({use.kind.value})")
    lines += [f"  parse error: {error}" for error in xref.parse_errors[:10]]
    return "\n".join(lines)


def cmd_api_diff(args: argparse.Namespace) -> int:
    """Exit codes: 0 done (no manual action); 1 the consumer has uses no rule covers; 2 bad input or environment."""
    from migrate.build import find_shim_sources
    from migrate.sources import resolve

    # bad input (SourceError, BuildError, ApiDiffError: ToolErrors) is one line and exit 2, from migrate.cli.main
    cache = getattr(args, "cache", None)
    old_tree, new_tree = resolve(args.old, cache=cache), resolve(args.new, cache=cache)
    old, new = load_surface(old_tree, cache, args.refresh), load_surface(new_tree, cache, args.refresh)
    result = diff(old, new)
    files = find_shim_sources(Path(args.src)) if args.src else []
    covered = {name.strip() for names in args.covered or [] for name in names.split(",") if name.strip()}
    xref = cross_reference(result, files, old_tree, covered, old_headers=old.headers) if args.src else None
    for tree in (old_tree, new_tree):
        print(tree.summary(), file=sys.stderr)
    print(_summary(result, old, new))
    if xref is not None:
        print(_xref_summary(xref))
    if args.json:
        data = {"diff": result.to_json(), "cross_reference": xref.to_json() if xref else None}
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    if args.markdown:
        base = Path(args.src) if args.src and Path(args.src).is_dir() else None
        Path(args.markdown).write_text(to_markdown(result, xref, base))
    return EXIT_MANUAL if xref is not None and xref.manual else EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "api-diff",
        help="removed/added/changed llama.cpp API between two builds, and where SRC uses it",
        description=cmd_api_diff.__doc__,
    )
    parser.add_argument("src", nargs="?", metavar="SRC", help="consumer sources to cross-reference (file or folder)")
    parser.add_argument("--from", dest="old", required=True, help="the build the consumer uses now (e.g. b5421)")
    parser.add_argument("--to", dest="new", required=True, help="the target build (e.g. b7785)")
    parser.add_argument("--json", metavar="PATH", help="write the diff (and cross reference) as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the markdown report section")
    covered_help = "names rewrite rules handle (comma-separated, repeatable): functions, struct.field, constants"
    parser.add_argument("--covered", action="append", metavar="NAMES", help=covered_help)
    parser.add_argument("--refresh", action="store_true", help="re-parse the headers instead of using the cache")
    parser.set_defaults(func=cmd_api_diff)
