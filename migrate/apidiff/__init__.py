"""Stage "api-diff": what llama.cpp's public API lost, gained and changed between two builds, and where a consumer
uses any of it. One module per job:

- `surface`: what one tree's API is (declarations, macros, params defaults) as plain data;
- `parse`: collecting it (headers with libclang, the toolkit's one setup in verify/clangsetup.py; the
  `llama_*_default_params()` bodies with `defaults`); `cache`: one JSON file per tree;
- `compare`: two surfaces compared by declaration, not by text (a reformatted header is no change, a `const &` that
  became `&` is one), including headers removed or renamed, declarations moved to another header, macros and
  defaults; each change with file:line on both sides, each break with whether code naming it still compiles;
- `xref`: the consumer's files parsed against the OLD tree, every use resolved to its declaration;
- `markdown`: the report section. The command line is migrate/cli/api_diff.py.

Not covered: global variables, C++ member functions of the `common/` structs and of llama.cpp's internal classes.
llama.cpp internals a consumer includes (`src/llama-vocab.h`) are diffed header by header (`diff_internal`) and
cross-referenced like the public API.
"""

from __future__ import annotations

from migrate.apidiff.cache import load_surface, read_cached, surface_cache_path
from migrate.apidiff.compare import (
    ApiDiff,
    Break,
    ChangeKind,
    ConstantChange,
    DeclKind,
    DefaultChange,
    FieldChange,
    FunctionChange,
    HeaderChange,
    MacroChange,
    MovedDecl,
    TypeChange,
    const_dropped,
    diff,
)
from migrate.apidiff.markdown import to_markdown
from migrate.apidiff.parse import clang_args, parse_surface, qualified_name
from migrate.apidiff.surface import (
    SURFACE_FORMAT,
    ApiDiffError,
    ApiSurface,
    DefaultSource,
    EnumConstant,
    FieldDefault,
    FunctionDecl,
    MacroDef,
    StructField,
    TypeDecl,
    Where,
    candidate_headers,
    headers_fingerprint,
    surface_fingerprint,
)
from migrate.apidiff.xref import (
    MOVABLE,
    PUBLIC_PREFIXES,
    ApiUse,
    CoveredUse,
    CrossReference,
    InternalDiff,
    ManualAction,
    OldHeaders,
    cross_reference,
    diff_internal,
    internal_includes,
    moved_into,
    uses_in_file,
)

__all__ = [
    "MOVABLE", "PUBLIC_PREFIXES", "SURFACE_FORMAT", "ApiDiff", "ApiDiffError", "ApiSurface", "ApiUse", "Break",
    "ChangeKind", "ConstantChange", "CoveredUse", "CrossReference", "DeclKind", "DefaultChange", "DefaultSource",
    "EnumConstant", "FieldChange", "FieldDefault", "FunctionChange", "FunctionDecl", "HeaderChange", "InternalDiff",
    "MacroChange", "MacroDef", "ManualAction", "MovedDecl", "OldHeaders", "StructField", "TypeChange", "TypeDecl",
    "Where", "candidate_headers", "clang_args", "const_dropped", "cross_reference", "diff", "diff_internal",
    "headers_fingerprint", "internal_includes", "load_surface", "moved_into", "parse_surface", "qualified_name",
    "read_cached", "surface_cache_path", "surface_fingerprint", "to_markdown", "uses_in_file",
]  # fmt: skip
