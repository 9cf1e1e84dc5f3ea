"""libclang translation units of the consumer's files, with the include paths a real build would use.

Flags come from the consumer's compile_commands.json when it has one (the exact flags of its build), else
from the llama.cpp source tree of the version being migrated *from* (the code must resolve to that version's
declarations) plus the consumer's own header folders. The PyPI libclang wheel ships no compiler resource
headers, so gcc's (`stddef.h`, ...) go on the system include path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import re
import shlex
from collections.abc import Iterator
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


# Of the flags a consumer's build adds ([build] flags), those that change what a parse sees: a forced include, a
# definition, an include folder, the language standard. Optimisation and warning flags (some gcc's alone) are not
# libclang's business.
_BUILD_FLAGS_WITH_VALUE = ("-include", "-imacros", "-I", "-isystem", "-iquote", "-D", "-U")
_BUILD_FLAG_PREFIXES = ("-D", "-U", "-I", "-isystem", "-iquote", "-std=")


def build_parse_flags(include_dirs: tuple[str, ...], defines: tuple[str, ...],
                      flags: tuple[str, ...]) -> tuple[str, ...]:  # fmt: skip
    """The parse flags of a consumer's own build settings (its config's `[build]`: include folders, definitions,
    flags), so its files are parsed as its build compiles them (`-include filesystem`). They go after llama.cpp's
    folders (`ParseConfig.extra_flags`); the consumer's folders inside its tree are searched first anyway."""
    kept: list[str] = [*(f"-I{d}" for d in include_dirs), *(f"-D{d}" for d in defines)]
    index = 0
    while index < len(flags):
        flag = flags[index]
        if flag in _BUILD_FLAGS_WITH_VALUE and index + 1 < len(flags):
            kept += [flag, flags[index + 1]]
            index += 2
            continue
        if flag.startswith(_BUILD_FLAG_PREFIXES):
            kept.append(flag)
        index += 1
    return tuple(kept)


@dataclass
class ParseConfig:
    """How to parse a consumer file: the llama.cpp tree its code targets, its own include dirs, extra flags."""

    llama_tree: Path
    consumer_root: Path
    compile_db: CompileDatabase | None = None
    extra_flags: tuple[str, ...] = ()
    preambles: PreamblePlan | None = None  # shared precompiled `#include` runs (None: every file parsed plainly)

    def llama_includes(self) -> list[str]:
        """llama.cpp's folders, after the consumer's own: its public headers, `vendor/` (what llama.cpp's `common`
        target exports with them: `common/chat.h` needs `nlohmann/json_fwd.hpp` from b7836 on), then `src/` — a
        consumer that includes an internal header (`llama-vocab.h`, `unicode.h`, as its own build puts `src/` on the
        path) gets it from the tree of the version at hand, last, so a header of its own of the same name wins.
        Every folder is listed, also one this tree lacks (`vendor/` before b7836): the shadowing check
        (migrate/rewrite/includes.py) maps this search order onto the target tree, where such a folder may exist and
        hold a header found before the one found here (clang skips a missing folder silently)."""
        tree = self.llama_tree
        folders = [tree / "include", tree / "ggml" / "include", tree / "common", tree, tree / "vendor", tree / "src"]
        return [str(folder) for folder in folders]

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
    tu: ci.TranslationUnit | UnitView  # a unit parsed after a precompiled preamble is read through its view
    problems: list[Problem]
    flags: list[str]
    scope: frozenset[str] = frozenset()  # file-scope names of a precompiled preamble (its unit does not walk them)

    @property
    def fatal(self) -> list[Problem]:
        """Fatal problems (a header not found): the AST is incomplete and names cannot be trusted to resolve."""
        return [p for p in self.problems if p.severity >= ci.Diagnostic.Fatal]

    def errors_in(self, files: set[str]) -> list[Problem]:
        return [p for p in self.problems if p.severity >= ci.Diagnostic.Error and p.file in files]


def parse(path: Path, config: ParseConfig) -> ParsedFile:
    if config.preambles is not None:
        chosen = config.preambles.for_file(path)
        if chosen is not None:
            parsed = parse_after_preamble(path, config, *chosen)
            if parsed is not None:
                return parsed
    flags = config.flags_for(path)
    options = ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD  # keeps macro definitions and expansions
    try:
        tu = _index().parse(str(path), args=flags, options=options)
    except ci.TranslationUnitLoadError as exc:
        raise InputError(f"{path}: libclang could not parse the file at all ({exc})") from exc
    return ParsedFile(path, tu, _problems(tu, path), flags)


def _problems(tu: ci.TranslationUnit, path: Path) -> list[Problem]:
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
    return problems


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


# --- shared header work: precompiled preambles ----------------------------------------------------------------
#
# Most translation units of a tree start with the same `#include`s (`"arg.h"`, `"common.h"`, ...), and parsing
# those headers (llama.cpp's and the C++ library's) is most of a parse. A preamble is such a leading run of
# `#include` lines shared by several files: it is parsed once into a precompiled header, and each file is parsed
# with `-include-pch` and its own copy of those lines blanked (spaces: every offset and line number stays). That is
# the translation unit the plain parse builds: the same headers, in the same order, before the same rest of the
# file. What the parse of the blanked lines would have recorded comes from the header's own parse: its inclusions
# (mapped back to the file's lines), and its file-scope names. A preamble is only used when its own parse has no
# error, includes none of the consumer's files (their code must be walked as the file's own), resolves every quoted
# name the same from the file's folder (the file's folder has no header of that name) and the flags force no
# `-include` ahead of the file; anything else, and any fatal error in the file's parse, falls back to the plain
# parse. The index used with preambles skips their declarations when walking the unit (`excludeDecls`): only the
# consumer's code and the headers after the preamble are visited.

INCLUDE_LINE = re.compile(rb'[ \t]*#[ \t]*include[ \t]*([<"][^>"\n]+[>"])[ \t]*(?://[^\n]*)?\r?')
PREAMBLE_FORMAT = 1  # bump when what a preamble records changes: cached ones are rebuilt
# The preamble holds llama.cpp's and the system's headers only (never the consumer's): the bodies of their functions
# are not parsed (libclang's skip-function-bodies), so they are neither parsed once nor instantiated per unit. The
# consumer's own code, after the preamble, is parsed whole.
SKIP_BODIES = os.environ.get("LLAMA_MIGRATE_PREAMBLE_BODIES", "") != "1"
# Longer runs built on shorter ones (chained precompiled headers) make libclang 18 crash while parsing some files
# after them ("crash detected during parsing"; the file then falls back to a plain parse): each run is built whole.
CHAINED = os.environ.get("LLAMA_MIGRATE_PREAMBLE_CHAINED", "") == "1"
_SKIPPED_TOP = (ci.CursorKind.MACRO_INSTANTIATION, ci.CursorKind.INCLUSION_DIRECTIVE)


@dataclass(frozen=True)
class Directive:
    spelled: str  # `"arg.h"` or `<vector>`, as written
    line: int  # 1-based line in the file
    end: int  # byte offset just past the line (its newline included)


def leading_includes(data: bytes) -> list[Directive]:
    """The `#include` lines a file starts with (comments and blank lines between them allowed); stops at anything
    else, and at anything this reading is not sure of (a line continuation, code after a comment on a line)."""
    found: list[Directive] = []
    offset, line, in_comment = 0, 0, False
    while offset < len(data):
        newline = data.find(b"\n", offset)
        end = len(data) if newline < 0 else newline + 1
        text = data[offset:end].rstrip(b"\r\n")
        line += 1
        offset = end
        if text.endswith(b"\\"):
            break
        stripped = text.strip()
        if in_comment:
            if b"*/" not in stripped:
                continue
            stripped = stripped.split(b"*/", 1)[1].strip()
            in_comment = False
            if not stripped or stripped.startswith(b"//"):
                continue
            break
        if not stripped or stripped.startswith(b"//"):
            continue
        if stripped.startswith(b"/*"):
            rest = stripped[2:]
            if b"*/" not in rest:
                in_comment = True
                continue
            rest = rest.split(b"*/", 1)[1].strip()
            if not rest or rest.startswith(b"//"):
                continue
            break
        match = INCLUDE_LINE.fullmatch(text)
        if match is None:
            break
        found.append(Directive(match.group(1).decode(errors="replace"), line, end))
    return found


def blank_prefix(data: bytes, end: int) -> bytes:
    """The bytes before `end` as spaces (newlines kept): offsets and lines of the rest do not move."""
    return re.sub(rb"[^\n]", b" ", data[:end]) + data[end:]


HERE = "<preamble>"  # a preamble's own directives, in its recorded inclusions: line i is the file's i-th directive


@dataclass
class Preamble:
    """One precompiled run of leading `#include`s, shared by the files that start with it. A longer run is built on
    a shorter one it extends (a chained precompiled header: only the added lines are parsed)."""

    key: str
    language: str
    directives: tuple[str, ...]
    pch: Path
    parent: str | None = None  # key of the preamble this one extends
    ok: bool = False
    why: str = ""
    # every inclusion of the run: (including file or HERE, included file, line or directive number, depth)
    includes: list[tuple[str, str, int, int]] = field(default_factory=list)
    scope: frozenset[str] = frozenset()
    inputs: dict[str, list[int]] = field(default_factory=dict)  # file -> [size, mtime_ns] when built

    def fresh(self) -> bool:
        """Every file the precompiled header was made from is unchanged (clang refuses a stale one)."""
        for name, (size, mtime) in self.inputs.items():
            try:
                stat = Path(name).stat()
            except OSError:
                return False
            if stat.st_size != size or stat.st_mtime_ns != mtime:
                return False
        return self.pch.is_file()

    def to_json(self) -> dict[str, object]:
        return {"format": PREAMBLE_FORMAT, "key": self.key, "language": self.language,
                "directives": list(self.directives), "parent": self.parent, "ok": self.ok, "why": self.why,
                "includes": self.includes, "scope": sorted(self.scope), "inputs": self.inputs}  # fmt: skip


def _header_flags(flags: list[str]) -> list[str]:
    out = list(flags)
    for index, flag in enumerate(out[:-1]):
        if flag == "-x" and out[index + 1] in ("c", "c++"):
            out[index + 1] += "-header"
    return out


def preamble_key(language: str, directives: tuple[str, ...], flags: list[str], parent: str | None = None) -> str:
    digest = hashlib.sha256(json.dumps([PREAMBLE_FORMAT, SKIP_BODIES, language, directives, flags, parent,
                                        _clang_version()]).encode())  # fmt: skip
    return digest.hexdigest()[:24]


@functools.cache
def _clang_version() -> str:
    """Which libclang makes the precompiled headers (another one cannot read them)."""
    try:
        import importlib.metadata

        return importlib.metadata.version("libclang")
    except Exception:  # noqa: BLE001 - the version only keys the cache
        return str(Path(ci.__file__).stat().st_mtime_ns)


def load_preamble(folder: Path, language: str, directives: tuple[str, ...], flags: list[str],
                  parent: Preamble | None = None) -> Preamble | None:  # fmt: skip
    """A preamble an earlier run built (usable or not), or None when there is none or its files changed since."""
    key = preamble_key(language, directives, flags, parent.key if parent else None)
    home = folder / key
    try:
        data = json.loads((home / "preamble.json").read_text())
        if data.get("format") != PREAMBLE_FORMAT:
            return None
        preamble = Preamble(key, language, directives, home / "preamble.pch", data["parent"], data["ok"], data["why"],
                            [tuple(i) for i in data["includes"]], frozenset(data["scope"]),
                            {k: list(v) for k, v in data["inputs"].items()})  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return preamble if not preamble.ok or preamble.fresh() else None


def build_preamble(folder: Path, language: str, directives: tuple[str, ...], flags: list[str],
                   consumer: frozenset[str], parent: Preamble | None = None) -> Preamble:  # fmt: skip
    """Parse the directives as a header (after `parent`'s, precompiled, when given) and save it precompiled; or the
    one an earlier run saved."""
    cached = load_preamble(folder, language, directives, flags, parent)
    if cached is not None:
        return cached
    key = preamble_key(language, directives, flags, parent.key if parent else None)
    home = folder / key
    home.mkdir(parents=True, exist_ok=True)
    header = home / ("preamble.h" if language == "c" else "preamble.hpp")
    skip = len(parent.directives) if parent else 0
    header.write_text("".join(f"#include {d}\n" for d in directives[skip:]))
    result = Preamble(key, language, directives, home / "preamble.pch", parent.key if parent else None)
    if parent is not None and not parent.ok:
        result.why = f"extends a preamble that is not usable ({parent.why})"
        return _save_meta(result, home)
    options = ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD | ci.TranslationUnit.PARSE_INCOMPLETE
    if SKIP_BODIES:
        options |= ci.TranslationUnit.PARSE_SKIP_FUNCTION_BODIES
    args = _header_flags(flags) + (["-include-pch", str(parent.pch)] if parent else [])
    try:
        tu = _index().parse(str(header), args=args, options=options)
    except ci.TranslationUnitLoadError as exc:
        result.why = f"the preamble does not parse ({exc})"
        return _save_meta(result, home)
    errors = [d for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
    if errors:
        result.why = f"the preamble has errors: {errors[0].spelling}"
        return _save_meta(result, home)
    result.includes = list(parent.includes) if parent else []
    result.inputs = dict(parent.inputs) if parent else {}
    for inclusion in tu.get_includes():
        name = inclusion.include.name if inclusion.include is not None else None
        if name is None or inclusion.depth == 0 or (parent is not None and name == str(parent.pch)):
            continue
        if str(Path(name).resolve()) in consumer or name in consumer:
            result.why = f"the preamble includes the consumer's {name}"
            return _save_meta(result, home)
        source = inclusion.source.name if inclusion.source is not None else None
        line = inclusion.location.line
        if source == str(header):
            source, line = HERE, skip + line
        result.includes.append((source or "", name, line, inclusion.depth))
    scope = {top.spelling for top in tu.cursor.get_children() if top.kind not in _SKIPPED_TOP}
    result.scope = frozenset(scope | (parent.scope if parent else frozenset()))
    for name in {i[1] for i in result.includes if i[1] not in result.inputs} | {str(header)}:
        stat = Path(name).stat()
        result.inputs[name] = [stat.st_size, stat.st_mtime_ns]
    try:
        tu.save(str(result.pch))
    except ci.TranslationUnitSaveError as exc:
        result.why = f"the preamble could not be saved ({exc})"
        return _save_meta(result, home)
    result.ok = True
    return _save_meta(result, home)


def _save_meta(preamble: Preamble, home: Path) -> Preamble:
    home.mkdir(parents=True, exist_ok=True)
    meta = home / "preamble.json"
    temp = meta.with_suffix(f".{os.getpid()}.tmp")
    temp.write_text(json.dumps(preamble.to_json()))
    temp.replace(meta)
    return preamble


Run = tuple[str, tuple[str, ...]]  # (group: the language and flags of the files sharing it, directives)


@dataclass
class PreamblePlan:
    """Which preamble each file uses: the longest run of leading `#include`s it shares with another file (a quoted
    name the file's own folder also holds ends its run there: it would resolve elsewhere). The runs form a tree;
    each is built on the longest shorter run that is also built (chosen by a file, or where runs branch)."""

    folder: Path
    chosen: dict[Path, tuple[str, tuple[str, ...], int]] = field(default_factory=dict)  # file -> (group, dirs, end)
    built: dict[Run, Preamble] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)  # group -> the flags its files are parsed with

    @classmethod
    def choose(cls, folder: Path, files: list[Path], config: ParseConfig, min_share: int = 2) -> PreamblePlan:
        plan = cls(folder)
        runs: dict[Path, tuple[str, list[Directive]]] = {}
        counts: dict[Run, int] = {}
        for path in files:
            flags = config.flags_for(path)
            if any(f.startswith(("-include", "-imacros")) for f in flags):
                continue
            mine = [Path(f[2:]) for f in flags if f.startswith("-I") and _inside(Path(f[2:]), config.consumer_root)]
            directives = []
            for directive in leading_includes(path.read_bytes()):
                name = directive.spelled[1:-1]
                if directive.spelled.startswith('"') and (path.parent / name).exists():
                    break  # found beside the file first: not where the preamble, elsewhere, would find it
                if any((folder / name).is_file() for folder in mine):
                    break  # the consumer's own header: its code is walked as the unit's (never precompiled)
                directives.append(directive)
            language = language_of(path) + "|" + hashlib.sha256("\0".join(flags).encode()).hexdigest()[:12]
            plan.flags[language] = flags
            runs[path] = (language, directives)
            for k in range(1, len(directives) + 1):
                prefix = (language, tuple(d.spelled for d in directives[:k]))
                counts[prefix] = counts.get(prefix, 0) + 1
        for path, (language, directives) in runs.items():
            shared = [k for k in range(1, len(directives) + 1)
                      if counts[(language, tuple(d.spelled for d in directives[:k]))] >= min_share]  # fmt: skip
            if shared:
                k = shared[-1]
                plan.chosen[path] = (language, tuple(d.spelled for d in directives[:k]), directives[k - 1].end)
        return plan

    def nodes(self, runs: set[Run]) -> dict[Run, Run | None]:
        """The runs to build for `runs`, each with the run it is built on: the chosen ones and the points where
        they branch (a shorter run two of them extend differently). Without CHAINED each run is built whole."""
        if not CHAINED:
            return dict.fromkeys(runs)
        wanted = set(runs)
        ordered = sorted(wanted, key=lambda r: len(r[1]))
        for a in ordered:
            for b in ordered:
                if a < b and a[0] == b[0]:
                    common = 0
                    while common < min(len(a[1]), len(b[1])) and a[1][common] == b[1][common]:
                        common += 1
                    if 0 < common < max(len(a[1]), len(b[1])):
                        wanted.add((a[0], a[1][:common]))
        parents: dict[Run, Run | None] = {}
        for run in sorted(wanted, key=lambda r: len(r[1])):
            below = [r for r in wanted if r[0] == run[0] and len(r[1]) < len(run[1]) and run[1][: len(r[1])] == r[1]]
            parents[run] = max(below, key=lambda r: len(r[1])) if below else None
        return parents

    def add(self, group: str, preamble: Preamble) -> None:
        self.built[(group, preamble.directives)] = preamble

    def for_file(self, path: Path) -> tuple[Preamble, int] | None:
        chosen = self.chosen.get(path)
        if chosen is None:
            return None
        preamble = self.built.get(chosen[:2])
        return (preamble, chosen[2]) if preamble is not None and preamble.ok else None


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


@dataclass(frozen=True)
class _IncludedFile:
    name: str


@dataclass(frozen=True)
class _Location:
    line: int


@dataclass(frozen=True)
class _Inclusion:
    source: _IncludedFile | None
    include: _IncludedFile
    location: _Location
    depth: int

    @property
    def is_input_file(self) -> bool:
        return self.depth == 0


class UnitView:
    """A translation unit parsed after a preamble, as the plain parse's unit: its inclusions are the preamble's
    (the header's lines mapped to the file's) followed by its own; everything else is the unit's."""

    def __init__(self, tu: ci.TranslationUnit, preamble: Preamble, path: Path, lines: list[int]) -> None:
        self._tu = tu
        self._preamble = preamble
        self._path = str(path)
        self._lines = lines  # the file's line of each preamble directive

    def get_includes(self) -> list[_Inclusion]:
        found: list[_Inclusion] = []
        for source, included, line, depth in self._preamble.includes:
            if source == HERE:
                source, line = self._path, self._lines[line - 1]
            found.append(_Inclusion(_IncludedFile(source) if source else None, _IncludedFile(included),
                                    _Location(line), depth))  # fmt: skip
        for inclusion in self._tu.get_includes():
            if inclusion.depth == 0 or inclusion.include is None or inclusion.include.name == str(self._preamble.pch):
                continue
            found.append(_Inclusion(_IncludedFile(inclusion.source.name) if inclusion.source else None,
                                    _IncludedFile(inclusion.include.name), _Location(inclusion.location.line),
                                    inclusion.depth))  # fmt: skip
        return found

    @property
    def cursor(self) -> _UnitCursor:
        return _UnitCursor(self._tu.cursor)

    def __getattr__(self, name: str) -> object:
        return getattr(self._tu, name)


class _UnitCursor:
    """The unit's cursor whose children are the declarations written at file scope, as a plain parse lists them:
    the unit's own list also holds the template instantiations it made (their lexical parent is a class or a
    namespace), which a plain parse does not show at the top."""

    def __init__(self, cursor: ci.Cursor) -> None:
        self._cursor = cursor

    def get_children(self) -> Iterator[ci.Cursor]:
        templates: dict[tuple[str, str, int], int] = {}  # (file, name, end) -> start of a function template
        for child in self._cursor.get_children():
            kind = child.kind
            if kind.is_declaration():
                parent = child.lexical_parent
                if parent is not None and parent.kind != ci.CursorKind.TRANSLATION_UNIT:
                    continue
                if kind in (ci.CursorKind.FUNCTION_TEMPLATE, ci.CursorKind.FUNCTION_DECL):
                    extent = child.extent
                    file = extent.start.file.name if extent.start.file else ""
                    key = (file, child.spelling, extent.end.offset)
                    if kind == ci.CursorKind.FUNCTION_TEMPLATE:
                        templates[key] = extent.start.offset
                    elif key in templates and extent.start.offset >= templates[key]:
                        continue  # an instance of a template listed before: its text, without `template <...>`
            yield child

    def __getattr__(self, name: str) -> object:
        return getattr(self._cursor, name)


@functools.cache
def _local_index() -> ci.Index:
    """An index whose units, made after a precompiled header, walk only their own declarations."""
    _index()  # the library loaded (and its error said) the toolkit's way
    return ci.Index.create(excludeDecls=True)


def parse_after_preamble(path: Path, config: ParseConfig, preamble: Preamble, end: int) -> ParsedFile | None:
    """`path` parsed with `preamble` precompiled; None when that parse is not to be trusted (fall back)."""
    flags = config.flags_for(path)
    data = path.read_bytes()
    options = ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD
    try:
        tu = _local_index().parse(str(path), args=[*flags, "-include-pch", str(preamble.pch)],
                                  unsaved_files=[(str(path), blank_prefix(data, end))], options=options)  # fmt: skip
    except ci.TranslationUnitLoadError:
        return None
    problems = _problems(tu, path)
    if any(p.severity >= ci.Diagnostic.Fatal for p in problems):
        return None  # a stale or refused precompiled header, or a missing include: the plain parse says which
    lines = [d.line for d in leading_includes(data)][: len(preamble.directives)]
    parsed = ParsedFile(path, UnitView(tu, preamble, path, lines), problems, flags)
    parsed.scope = preamble.scope
    return parsed

