"""What one llama.cpp tree's public API is: the declarations of its headers, the macros they define and the defaults
its params structs start from, as plain data (cached as JSON by `cache.py`, collected by `parse.py`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from verify.errors import ToolError

# Bump when the surface JSON changes shape or what is collected changes: older cache files are then re-parsed.
# 2: macros, field defaults (member initialisers and `llama_*_default_params()` bodies), every candidate header.
SURFACE_FORMAT = 2
INCLUDE_HEADERS = ("include/llama.h", "include/llama-cpp.h")
# Third-party code that llama.cpp ships inside common/ at some builds (stb_image moved to vendor/ later): not its API.
VENDORED_HEADERS = frozenset({"stb_image.h"})
# Where `llama_*_default_params()` are defined. Only the top of src/: the per-architecture files below it define none.
DEFAULTS_SOURCES = "src/*.cpp"
DEFAULTS_MARKER = b"_default_params("


class ApiDiffError(ToolError):
    """The API surface could not be built (e.g. llama.h does not parse); the message says why."""


@dataclass(frozen=True)
class Where:
    """Evidence for a change: a file relative to the tree root, and a 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


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
class MacroDef:
    """A `#define` of a tracked header, as the preprocessor saw it (the branch of an `#if` that was taken)."""

    name: str
    params: list[str] | None  # None: an object-like macro; [] or names: a function-like one
    value: str  # the replacement tokens, joined by single spaces
    header: str
    line: int

    @property
    def where(self) -> Where:
        return Where(self.header, self.line)

    @property
    def declaration(self) -> str:
        head = self.name if self.params is None else f"{self.name}({', '.join(self.params)})"
        return f"#define {head} {self.value}".rstrip()


class DefaultSource(StrEnum):
    """Where a field's default value is written."""

    MEMBER_INITIALIZER = "member initialiser"  # `int32_t n_predict = -1;` in a C++ struct of common/
    DEFAULT_PARAMS = "default-params function"  # `llama_context_default_params()`'s initialiser list in src/


@dataclass
class FieldDefault:
    struct: str
    name: str
    value: str  # as written, whitespace collapsed, comments dropped
    source: DefaultSource
    file: str  # relative to the tree root
    line: int
    function: str | None = None  # the default-params function that sets it (DEFAULT_PARAMS)
    # set in an `#if` branch after the initialiser (`result.n_gpu_layers = 999` under GGML_USE_METAL): per build
    conditional: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.struct}.{self.name}"

    @property
    def where(self) -> Where:
        return Where(self.file, self.line)

    def shown(self) -> str:
        extra = "".join(f"; {c}" for c in self.conditional)
        return f"{self.value}{extra}"


@dataclass
class ApiSurface:
    """The declarations of one llama.cpp tree's public headers."""

    tree: str  # the build tag provided
    commit: str
    fingerprint: str  # hash of the headers' contents: a cache entry for a modified tree is not reused
    headers: list[str]  # parsed
    skipped_headers: dict[str, str]  # header -> first error, for common/ headers that did not parse
    functions: list[FunctionDecl]
    fields: list[StructField]
    constants: list[EnumConstant]
    types: list[TypeDecl]
    parse_seconds: float
    macros: list[MacroDef] = field(default_factory=list)
    defaults: list[FieldDefault] = field(default_factory=list)
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
            macros=[MacroDef(**item) for item in data["macros"]],
            defaults=[FieldDefault(**{**item, "source": DefaultSource(item["source"])}) for item in data["defaults"]],
        )

    def label(self) -> str:
        return f"{self.tree} ({self.commit[:12]})"

    def candidate_headers(self) -> list[str]:
        """Every header the tree offers, parsed or not: whether a header exists, not whether it parsed."""
        return [*self.headers, *(h for h in self.skipped_headers if h not in self.headers)]


def candidate_headers(root: Path) -> list[str]:
    """The headers a consumer can include: include/*.h (llama.h first) and common/*.h."""
    found = [name for name in INCLUDE_HEADERS if (root / name).is_file()]
    include = root / "include"
    if include.is_dir():
        found += [f"include/{p.name}" for p in sorted(include.glob("*.h")) if f"include/{p.name}" not in found]
    common = root / "common"
    if common.is_dir():
        found += [f"common/{p.name}" for p in sorted(common.glob("*.h")) if p.name not in VENDORED_HEADERS]
    return found


def defaults_sources(root: Path) -> list[str]:
    """The src/ files that define a `*_default_params()` function (relative to the root)."""
    return [str(p.relative_to(root)) for p in sorted(root.glob(DEFAULTS_SOURCES)) if DEFAULTS_MARKER in p.read_bytes()]


def headers_fingerprint(root: Path, headers: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for name in headers:
        digest.update(name.encode())
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def surface_fingerprint(root: Path, headers: Iterable[str] | None = None) -> str:
    """Everything a surface is read from: the headers, and (for the whole tree) the sources of the defaults."""
    names = list(headers) if headers is not None else [*candidate_headers(root), *defaults_sources(root)]
    return headers_fingerprint(root, names)
