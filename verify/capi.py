"""The consumer's C API as declared in its header, read with libclang: functions, parameter names and types.

Only declarations from files under the header's own folder count (system headers and llama.h contribute types,
not the consumer's API). Types are described structurally (pointer depth, constness, the base type with
typedefs resolved) so that bindings can be inferred from shapes and names, not from one fixture's spelling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import clang.cindex as ci

from verify.clangsetup import index, system_args
from verify.errors import ToolError

INTEGER_KINDS = {
    ci.TypeKind.CHAR_S, ci.TypeKind.SCHAR, ci.TypeKind.UCHAR, ci.TypeKind.SHORT, ci.TypeKind.USHORT, ci.TypeKind.INT,
    ci.TypeKind.UINT, ci.TypeKind.LONG, ci.TypeKind.ULONG, ci.TypeKind.LONGLONG, ci.TypeKind.ULONGLONG,
}  # fmt: skip
UNSIGNED_KINDS = {ci.TypeKind.UCHAR, ci.TypeKind.USHORT, ci.TypeKind.UINT, ci.TypeKind.ULONG, ci.TypeKind.ULONGLONG}
FLOAT_KINDS = {ci.TypeKind.FLOAT, ci.TypeKind.DOUBLE}


class HeaderError(ToolError):
    """The consumer's header could not be read."""


@dataclass(frozen=True)
class CType:
    """A parameter or result type: as spelled (for cffi, which knows the header's typedefs) and its shape."""

    spelling: str
    base: str  # innermost type with typedefs resolved and qualifiers dropped: "char", "int", "struct llama_context"
    depth: int  # pointer levels
    const_pointee: bool  # the first pointee is const (`const char *`, `const T * const *`)
    const_base: bool  # the innermost pointee is const (`const char **`: yes; `char **`: no)
    kind: str  # of the base: void | bool | char | int | uint | float | enum | struct | other

    @property
    def is_char_pointer(self) -> bool:
        return self.kind == "char" and self.depth >= 1

    @property
    def is_integer(self) -> bool:
        return self.depth == 0 and self.kind in ("int", "uint", "enum", "char")

    @property
    def is_scalar(self) -> bool:
        return self.depth == 0 and self.kind in ("int", "uint", "enum", "char", "bool", "float")

    @property
    def canonical(self) -> str:
        return self.base + " " + "*" * self.depth if self.depth else self.base


@dataclass(frozen=True)
class CParam:
    name: str
    type: CType


@dataclass(frozen=True)
class CFunction:
    name: str
    result: CType
    params: tuple[CParam, ...]
    line: int

    def signature(self) -> str:
        args = ", ".join(f"{p.type.spelling} {p.name}".strip() for p in self.params) or "void"
        return f"{self.result.spelling} {self.name}({args})"


def describe(t: ci.Type) -> CType:
    spelling = t.spelling
    depth = 0
    const_pointee = False
    current = t.get_canonical()
    while current.kind == ci.TypeKind.POINTER:
        current = current.get_pointee()
        if depth == 0:
            const_pointee = current.is_const_qualified()
        depth += 1
    const_base = depth > 0 and current.is_const_qualified()
    current = current.get_canonical()
    kind = _kind(current)
    base = current.spelling.replace("const ", "").replace("volatile ", "").strip()
    return CType(spelling, base, depth, const_pointee, const_base, kind)


def _kind(t: ci.Type) -> str:
    k = t.kind
    if k == ci.TypeKind.VOID:
        return "void"
    if k == ci.TypeKind.BOOL:
        return "bool"
    if k in (ci.TypeKind.CHAR_S, ci.TypeKind.SCHAR):
        return "char"
    if k in UNSIGNED_KINDS:
        return "uint"
    if k in INTEGER_KINDS:
        return "int"
    if k in FLOAT_KINDS:
        return "float"
    if k == ci.TypeKind.ENUM:
        return "enum"
    if k == ci.TypeKind.RECORD:
        return "struct"
    return "other"


@dataclass
class CApi:
    """What the consumer's header declares: functions in declaration order, and struct fields by struct type."""

    header: Path
    functions: dict[str, CFunction]
    structs: dict[str, tuple[CParam, ...]]


def read_api(header: Path, include_dirs: list[Path] | None = None) -> CApi:
    """Every function and struct the header (and headers beside it) declares."""
    if not header.is_file():
        raise HeaderError(f"{header}: header not found; set `header` in llama-migrate.toml or pass --header")
    own_dir = header.resolve().parent
    args = ["-x", "c", "-std=c11", *system_args(), f"-I{own_dir}"]
    args += [f"-I{d}" for d in include_dirs or []]
    try:
        tu = index().parse(str(header), args=args)
    except ci.TranslationUnitLoadError as exc:
        raise HeaderError(f"{header}: libclang could not parse it ({exc})") from exc
    fatal = [d for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
    if fatal:
        first = fatal[0]
        where = f"{first.location.file}:{first.location.line}" if first.location.file else str(header)
        raise HeaderError(f"{where}: {first.spelling} (while reading the C API header; pass its include "
                          "folders, or point `header` at a self-contained header)")  # fmt: skip
    functions: dict[str, CFunction] = {}
    structs: dict[str, tuple[CParam, ...]] = {}
    for cursor in tu.cursor.get_children():
        if cursor.location.file is None or not Path(cursor.location.file.name).resolve().is_relative_to(own_dir):
            continue
        if cursor.kind == ci.CursorKind.STRUCT_DECL and cursor.is_definition():
            fields = tuple(CParam(f.spelling, describe(f.type)) for f in cursor.get_children()
                           if f.kind == ci.CursorKind.FIELD_DECL)  # fmt: skip
            structs[describe(cursor.type).base] = fields
        if cursor.kind != ci.CursorKind.FUNCTION_DECL:
            continue
        params = tuple(CParam(a.spelling, describe(a.type)) for a in cursor.get_arguments())
        functions[cursor.spelling] = CFunction(cursor.spelling, describe(cursor.result_type), params,
                                               cursor.location.line)  # fmt: skip
    return CApi(header, functions, structs)
