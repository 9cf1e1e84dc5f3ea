"""Collect a tree's `ApiSurface`: its public headers parsed with libclang (the toolkit's one setup,
verify/clangsetup.py), and the defaults its `llama_*_default_params()` give, read from src/ (defaults.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import clang.cindex as ci

from migrate.apidiff.defaults import read_defaults
from migrate.apidiff.surface import (
    ApiDiffError,
    ApiSurface,
    DefaultSource,
    EnumConstant,
    FieldDefault,
    FunctionDecl,
    MacroDef,
    StructField,
    TypeDecl,
    candidate_headers,
    defaults_sources,
    surface_fingerprint,
)
from verify.clangsetup import index, system_args

# The headers a shim is known to use; they must parse, where other common/ headers are dropped if they do not.
REQUIRED_HEADERS = ("include/llama.h", "common/common.h", "common/sampling.h")
ERROR_SEVERITY = ci.Diagnostic.Error
# libclang spells unnamed records with their file position, which differs between trees: normalise it away.
UNNAMED = re.compile(r"\((?:unnamed|anonymous)[^()]*\)")
# An include guard (`#define LLAMA_H`) is no API.
INCLUDE_GUARD = re.compile(r"\w+_H_?")

K = ci.CursorKind
RECORD_KINDS = frozenset({K.STRUCT_DECL, K.CLASS_DECL, K.UNION_DECL})
FUNCTION_KINDS = frozenset({K.FUNCTION_DECL, K.FUNCTION_TEMPLATE})
TYPEDEF_KINDS = frozenset({K.TYPEDEF_DECL, K.TYPE_ALIAS_DECL})
# Declarations that only group others: descend into them.
CONTAINER_KINDS = frozenset({K.NAMESPACE, K.LINKAGE_SPEC, K.UNEXPOSED_DECL})
# Skip bodies (seconds saved); keep the preprocessing record, which holds the macro definitions.
SURFACE_OPTIONS = ci.TranslationUnit.PARSE_SKIP_FUNCTION_BODIES | ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD


def clang_args(root: Path, language: str = "c++") -> list[str]:
    """Flags that parse llama.cpp's headers, or a consumer file against them, without a build."""
    args = ["-x", language, "-std=c++17" if language == "c++" else "-std=c11", *system_args()]
    for sub in ("include", "ggml/include", "common", "", "vendor"):
        if (root / sub).is_dir():
            args.append(f"-I{(root / sub).resolve()}")
    return args


def _parse_headers(root: Path, headers: list[str]) -> ci.TranslationUnit:
    """One translation unit including every header: one parse instead of one per header."""
    source = "".join(f'#include "{(root / name).resolve()}"\n' for name in headers)
    name = str(root.resolve() / "apidiff_surface.cpp")
    return index().parse(name, args=clang_args(root), unsaved_files=[(name, source)], options=SURFACE_OPTIONS)


def first_error(tu: ci.TranslationUnit) -> str | None:
    for diag in tu.diagnostics:
        if diag.severity >= ERROR_SEVERITY:
            where = f"{diag.location.file}:{diag.location.line}: " if diag.location.file else ""
            return f"{where}{diag.spelling}"
    return None


def _parse_clean(root: Path, headers: list[str]) -> tuple[ci.TranslationUnit, list[str], dict[str, str]]:
    """Parse all headers; when that fails, drop the optional headers that do not parse on their own."""
    tu = _parse_headers(root, headers)
    if first_error(tu) is None:
        return tu, headers, {}
    required = [h for h in headers if h in REQUIRED_HEADERS]
    error = first_error(_parse_headers(root, required)) if required else None
    if error:
        raise ApiDiffError(f"llama.cpp headers at {root} do not parse with libclang: {error}")
    kept, skipped = list(required), {}
    for header in headers:
        if header in required:
            continue
        error = first_error(_parse_headers(root, [*required, header]))
        if error:
            skipped[header] = error
        else:
            kept.append(header)
    kept = [h for h in headers if h in kept]
    return _parse_headers(root, kept), kept, skipped


class HeaderMap:
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


def type_spelling(type_: ci.Type) -> str:
    return UNNAMED.sub("(unnamed)", type_.spelling)


def canonical(type_: ci.Type) -> str:
    return type_spelling(type_.get_canonical())


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


def record_name(cursor: ci.Cursor) -> str:
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
        param_types = [canonical(t) for t in func_type.argument_types()]
    else:
        param_types = [canonical(p.type) for p in params]
    defaults = [_param_default(p) for p in params]
    written = [
        f"{type_spelling(p.type)} {p.spelling}".rstrip() + (f" = {d}" if d else "")
        for p, d in zip(params, defaults, strict=True)
    ]
    variadic = is_proto and func_type.is_function_variadic()
    if variadic:
        written.append("...")
    name = qualified_name(cursor)
    deprecated = cursor.availability == ci.AvailabilityKind.DEPRECATED
    return FunctionDecl(
        name=name,
        declaration=f"{type_spelling(cursor.result_type)} {name}({', '.join(written)})",
        result_type=canonical(cursor.result_type),
        param_types=param_types,
        param_names=[p.spelling for p in params],
        param_defaults=defaults,
        variadic=variadic,
        deprecated=deprecated,
        deprecation_hint=_deprecation_hint(cursor) if deprecated else None,
        header=header,
        line=cursor.location.line,
    )


def _macro(cursor: ci.Cursor, header: str) -> MacroDef | None:
    tokens = list(cursor.get_tokens())
    if not tokens:
        return None
    rest, params = tokens[1:], None
    # function-like only when `(` touches the name: `#define X (1)` is an object-like macro whose value is `(1)`
    if rest and rest[0].spelling == "(" and rest[0].extent.start.offset == tokens[0].extent.end.offset:
        close = next((i for i, t in enumerate(rest) if t.spelling == ")"), len(rest) - 1)
        params = [t.spelling for t in rest[1:close] if t.spelling != ","]
        rest = rest[close + 1 :]
    value = " ".join(t.spelling for t in rest)
    if not value and params is None and INCLUDE_GUARD.fullmatch(cursor.spelling):
        return None
    return MacroDef(cursor.spelling, params, value, header, cursor.location.line)


@dataclass
class _Collector:
    headers: HeaderMap
    functions: dict[tuple[str, str], FunctionDecl] = field(default_factory=dict)
    fields: dict[str, StructField] = field(default_factory=dict)
    constants: dict[str, EnumConstant] = field(default_factory=dict)
    types: dict[str, TypeDecl] = field(default_factory=dict)
    macros: dict[str, MacroDef] = field(default_factory=dict)
    defaults: dict[str, FieldDefault] = field(default_factory=dict)
    texts: dict[str, bytes] = field(default_factory=dict)  # header files read for member initialisers

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
            self.add_type(cursor, "typedef", header, canonical(cursor.underlying_typedef_type))
        elif cursor.kind == K.MACRO_DEFINITION:
            macro = _macro(cursor, header)
            if macro is not None:
                self.macros.setdefault(macro.name, macro)

    def add_type(self, cursor: ci.Cursor, kind: str, header: str, underlying: str | None = None) -> None:
        if not cursor.spelling or UNNAMED.search(cursor.spelling):
            return
        decl = TypeDecl(qualified_name(cursor), kind, underlying, header, cursor.location.line)
        self.types.setdefault(decl.key, decl)

    def record(self, cursor: ci.Cursor, header: str) -> None:
        if not cursor.is_anonymous():
            kind = {K.STRUCT_DECL: "struct", K.CLASS_DECL: "class", K.UNION_DECL: "union"}[cursor.kind]
            self.add_type(cursor, kind, header)
        struct = record_name(cursor)
        for child in cursor.get_children():
            if child.kind == K.FIELD_DECL:
                item = StructField(struct, child.spelling, type_spelling(child.type), canonical(child.type), header,
                                   child.location.line)  # fmt: skip
                self.fields.setdefault(item.key, item)
                self.member_default(item, child)
            elif child.kind in RECORD_KINDS and child.is_definition():
                self.record(child, header)
            elif child.kind == K.ENUM_DECL and child.is_definition():
                self.enum(child, header)

    def member_default(self, item: StructField, cursor: ci.Cursor) -> None:
        """`int32_t n_predict = -1;` or `float x{0.5f};` in a C++ struct: the value as written."""
        tokens = [t for t in cursor.get_tokens() if t.spelling != ";"]
        at = next((i for i, t in enumerate(tokens) if t.spelling == cursor.spelling), None)
        if at is None or at + 2 >= len(tokens) or tokens[at + 1].spelling not in ("=", "{"):
            return
        value_tokens = tokens[at + 2 :]
        if tokens[at + 1].spelling == "{":  # `x{1}` means what `x = 1` means: the value without the braces
            value_tokens = value_tokens[:-1]
        file = cursor.location.file.name
        text = self.texts.setdefault(file, Path(file).read_bytes())
        span = (value_tokens[0].extent.start.offset, value_tokens[-1].extent.end.offset) if value_tokens else (0, 0)
        value = text[span[0] : span[1]].decode(errors="replace") or "{}"  # `x{}`: value-initialised
        found = FieldDefault(item.struct, item.name, " ".join(value.split()), DefaultSource.MEMBER_INITIALIZER,
                             item.header, item.line)  # fmt: skip
        self.defaults.setdefault(found.key, found)

    def enum(self, cursor: ci.Cursor, header: str) -> None:
        self.add_type(cursor, "enum", header)
        enum_name = qualified_name(cursor) if cursor.spelling and not UNNAMED.search(cursor.spelling) else "(anonymous)"
        for child in cursor.get_children():
            if child.kind == K.ENUM_CONSTANT_DECL:
                item = EnumConstant(enum_name, qualified_name(child), child.enum_value, header, child.location.line)
                self.constants.setdefault(item.name, item)


def parse_surface(root: Path, tree: str = "", commit: str = "", headers: list[str] | None = None) -> ApiSurface:
    """Parse a llama.cpp tree's public headers and its params defaults, or only the `headers` named (relative to
    the root; e.g. a header of src/ a consumer includes), without a cache."""
    root = root.resolve()
    if not (root / "include" / "llama.h").is_file():
        raise ApiDiffError(f"{root} is not a llama.cpp tree (no include/llama.h)")
    wanted = list(headers) if headers is not None else candidate_headers(root)
    started = time.perf_counter()
    tu, parsed, skipped = _parse_clean(root, wanted)
    collector = _Collector(HeaderMap(root, parsed))
    collector.visit(tu.cursor)
    functions, fields = list(collector.functions.values()), list(collector.fields.values())
    sources = defaults_sources(root) if headers is None else []
    defaults = [*collector.defaults.values(), *read_defaults(root, sources, functions, fields)]
    return ApiSurface(
        tree=tree or root.name,
        commit=commit or "unknown",
        fingerprint=surface_fingerprint(root, None if headers is None else wanted),
        headers=parsed,
        skipped_headers=skipped,
        functions=functions,
        fields=fields,
        constants=list(collector.constants.values()),
        types=list(collector.types.values()),
        parse_seconds=round(time.perf_counter() - started, 3),
        macros=list(collector.macros.values()),
        defaults=defaults,
    )
