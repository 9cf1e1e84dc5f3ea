"""Headers a consumer includes from llama.cpp's tree, as part of its API surface.

The API diff compares llama.cpp's public headers (`llama.h`, `llama-cpp.h`, `common/*.h`). A consumer may also
include headers that are not public (`src/unicode.h`, `src/llama-vocab.h`, `ggml/src/...`): those are its API too,
so each one is diffed between the two trees like the public ones, and a header gone at the target is a manual
action at its `#include`. Every include that resolves into llama.cpp's tree is also resolved again at the target
with the same search order (the includer's folder for "...", then -iquote, -I, -isystem, as the parse used them):
when a header new at the target comes first (`common/unicode.h`, new at b7836, found before `src/unicode.h` by
`#include "unicode.h"` with `-I common` before `-I src`), the include silently means another file — a manual action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import clang.cindex as ci

from migrate.apidiff import PUBLIC_PREFIXES
from migrate.tree import is_llama_tree

INCLUDE_LINE = re.compile(rb'^\s*#\s*(?:include|import|include_next)\s*([<"])([^>"]+)[>"]')


@dataclass(frozen=True)
class Inclusion:
    """One `#include` in a consumer file that resolved into a llama.cpp tree."""

    file: str  # the consumer file holding the directive
    line: int
    spelled: str  # as written between the quotes or brackets
    angled: bool
    included: Path  # the file it resolved to (resolved path)
    root: Path  # the llama.cpp tree that file lies in (the --from tree, or a copy of it such as a submodule)

    @property
    def relative(self) -> str:
        """The included header relative to its llama.cpp tree: `src/unicode.h`."""
        return self.included.relative_to(self.root).as_posix()

    @property
    def public(self) -> bool:
        return self.relative.startswith(PUBLIC_PREFIXES)


def llama_root(path: Path, known: Path | None = None) -> Path | None:
    """The llama.cpp tree a file lies in: `known` (the --from tree) when it is below it, else the nearest folder
    above it that is a llama.cpp tree (a submodule copy); None for a file outside any."""
    if known is not None and path.is_relative_to(known):
        return known
    for parent in path.parents:
        if is_llama_tree(parent):
            return parent
    return None


def inclusions(tu: ci.TranslationUnit, files: set[str], tree: Path) -> list[Inclusion]:
    """The directives in `files` (consumer files of this unit) whose header lies in a llama.cpp tree."""
    found = []
    lines: dict[str, list[bytes]] = {}
    for inclusion in tu.get_includes():
        source, included = inclusion.source, inclusion.include
        if source is None or included is None or source.name not in files:
            continue
        target = Path(included.name).resolve()
        root = llama_root(target, tree)
        if root is None:
            continue
        if source.name not in lines:
            lines[source.name] = Path(source.name).read_bytes().splitlines()
        number = inclusion.location.line
        text = lines[source.name][number - 1] if 0 < number <= len(lines[source.name]) else b""
        match = INCLUDE_LINE.match(text)
        if match is None:
            continue  # written through a macro: the spelling is not known
        found.append(Inclusion(source.name, number, match.group(2).decode(errors="replace"), match.group(1) == b"<",
                               target, root))  # fmt: skip
    return found


@dataclass(frozen=True)
class SearchPath:
    """The include folders of one parse, in the order the preprocessor tries them."""

    quote: tuple[Path, ...]  # -iquote
    angled: tuple[Path, ...]  # -I, then -isystem

    @classmethod
    def from_flags(cls, flags: list[str]) -> SearchPath:
        quote: list[Path] = []
        include: list[Path] = []
        system: list[Path] = []
        targets = {"-iquote": quote, "-I": include, "-isystem": system}
        index = 0
        while index < len(flags):
            flag = flags[index]
            if flag in targets and index + 1 < len(flags):
                targets[flag].append(Path(flags[index + 1]))
                index += 2
                continue
            for prefix in ("-iquote", "-isystem", "-I"):
                if flag.startswith(prefix) and len(flag) > len(prefix):
                    targets[prefix].append(Path(flag[len(prefix) :]))
                    break
            index += 1
        return cls(tuple(quote), tuple(include + system))

    def folders(self, inclusion: Inclusion) -> list[Path]:
        own = [] if inclusion.angled else [Path(inclusion.file).parent, *self.quote]
        return own + list(self.angled)


def resolve(spelled: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        candidate = folder / spelled
        if candidate.is_file():
            return candidate.resolve()
    return None


def at_target(folder: Path, old_root: Path, new_root: Path) -> Path:
    """A search folder as it is at the target: a folder of the old llama.cpp tree becomes the same folder of the
    new one; the consumer's own folders stay. A folder the old tree lacks maps too (resolved as far as it exists)."""
    resolved = folder.resolve()
    if resolved.is_relative_to(old_root):
        return new_root / resolved.relative_to(old_root)
    return folder


@dataclass(frozen=True)
class Shadowing:
    """An include that finds another header at the target: which one, and why."""

    inclusion: Inclusion
    new: str | None  # the header it finds at the target, relative to the new tree (None: outside it)
    new_is_new: bool  # that header does not exist at the old tree

    def message(self, old_label: str, new_label: str) -> str:
        spelled = f'"{self.inclusion.spelled}"' if not self.inclusion.angled else f"<{self.inclusion.spelled}>"
        fresh = " (new there)" if self.new_is_new else ""
        return (f"`#include {spelled}` finds `{self.inclusion.relative}` at {old_label}, but at {new_label} it finds "
                f"`{self.new}`{fresh}, which comes first in the include order (the folders this file is parsed with): "
                f"the include silently means another file. Include it by a path that names it "
                f'(e.g. "{self.inclusion.relative}" with the tree root on the include path) or reorder the '
                "include folders")  # fmt: skip


def shadowed(inclusion: Inclusion, search: SearchPath, old_root: Path, new_root: Path) -> Shadowing | None:
    """The header `inclusion` finds at the target when it is another one than at the source, else None (also when
    this search order does not reproduce what the parse found, e.g. a header map or a macro-computed include)."""
    folders = search.folders(inclusion)
    if resolve(inclusion.spelled, folders) != inclusion.included:
        return None
    root = inclusion.root
    new_folders = [at_target(f, root, new_root) for f in folders]
    if inclusion.root != old_root.resolve():
        new_folders = [at_target(f, old_root.resolve(), new_root) for f in new_folders]
    found = resolve(inclusion.spelled, new_folders)
    if found is None or not found.is_relative_to(new_root):
        return None  # gone at the target: the header diff says so
    relative = found.relative_to(new_root).as_posix()
    if relative == inclusion.relative:
        return None
    return Shadowing(inclusion, relative, not (old_root / relative).exists())
