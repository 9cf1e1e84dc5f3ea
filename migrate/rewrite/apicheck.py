"""The API diff inside a plan: every use in the consumer's code of a llama.cpp declaration that is removed or changed
at the target and that no rewrite rule covers becomes a manual item of the plan (`migrate plan` then exits 1 and
`--json`'s `manual` lists it, with the old and new declarations), and the diff with its cross reference becomes a
report section.

The engine hands each translation unit it has already parsed to `ApiScan.scan`: the uses are resolved on the same
libclang AST as the rewrites (the consumer's real include paths and flags), so no file is parsed twice. The result
is stored with the plan, so a warm plan (a plan-cache hit) recomputes nothing.

Headers the consumer includes from llama.cpp's tree that are not public (`src/unicode.h`) are diffed the same way,
and each include into the tree is resolved again at the target: one that finds another header there (a new
`common/unicode.h` ahead of `src/unicode.h` in the include order) or none is an action (migrate/rewrite/includes.py).

What counts as a manual ACTION: the code will not compile (or not mean the same) at the target. Uses that still
compile are listed to REVIEW instead, and do not fail the plan: a re-valued enum constant named by its name (the
name follows the value; only a number stored or exchanged across versions changes meaning), a newly deprecated
function (a warning), a function that only gained parameters with defaults.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clang.cindex as ci

from migrate import apidiff
from migrate.apidiff import ApiDiff, ApiUse, ChangeKind, CrossReference
from migrate.rewrite.includes import PUBLIC_PREFIXES, Inclusion, SearchPath, inclusions, shadowed
from migrate.rewrite.plan import ACTION, REVIEW, ManualItem, Plan
from migrate.sources import SourceTree

RULE_ID = "api-diff"
RULE_DESCRIPTION = ("a declaration of llama.cpp's headers (the public ones, and those this tree includes from "
                    "llama.cpp's tree) removed or changed between the two builds, used here, that no rewrite rule "
                    "handles; or an include that finds another header at the target")  # fmt: skip


@dataclass(frozen=True)
class ApiTarget:
    """What the plan's API check compares: the tree the consumer builds against now and the target tree."""

    old: SourceTree
    new: SourceTree
    cache: str | Path | None = None  # llama-migrate cache root (the parsed header surfaces live there)

    def cache_key(self) -> str:
        """Changes when either tree's headers or the API-diff code change: a cached plan is then redone."""
        digest = hashlib.sha256()
        for module in sorted(Path(apidiff.__file__).parent.glob("*.py")):  # every module of the package
            digest.update(module.read_bytes())
        for tree in (self.old, self.new):
            digest.update(apidiff.surface_fingerprint(tree.path.resolve()).encode())
        digest.update(str(apidiff.SURFACE_FORMAT).encode())
        return digest.hexdigest()[:16]

    def load(self) -> tuple[ApiDiff, list[str], apidiff.ApiSurface]:
        """The diff, the old tree's headers the uses must resolve to, and the new surface; ApiDiffError when a tree
        does not parse."""
        old = apidiff.load_surface(self.old, self.cache)
        new = apidiff.load_surface(self.new, self.cache)
        return apidiff.diff(old, new), old.headers, new


def _values(use: ApiUse) -> str:
    """`9 → 12` from the declarations `LLAMA_EXAMPLE_SERVER = 9` and `LLAMA_EXAMPLE_SERVER = 12`."""
    return f"{use.old.rpartition('= ')[2]} → {(use.new or '').rpartition('= ')[2]}"


def _message(use: ApiUse, target: str) -> str:
    """What is wrong at this use and what to do, in the words a reviewer needs."""
    via = " (through a macro expanded here)" if use.in_macro else ""
    if use.kind == ChangeKind.CONSTANT_REVALUED:
        return (f"`{use.symbol}`{via} has another value at {target} ({_values(use)}). Code that names it "
                "compiles and means the same; only a number stored or exchanged across versions (a config file, a "
                "wire format, a switch on raw integers, a library built against the other version) now means "
                "another constant — check those, nothing to do otherwise")  # fmt: skip
    if use.kind == ChangeKind.DEPRECATED:
        return f"`{use.symbol}`{via} is deprecated at {target} ({use.note}); it still compiles, with a warning"
    if use.kind == ChangeKind.MOVED and use.compiles:  # out of the public headers, into an internal one included here
        return (f"`{use.symbol}`{via} left llama.cpp's public headers at {target}; {use.note}: it still compiles, as "
                "an internal of llama.cpp (no API stability) — check nothing else relied on it being public")
    if use.kind == ChangeKind.DEFAULT_CHANGED:
        return (f"`{use.symbol}` gives other defaults at {target}: {use.note}. The code compiles; where it relies on "
                "the default it now gets the new value — assign the field if the old behaviour matters")  # fmt: skip
    if use.kind == ChangeKind.MACRO_CHANGED and use.compiles:
        return (f"`{use.symbol}`{via} is defined otherwise at {target} (`{use.old}` → `{use.new}`): {use.note} — "
                "check it still does what this code wants")  # fmt: skip
    if use.compiles and use.judged_on_call:  # a re-signature that only dropped const, and this call passes none
        return (f"`{use.symbol}`{via} changed signature at {target}; {use.note} — the library may now write "
                "through that pointer: check the object may be changed")  # fmt: skip
    if use.compiles:  # a re-signature whose new trailing parameters all have defaults
        return f"`{use.symbol}`{via} changed signature at {target}; {use.note} — check the new parameters' defaults"
    note = f" ({use.note})" if use.note else ""
    return f"`{use.symbol}`{via}: {use.kind.value} at {target}{note}, and no rule covers it — change this code by hand"


@dataclass
class ApiScan:
    """The cross reference of one plan, filled unit by unit as the engine parses them."""

    target: ApiTarget
    diff: ApiDiff
    covered: set[str]
    tracked: apidiff.OldHeaders  # recognises the old tree's headers (also a submodule copy of them)
    xref: CrossReference = field(default_factory=CrossReference)  # its `review`: the uses that still compile
    scanned: set[str] = field(default_factory=set)
    not_scanned: dict[str, str] = field(default_factory=dict)  # file -> why its uses are not cross-referenced
    seconds: float = 0.0  # walking the ASTs for uses (the parses themselves are the engine's)
    # what the target declares: a name the old tree lacks but the target has says the code is newer than --from
    new_symbols: set[str] = field(default_factory=set)  # functions, enum constants, types
    new_fields: set[str] = field(default_factory=set)  # "struct.member"
    # llama.cpp headers that are not public but that the consumer includes (src/unicode.h): header -> what was found
    private: dict[str, str] = field(default_factory=dict)
    extra: list[tuple[str, ApiDiff, apidiff.OldHeaders]] = field(default_factory=list)  # their diffs
    internal_names: dict[str, frozenset[str]] = field(default_factory=dict)  # what each declares at the target
    include_actions: list[tuple[str, int, str, str | None, str | None]] = field(default_factory=list)
    checked_includes: set[tuple[str, int]] = field(default_factory=set)
    # units.triggers, by the number of private headers known when it was computed (a memo, not part of the scan)
    triggers: dict[int, frozenset[bytes] | None] = field(default_factory=dict)

    @classmethod
    def start(cls, target: ApiTarget, covered: set[str]) -> ApiScan:
        diff, headers, new = target.load()
        # apidiff's own cross_reference parses each file again; here the engine's parse is reused, so the two
        # pieces it is built from (OldHeaders, uses_in_file) are used directly.
        tracked = apidiff.OldHeaders(target.old.path.resolve(), headers)
        symbols = {f.name for f in new.functions} | {c.name for c in new.constants} | {t.name for t in new.types}
        return cls(target, diff, covered, tracked, new_symbols=symbols, new_fields={f.key for f in new.fields})

    def scan(self, tu: ci.TranslationUnit, files: Iterable[str], walked: dict[str, list[ci.Cursor]] | None = None,
             ) -> None:  # fmt: skip
        """Uses in `files` (the unit's own file and the consumer headers it includes), each file once; `walked`:
        their cursors as the rewrite's collector walked them (a file it did not walk is walked here)."""
        started = time.perf_counter()
        included = [i.include.name for i in tu.get_includes() if i.include is not None] if self.internal_names else []
        for name in sorted(set(files) - self.scanned):
            self.scanned.add(name)
            self.not_scanned.pop(name, None)
            nodes = walked.get(name) if walked is not None else None
            for use in apidiff.uses_in_file(self.diff, Path(name), tu, self.tracked, nodes):
                self.add_public(use, included)
            for _, diff, tracked in self.extra:
                for use in apidiff.uses_in_file(diff, Path(name), tu, tracked, nodes):
                    self.xref.add(use, self.covered)
        self.seconds += time.perf_counter() - started

    def add_public(self, use: ApiUse, included: Iterable[str]) -> None:
        """A use of the public diff, from a unit that includes the files `included`: a declaration gone from the
        public headers that an internal header of this unit declares at the target moved there — it compiles."""
        if use.kind in apidiff.MOVABLE and not use.compiles:
            names = list(included)
            internals = [(h, found) for h, found in self.internal_names.items() if any(_is_header(n, h) for n in names)]
            use = apidiff.moved_into(use, internals)
        self.xref.add(use, self.covered)

    def includes(self, tu: ci.TranslationUnit, files: Iterable[str], flags: list[str]) -> None:
        """The `#include`s in `files` that resolve into llama.cpp's tree: a header that is not public is diffed
        too (before `scan`, so its uses are found), one gone at the target or shadowed there by another is an
        action at the directive."""
        self.include_list(inclusions(tu, set(files), self.target.old.path.resolve()), flags)

    def include_list(self, found: list[Inclusion], flags: list[str]) -> None:
        """`includes` on inclusions already read from a unit (a worker process read them: migrate/rewrite/units.py)."""
        old_root, new_root = self.target.old.path.resolve(), self.target.new.path.resolve()
        search = SearchPath.from_flags(flags)
        new_label = self.target.new.provided
        for inclusion in found:
            if (inclusion.file, inclusion.line) in self.checked_includes:
                continue
            self.checked_includes.add((inclusion.file, inclusion.line))
            header = inclusion.relative
            if not (new_root / header).is_file():
                self.private.setdefault(header, f"gone at {new_label}")
                self._include_action(inclusion, f"`{header}`, included here from llama.cpp's tree, does not exist at "
                                     f"{new_label}: find what replaced it (the API diff lists what moved) and include "
                                     "that", None)  # fmt: skip
                continue
            if not inclusion.public and header not in self.private:
                self._diff_private(inclusion, new_root)
            shadow = shadowed(inclusion, search, old_root, new_root)
            if shadow is not None:
                self._include_action(inclusion, shadow.message(self.target.old.provided, new_label), shadow.new)

    def _include_action(self, inclusion: Inclusion, message: str, new: str | None) -> None:
        self.include_actions.append((inclusion.file, inclusion.line, message, inclusion.relative, new))

    def _diff_private(self, inclusion: Inclusion, new_root: Path) -> None:
        old_tree, new_tree = self.target.old, self.target.new
        labels = (old_tree.provided, old_tree.commit), (new_tree.provided, new_tree.commit)
        found = apidiff.diff_internal(inclusion.relative, inclusion.root, new_root, *labels)
        if found.diff is not None and found.old_headers is not None:
            self.extra.append((found.header, found.diff, found.old_headers))
            self.internal_names[found.header] = found.new_names
        self.private[found.header] = found.status

    def internals(self) -> list[str]:
        """The headers of llama.cpp's tree outside its public ones (`src/llama-vocab.h`) the code includes."""
        return sorted(h for h in self.private if not h.startswith(PUBLIC_PREFIXES))

    def skip(self, file: str, why: str) -> None:
        if file not in self.scanned:
            self.not_scanned[file] = why

    def finish(self, plan: Plan) -> None:
        """Manual items, the report section and the JSON summary into `plan`."""
        self.xref.parse_seconds = round(self.seconds, 3)
        target = self.target.new.provided
        items = {}
        for use, kind in [(u, ACTION) for u in self.xref.manual] + [(u, REVIEW) for u in self.xref.review]:
            item = ManualItem(plan.relative(use.file), use.line, RULE_ID, _message(use, target), kind, use.old,
                              use.new)  # fmt: skip
            items.setdefault((item.file, item.line, use.symbol), item)  # one item per symbol and line
        for file, line, message, old, new in self.include_actions:
            item = ManualItem(plan.relative(file), line, RULE_ID, message, ACTION, old, new)
            items.setdefault((item.file, item.line, f"#include {old}"), item)
        plan.manual += list(items.values())
        if items:
            plan.rules_used.setdefault(RULE_ID, RULE_DESCRIPTION)
        internals = self.internals()
        if internals:
            plan.decisions.append(
                f"This code uses llama.cpp internals: it includes {', '.join(f'`{h}`' for h in internals)} from "
                "llama.cpp's tree, outside its public headers — not covered by llama.cpp's API stability (they may "
                "change in any release). The declarations it uses from them are cross-referenced like public ones "
                "(the API diff section lists each header's comparison)."
            )
        plan.api_section = section(self, plan.root)
        plan.api_summary = self.summary(plan)

    def _by_status(self) -> list[tuple[str, list[ApiUse]]]:
        return [("covered", list(self.xref.covered)), ("manual", list(self.xref.manual)), ("review", self.xref.review)]

    def summary(self, plan: Plan) -> dict[str, Any]:
        return {
            "from": self.diff.old,
            "to": self.diff.new,
            "counts": self.diff.counts(),
            "uses": {status: len(uses) for status, uses in self._by_status()},
            "sites": [_site(use, status, plan) for status, uses in self._by_status() for use in uses],
            "not_scanned": {plan.relative(f): why for f, why in sorted(self.not_scanned.items())},
            "scanned": len(self.scanned),
            "private_headers": dict(sorted(self.private.items())),
            "include_actions": len(self.include_actions),
        }


def _is_header(name: str, header: str) -> bool:
    """Is the file `name` (included by a unit) `header` (relative to a llama.cpp tree), or a copy's of it?"""
    wanted = Path(header).parts
    return Path(name).parts[-len(wanted) :] == wanted


def _site(use: ApiUse, status: str, plan: Plan) -> dict[str, Any]:
    return {"file": plan.relative(use.file), "line": use.line, "column": use.column, "symbol": use.symbol,
            "change": use.kind.value, "status": status, "in_macro": use.in_macro}  # fmt: skip


def _review_table(reviews: list[ApiUse], base: Path, target: str) -> list[str]:
    lines = ["#### To review: uses that still compile at the target", "",
             "| where | symbol | change | why it compiles |", "| --- | --- | --- | --- |"]  # fmt: skip
    for use in reviews:
        why = {
            ChangeKind.CONSTANT_REVALUED: f"named, not numbered: the name follows the value ({_values(use)} at "
            f"{target}); only a stored or exchanged number changes meaning",
            ChangeKind.DEPRECATED: f"deprecated, not removed ({use.note})",
        }.get(use.kind, use.note or "")
        lines.append(f"| {use.where(base)} | `{use.symbol}` | {use.kind.value} | {why.replace('|', '/')} |")
    return lines


def _relative(file: str, base: Path) -> str:
    path = Path(file)
    return str(path.relative_to(base)) if path.is_relative_to(base) else file


def section(scan: ApiScan, root: Path) -> str:
    """The report section: a one-line verdict, then apidiff's diff and cross reference, folded."""
    base = root.resolve()
    target = scan.target.new.provided
    xref = scan.xref
    lines = ["## API diff and cross reference", "",
             f"llama.cpp's public headers compared, {scan.diff.old} → {scan.diff.new}; each use in this tree of a "
             f"declaration removed or changed there: **{len(xref.manual)} manual action(s)** (no rule covers them; "
             f"they are in the checklist above), {len(xref.covered)} covered by rules, {len(xref.review)} to review "
             "(still compile at the target). Not found: a constant written as its number instead of its name, and "
             "uses in files libclang could not parse (listed below).", ""]  # fmt: skip
    if scan.private:
        lines += ["Headers this tree includes from llama.cpp's tree that are not public, compared too (they are part "
                  "of its API surface):", ""]  # fmt: skip
        lines += [f"- `{header}`: {what}" for header, what in sorted(scan.private.items())] + [""]
    if scan.include_actions:
        lines += ["Includes that mean another file at the target (in the checklist above):", ""]
        lines += [f"- {_relative(file, base)}:{line}: {message}" for file, line, message, _, _ in scan.include_actions]
        lines += [""]
    if xref.review:
        lines += _review_table(xref.review, base, target) + [""]
    if scan.not_scanned:
        lines += ["Not cross-referenced (uses there may be missing):", ""]
        lines += [f"- `{_relative(f, base)}`: {why}" for f, why in sorted(scan.not_scanned.items())] + [""]
    lines += ["<details><summary>the API diff, and every use found</summary>", ""]
    lines += [apidiff.to_markdown(scan.diff, xref, base=base)]
    for header, diff, _ in scan.extra:
        lines += [f"#### {header}", "", apidiff.to_markdown(diff)]
    lines += ["</details>", ""]
    return "\n".join(lines)


def unavailable_section(why: str) -> str:
    """The section when the API check could not run: said plainly, so a clean plan is not read as complete."""
    return (
        "## API diff and cross reference\n\nNot computed: " + why + "\nUses of llama.cpp API removed or changed at "
        "the target that no rule covers are therefore NOT listed as manual actions in this plan.\n"
    )
