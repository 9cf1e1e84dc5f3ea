"""The name pre-scan: which translation units need libclang at all, read from their text.

A unit's text is its own file and every file its `#include` lines reach outside llama.cpp's trees and the system's
folders (resolved as the preprocessor would: the includer's folder for "...", then -iquote, -I, -isystem; every
directive, taken or not — so the scan sees at least what the compiler sees). A unit that names nothing the rules or
the API diff list cannot hold a site of either: no call, field, constant, type or macro it spells can resolve to a
listed declaration. Nothing is parsed for it, when besides:

- every `#include` of it that lands in a llama.cpp tree names a public header that is there at the target too and
  finds the same file there (an include gone, shadowed or of an internal header is itself a finding of the plan);
- no `#include` is computed by a macro (what it reaches is unknown).

"Names" also counts the macros of llama.cpp's public headers whose definitions spell a listed name (to a fixed
point): `LOG_INF(...)` reaches whatever its body names. The engine lists such a unit as `ReadMode.NAMES_NOTHING`;
a unit libclang cannot parse (a header such as R.h not found) whose text names nothing the API diff lists is listed
the same way, complete: there is nothing there for the cross reference to find.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from migrate.apidiff import ApiDiff, candidate_headers
from migrate.rewrite.defaults import PREFILTER_NAMES, default_params_call
from migrate.rewrite.includes import Inclusion, SearchPath, llama_root, shadowed
from migrate.rewrite.rules import KIND_SPECS, AdvisoryRule, Rule

IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
DEFINE = re.compile(rb"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_][A-Za-z0-9_]*)((?:[^\n]*\\\n)*[^\n]*)", re.MULTILINE)
DIRECTIVE = re.compile(rb"^[ \t]*#[ \t]*(?:include_next|include|import)\b[ \t]*([^\n]*)", re.MULTILINE)
SPELLED = re.compile(rb'([<"])([^>"\n]+)[>"]')
NOT_FOUND = re.compile(r"'([^']+)' file not found")
# Folders of a llama.cpp tree a missing header may come from: a file that cannot find one of them uses llama.cpp
# (its internals, or a tool's header), whatever its own text names.
LLAMA_FOLDERS = ("", "include", "common", "src", "ggml/include", "ggml/src", "vendor", "tools", "examples")


# --- what names are listed -------------------------------------------------------------------------------------


def rule_names(rules: Iterable[Rule], advisories: Iterable[AdvisoryRule]) -> set[bytes]:
    """Every identifier a site of the rules or of the rules file's advisories must spell: the function or the struct
    and member a rule matches, the set-up call a params rule looks for, what an advisory watches; and the names the
    engine always looks for (defaults.PREFILTER_NAMES)."""
    names = set(PREFILTER_NAMES)
    for rule in rules:
        match = rule.match
        names |= {match.function or "", match.struct or "", match.member or ""}
        if KIND_SPECS[rule.kind].setups and match.struct:
            names.add(str(rule.params.get("setup_call") or default_params_call(match.struct)))
    for advisory in advisories:
        for entry in advisory.matches:
            names |= {entry.match.function or "", entry.match.struct or "", entry.match.member or ""}
    return {name.encode() for name in names if name}


def diff_names(diff: ApiDiff) -> set[bytes] | None:
    """Every identifier a use of something the diff lists must spell: each part of a qualified function, type or
    constant name, a field and its struct, a macro, what hands out a changed default; None when a listed function can
    be called without its name (an operator, a constructor, a destructor, a conversion)."""
    names: set[bytes] = set()
    for key in diff.breaks:
        kind, _, body = key.partition(":")
        body = body.split("|")[0]
        if kind == "t":
            body = body.split()[-1] if body.split() else body  # `struct llama_kv_cache_view`: the name
        parts = [p for p in re.split(r"::|\.|\s+", body) if p]
        if kind == "f" and parts and (parts[-1].startswith(("operator", "~")) or
                                      (len(parts) > 1 and parts[-1] == parts[-2])):  # fmt: skip
            return None
        names |= {p.encode() for p in parts if p.isidentifier()}
    # a changed default comes with a call of its default-params function or an object of its struct: both named
    names |= {key.partition(":")[2].encode() for key in diff.defaults_by_setter}
    return names


def added_names(diff: ApiDiff) -> set[bytes]:
    """What the target declares and the source tree does not: code naming one looks newer than --from (a finding
    of the parse, `Plan.newer_than_from`)."""
    items = [*diff.added_functions, *diff.added_constants, *diff.added_types, *diff.added_macros]
    names = {part for item in items for part in re.split(r"::|\s+", item.name) if part.isidentifier()}
    names |= {f.name for f in diff.added_fields} | {f.struct for f in diff.added_fields}
    return {name.encode() for name in names}


def with_macros(names: set[bytes], headers: Iterable[Path]) -> frozenset[bytes]:
    """`names` and every macro of `headers` whose definition spells one of them, to a fixed point."""
    found = set(names)
    defines: list[tuple[bytes, set[bytes]]] = []
    for header in headers:
        try:
            text = header.read_bytes()
        except OSError:
            continue
        defines += [(m.group(1), set(IDENTIFIER.findall(m.group(2)))) for m in DEFINE.finditer(text)]
    grown = True
    while grown:
        grown = False
        for name, body in defines:
            if name not in found and body & found:
                found.add(name)
                grown = True
    return frozenset(found)


def public_headers(tree: Path) -> list[Path]:
    """The headers of a llama.cpp tree whose macros a consumer may expand (those the API diff compares)."""
    return [tree / name for name in candidate_headers(tree)]


# --- a unit's text ---------------------------------------------------------------------------------------------


@dataclass
class UnitText:
    """What the pre-scan read of one unit."""

    files: list[Path] = field(default_factory=list)  # the unit and the files its includes reach outside llama.cpp
    llama: list[Inclusion] = field(default_factory=list)  # its includes that land in a llama.cpp tree
    computed: bool = False  # an `#include` whose name a macro computes


class Prescan:
    """Reads units' text for the names they spell and the llama.cpp headers they include (each file read once)."""

    def __init__(self, old_root: Path, new_root: Path | None) -> None:
        self.old_root = old_root.resolve()
        self.new_root = new_root.resolve() if new_root is not None else None
        self._identifiers: dict[Path, frozenset[bytes]] = {}
        self._directives: dict[Path, list[tuple[int, bytes, bool]]] = {}  # (line, spelled, angled); b"" computed

    def read(self, unit: Path, flags: list[str]) -> UnitText:
        search = SearchPath.from_flags(flags)
        system = {folder.resolve() for folder in _system_folders(flags)}
        text = UnitText()
        seen: set[Path] = set()
        stack = [unit.resolve()]
        while stack:
            path = stack.pop()
            if path in seen:
                continue
            seen.add(path)
            text.files.append(path)
            for line, spelled, angled in self._includes(path):
                if not spelled:
                    text.computed = True
                    continue
                found = _resolve(spelled.decode(errors="replace"), path, angled, search)
                if found is None or any(found.is_relative_to(folder) for folder in system):
                    continue  # a system header (found by the compiler's own folders) or none at all
                root = llama_root(found, self.old_root)
                if root is not None:
                    text.llama.append(Inclusion(str(path), line, spelled.decode(errors="replace"), angled, found, root))
                else:
                    stack.append(found)
        return text

    def names_any(self, text: UnitText, names: frozenset[bytes] | None) -> bool:
        """Whether the unit's text spells one of `names` (None: anything may be a use)."""
        if names is None:
            return True
        return any(self.identifiers(path) & names for path in text.files)

    def includes_settled(self, text: UnitText, flags: list[str]) -> bool:
        """Every include of the unit into llama.cpp is of a public header that the target has and that the same
        directive finds there: the API check would find nothing at those directives."""
        if text.computed:
            return False
        if not text.llama:
            return True
        if self.new_root is None:
            return False
        search = SearchPath.from_flags(flags)
        for inclusion in text.llama:
            if not inclusion.public or not (self.new_root / inclusion.relative).is_file():
                return False
            if shadowed(inclusion, search, self.old_root, self.new_root) is not None:
                return False
        return True

    def identifiers(self, path: Path) -> frozenset[bytes]:
        if path not in self._identifiers:
            try:
                self._identifiers[path] = frozenset(IDENTIFIER.findall(path.read_bytes()))
            except OSError:
                self._identifiers[path] = frozenset({b""})  # unreadable: matches nothing; the parse will say why
        return self._identifiers[path]

    def missing_llama_header(self, messages: Iterable[str]) -> str | None:
        """The first header a failed parse could not find that llama.cpp's tree has (then the file does use
        llama.cpp, internals included, whatever its text names)."""
        for message in messages:
            match = NOT_FOUND.search(message)
            if match and any((self.old_root / folder / match.group(1)).is_file() for folder in LLAMA_FOLDERS):
                return match.group(1)
        return None

    def _includes(self, path: Path) -> list[tuple[int, bytes, bool]]:
        if path not in self._directives:
            found = []
            try:
                data = path.read_bytes()
            except OSError:
                data = b""
            for match in DIRECTIVE.finditer(data):
                line = data.count(b"\n", 0, match.start()) + 1
                spelled = SPELLED.match(match.group(1))
                found.append((line, spelled.group(2), spelled.group(1) == b"<") if spelled else (line, b"", False))
            self._directives[path] = found
        return self._directives[path]


def _system_folders(flags: list[str]) -> list[Path]:
    folders = []
    for index, flag in enumerate(flags):
        if flag == "-isystem" and index + 1 < len(flags):
            folders.append(Path(flags[index + 1]))
        elif flag.startswith("-isystem") and len(flag) > len("-isystem"):
            folders.append(Path(flag[len("-isystem") :]))
    return folders


def _resolve(spelled: str, includer: Path, angled: bool, search: SearchPath) -> Path | None:
    folders = ([] if angled else [includer.parent, *search.quote]) + list(search.angled)
    for folder in folders:
        candidate = folder / spelled
        if candidate.is_file():
            return candidate.resolve()
    return None
