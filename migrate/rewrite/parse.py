"""libclang translation units of the consumer's files, with the include paths a real build would use.

Flags come from the consumer's compile_commands.json when it has one (the exact flags of its build), else
from the llama.cpp source tree of the version being migrated *from* (the code must resolve to that version's
declarations) plus the consumer's own header folders. The PyPI libclang wheel ships no compiler resource
headers, so gcc's (`stddef.h`, ...) go on the system include path.
"""

from __future__ import annotations

import ctypes
import functools
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import clang.cindex as ci

from migrate.rewrite.edits import InputError
from verify.clangsetup import gcc_include_dir
from verify.clangsetup import index as clang_index
from verify.errors import ToolError

C_SUFFIXES = {".c"}
CXX_SUFFIXES = {".cc", ".cpp", ".cxx", ".c++"}
HEADER_SUFFIXES = {".h", ".hh", ".hpp", ".hxx", ".inc"}
# Flags from a compile database that make no sense for a single-file parse.
_DROP_FLAGS = {"-c", "-MD", "-MMD", "-MP"}
_DROP_WITH_VALUE = {"-o", "-MF", "-MT", "-MQ"}


def _index() -> ci.Index:
    try:
        return clang_index()
    except ToolError as exc:  # the rewriter's callers expect its own input error
        raise InputError(str(exc)) from exc


def language_of(path: Path) -> str:
    return "c" if path.suffix in C_SUFFIXES else "c++"


@dataclass
class CompileDatabase:
    """Per-file flags from compile_commands.json (only the flags that matter to a parse)."""

    entries: dict[Path, list[str]] = field(default_factory=dict)

    @classmethod
    def find(cls, root: Path) -> CompileDatabase | None:
        candidates = [root / "compile_commands.json", *sorted(root.glob("build*/compile_commands.json"))]
        for candidate in candidates:
            if candidate.is_file():
                return cls.load(candidate)
        return None

    @classmethod
    def load(cls, path: Path) -> CompileDatabase:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: unreadable compile database ({exc})") from exc
        entries: dict[Path, list[str]] = {}
        try:
            for entry in raw:
                directory = Path(entry.get("directory", path.parent))
                file = (directory / entry["file"]).resolve()
                argv = entry.get("arguments") or shlex.split(entry.get("command", ""))
                entries[file] = _parse_flags(argv[1:], directory, file)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise InputError(f"{path}: not a compile database (a list of {{directory, file, arguments or command}} "
                             f"entries): {type(exc).__name__} {exc}; fix or remove it") from exc  # fmt: skip
        return cls(entries)

    def flags_for(self, path: Path) -> list[str] | None:
        return self.entries.get(path.resolve())


def _parse_flags(argv: list[str], directory: Path, file: Path) -> list[str]:
    """Keep include paths (made absolute), defines and language flags; drop outputs and the file itself."""
    flags: list[str] = []
    skip_next = False
    for index, arg in enumerate(argv):
        if skip_next:
            skip_next = False
            continue
        if arg in _DROP_FLAGS or Path(arg).name == file.name:
            continue
        if arg in _DROP_WITH_VALUE:
            skip_next = True
            continue
        if arg in ("-I", "-isystem", "-iquote", "-include") and index + 1 < len(argv):
            flags += [arg, str((directory / argv[index + 1]).resolve())]
            skip_next = True
        elif arg.startswith("-I") and len(arg) > 2:
            flags.append("-I" + str((directory / arg[2:]).resolve()))
        elif arg.startswith(("-D", "-U", "-std=", "-f", "-W", "-x", "-isystem")):
            flags.append(arg)
    return flags


@dataclass
class ParseConfig:
    """How to parse a consumer file: the llama.cpp tree its code targets, its own include dirs, extra flags."""

    llama_tree: Path
    consumer_root: Path
    compile_db: CompileDatabase | None = None
    extra_flags: tuple[str, ...] = ()

    def llama_includes(self) -> list[str]:
        tree = self.llama_tree
        return [str(tree / "include"), str(tree / "ggml" / "include"), str(tree / "common"), str(tree)]

    def consumer_includes(self) -> list[str]:
        """Every consumer folder holding a header, so `#include "mine.h"` resolves without a compile database."""
        dirs = {self.consumer_root.resolve()}
        for suffix in HEADER_SUFFIXES:
            for header in self.consumer_root.rglob(f"*{suffix}"):
                if not any(part.startswith(".") or part.startswith("build") for part in header.parts[-4:-1]):
                    dirs.add(header.parent.resolve())
        return sorted(str(d) for d in dirs)

    @functools.cached_property
    def _consumer_include_flags(self) -> list[str]:
        return [f"-I{d}" for d in self.consumer_includes()]

    def flags_for(self, path: Path) -> list[str]:
        language = language_of(path)
        flags = ["-x", language, "-std=c11" if language == "c" else "-std=c++17"]
        from_db = self.compile_db.flags_for(path) if self.compile_db else None
        if from_db is not None:
            flags += from_db
        else:
            flags += self._consumer_include_flags
        # The llama.cpp tree of the *from* version always comes last: the code must resolve to its declarations.
        flags += [f"-I{d}" for d in self.llama_includes()]
        system = gcc_include_dir()
        if system:
            flags += ["-isystem", system]
        flags += list(self.extra_flags)
        return flags


@dataclass
class Problem:
    """A libclang diagnostic worth telling the user about."""

    file: str
    line: int
    column: int
    severity: int  # 3 error, 4 fatal
    category: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    @property
    def is_syntax(self) -> bool:
        return self.category == "Parse Issue"


@dataclass
class ParsedFile:
    path: Path
    tu: ci.TranslationUnit
    problems: list[Problem]
    flags: list[str]

    @property
    def fatal(self) -> list[Problem]:
        """Fatal problems (a header not found): the AST is incomplete and names cannot be trusted to resolve."""
        return [p for p in self.problems if p.severity >= ci.Diagnostic.Fatal]

    def errors_in(self, files: set[str]) -> list[Problem]:
        return [p for p in self.problems if p.severity >= ci.Diagnostic.Error and p.file in files]


def parse(path: Path, config: ParseConfig) -> ParsedFile:
    flags = config.flags_for(path)
    options = ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD  # keeps macro definitions and expansions
    try:
        tu = _index().parse(str(path), args=flags, options=options)
    except ci.TranslationUnitLoadError as exc:
        raise InputError(f"{path}: libclang could not parse the file at all ({exc})") from exc
    problems = []
    for diag in tu.diagnostics:
        if diag.severity < ci.Diagnostic.Error:
            continue
        location = diag.location
        problems.append(
            Problem(
                location.file.name if location.file else str(path),
                location.line,
                location.column,
                diag.severity,
                diag.category_name or "",
                diag.spelling,
            )
        )
    return ParsedFile(path, tu, problems, flags)


# --- locations ------------------------------------------------------------------------------------------------


def file_offset(location: ci.SourceLocation) -> tuple[str | None, int]:
    """(file, byte offset) where the text of location is written: inside a macro argument that is the
    argument as written; inside a macro body, the expansion point (libclang reports the file location)."""
    file_ptr = ci.c_object_p()
    line = ctypes.c_uint()
    column = ctypes.c_uint()
    offset = ctypes.c_uint()
    ci.conf.lib.clang_getSpellingLocation(
        location, ctypes.byref(file_ptr), ctypes.byref(line), ctypes.byref(column), ctypes.byref(offset)
    )
    name = ci.File(file_ptr).name if file_ptr else None
    return name, offset.value


class _RangeList(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint), ("ranges", ctypes.POINTER(ci.SourceRange))]


def skipped_ranges(tu: ci.TranslationUnit, path: str) -> list[tuple[int, int]]:
    """Byte ranges of `path` the preprocessor skipped (`#if 0`, untaken #ifdef branches) in this parse."""
    file = tu.get_file(path)
    lib = ci.conf.lib
    lib.clang_getSkippedRanges.restype = ctypes.POINTER(_RangeList)
    lib.clang_getSkippedRanges.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.clang_disposeSourceRangeList.argtypes = [ctypes.POINTER(_RangeList)]
    result = lib.clang_getSkippedRanges(tu.obj, file.obj if hasattr(file, "obj") else file)
    try:
        found = result.contents
        return [(found.ranges[i].start.offset, found.ranges[i].end.offset) for i in range(found.count)]
    finally:
        lib.clang_disposeSourceRangeList(result)
