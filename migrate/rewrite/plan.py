"""A `Plan`: what the migration would change (edits), what a person must do (manual), what to watch (advisories).

Nothing here touches the consumer's files: `Plan.new_contents()` gives the rewritten bytes, `apply.py` writes
them. The engine builds a plan (the API diff cross-reference adds to `manual` and `api_section` while it does);
`Plan.with_trees` then makes the plan that is handed on, with the llama.cpp trees it was made with. Later stages
(apply, report, run) only read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.rewrite.edits import SEMANTIC, Edit, SourceFile, apply_edits, unified_diff

if TYPE_CHECKING:
    from migrate.sources import SourceTree

ACTION = "action"  # the code will not build or behave at the target until a person acts
REVIEW = "review"  # the tool changed something a person should confirm (e.g. a removed call)


@dataclass(frozen=True)
class ManualItem:
    file: str
    line: int
    rule: str
    message: str  # what is wrong and what to do
    kind: str = ACTION
    old: str | None = None  # old declaration (API diff), when known
    new: str | None = None  # new declaration, when there is one

    def to_json(self) -> dict[str, Any]:
        data = {"file": self.file, "line": self.line, "rule": self.rule, "kind": self.kind, "why": self.message}
        if self.old:
            data["old"] = self.old
        if self.new:
            data["new"] = self.new
        return data


@dataclass(frozen=True)
class Advisory:
    """Code that compiles at the target but may behave differently; a finding, not a rewrite."""

    file: str
    line: int
    rule: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "rule": self.rule, "why": self.message}


class ReadMode(StrEnum):
    """How a consumer file was read (the plan JSON's `files[].mode`)."""

    LIBCLANG = "libclang"  # parsed with its headers: every name resolved
    TREE_SITTER = "tree-sitter"  # libclang could not parse it: rules matched by name, the API diff did not check it
    SKIPPED = "skipped"  # a header no parsed source file includes
    # not parsed, or not parseable, but its text and the consumer headers it includes name nothing the API diff (nor,
    # when not parsed at all, the rules) list: nothing there can use what changed, so the plan is complete without it
    NAMES_NOTHING = "names-nothing"

    @property
    def incomplete(self) -> bool:
        """The plan cannot vouch for this file: it may use changed API the cross reference did not see."""
        return self is ReadMode.TREE_SITTER


@dataclass
class FileReport:
    """How one consumer file was read: the parser used and the problems it met."""

    path: str
    mode: ReadMode
    reason: str = ""
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mode = ReadMode(self.mode)  # a plan cache holds the value


def trees_used(source: SourceTree, target: SourceTree | None, target_error: str | None = None) -> list[dict[str, Any]]:
    """`Plan.builds` of a one-step plan: the tree declarations resolved against and the target's, or a row saying
    why the target is not there."""
    builds = [{"role": "from (declarations resolved against)", **source.describe()}]
    if target is not None:
        builds.append({"role": "to", **target.describe()})
    else:
        builds.append({"role": "to", "requested": "?", "provided": "not resolved", "commit": "", "stand_in": "",
                       "source": target_error or "", "path": ""})  # fmt: skip
    return builds


@dataclass
class Plan:
    root: Path
    from_version: str
    to_version: str
    files: dict[Path, SourceFile] = field(default_factory=dict)
    edits: list[Edit] = field(default_factory=list)
    manual: list[ManualItem] = field(default_factory=list)
    advisories: list[Advisory] = field(default_factory=list)
    file_reports: list[FileReport] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)  # choices the report explains (e.g. clear(mem, false))
    options: dict[str, Any] = field(default_factory=dict)
    rules_used: dict[str, str] = field(default_factory=dict)  # rule id → description, for rules that fired
    builds: list[dict[str, Any]] = field(default_factory=list)  # SourceTree.describe() of each tree used, with role
    api_section: str = ""  # markdown: the API diff and its cross reference with this tree (rewrite/apicheck.py)
    api_summary: dict[str, Any] = field(default_factory=dict)  # the same in numbers, for --json
    # names the --from tree does not declare but a later llama.cpp does ({name, file, line, known}): the code looks
    # newer than --from (the user probably picked the wrong --from)
    newer_than_from: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    cached: bool = False  # rebuilt from the plan cache (inputs unchanged since a previous run)

    def with_trees(self, builds: list[dict[str, Any]], api_section: str | None = None) -> Plan:
        """The plan as its builder hands it on: this one with the llama.cpp trees it was made with (`builds`) and,
        when the API diff could not be taken, the section saying why (`api_section`). A new value: the engine's
        plan, which may be the plan cache's, stays as it was."""
        section = self.api_section if api_section is None else api_section
        return dataclasses.replace(self, builds=list(builds), api_section=section)

    def add_part(self, part: Plan) -> None:
        """A translation unit's findings after those of the units before it (a rule used, and a name newer than
        --from at one place, listed once)."""
        self.file_reports += part.file_reports
        self.manual += part.manual
        self.advisories += part.advisories
        self.decisions += part.decisions
        for rule_id, description in part.rules_used.items():
            self.rules_used.setdefault(rule_id, description)
        seen = {(e["name"], e["file"], e["line"]) for e in self.newer_than_from}
        for entry in part.newer_than_from:
            place = (entry["name"], entry["file"], entry["line"])
            if place not in seen:
                seen.add(place)
                self.newer_than_from.append(entry)

    def relative(self, path: Path | str) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def edits_by_file(self) -> dict[Path, list[Edit]]:
        grouped: dict[Path, list[Edit]] = {}
        for edit in self.edits:
            grouped.setdefault(edit.file, []).append(edit)
        return grouped

    def new_contents(self) -> dict[Path, bytes]:
        """Rewritten bytes of each file that changes (EditConflict if two edits overlap)."""
        result = {}
        for path, edits in self.edits_by_file().items():
            original = self.files[path].data
            updated = apply_edits(original, edits)
            if updated != original:
                result[path] = updated
        return result

    def diff(self) -> str:
        contents = self.new_contents()
        return "".join(
            unified_diff(self.relative(path), self.files[path].data, contents[path]) for path in sorted(contents)
        )

    @property
    def actions(self) -> list[ManualItem]:
        return [m for m in self.manual if m.kind == ACTION]

    @property
    def syntactic_edits(self) -> list[Edit]:
        return [e for e in self.edits if e.confidence != SEMANTIC]

    def sorted_edits(self) -> list[Edit]:
        return sorted(self.edits, key=lambda e: (self.relative(e.file), e.start, e.end))

    def summary_counts(self) -> dict[str, int]:
        return {
            "files_scanned": len(self.file_reports),
            "files_changed": len(self.new_contents()),
            "edits": len(self.edits),
            "semantic": len(self.edits) - len(self.syntactic_edits),
            "syntactic": len(self.syntactic_edits),
            "manual": len(self.actions),
            "review": len(self.manual) - len(self.actions),
            "advisories": len(self.advisories),
        }

    def to_cache(self) -> dict[str, Any]:
        """Everything needed to rebuild this plan without parsing again (file bytes are re-read and checked)."""
        return {
            "from": self.from_version,
            "to": self.to_version,
            "files": {str(path): hashlib.sha256(source.data).hexdigest() for path, source in self.files.items()},
            "edits": [{**asdict(e), "file": str(e.file)} for e in self.edits],
            "manual": [asdict(m) for m in self.manual],
            "advisories": [asdict(a) for a in self.advisories],
            "file_reports": [asdict(r) for r in self.file_reports],
            "decisions": self.decisions,
            "options": self.options,
            "rules_used": self.rules_used,
            "api_section": self.api_section,
            "api_summary": self.api_summary,
            "newer_than_from": self.newer_than_from,
        }

    @classmethod
    def from_cache(cls, root: Path, data: dict[str, Any]) -> Plan | None:
        """The cached plan, or None when a file it read has changed since."""
        files = {}
        for name, digest in data["files"].items():
            path = Path(name)
            try:
                source = SourceFile.read(path)
            except Exception:
                return None
            if hashlib.sha256(source.data).hexdigest() != digest:
                return None
            files[path] = source
        edits = [Edit(**{**e, "file": Path(e["file"]), "absorbed": tuple(e["absorbed"])}) for e in data["edits"]]
        return cls(
            root,
            data["from"],
            data["to"],
            files=files,
            edits=edits,
            manual=[ManualItem(**m) for m in data["manual"]],
            advisories=[Advisory(**a) for a in data["advisories"]],
            file_reports=[FileReport(**r) for r in data["file_reports"]],
            decisions=list(data["decisions"]),
            options=dict(data["options"]),
            rules_used=dict(data["rules_used"]),
            api_section=data["api_section"],
            api_summary=dict(data["api_summary"]),
            newer_than_from=list(data.get("newer_than_from", [])),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.from_version,
            "to": self.to_version,
            "root": str(self.root),
            "summary": self.summary_counts(),
            "edits": [
                {
                    "file": self.relative(e.file),
                    "line": e.line,
                    "rule": e.rule,
                    "before": e.before,
                    "after": e.replacement,
                    "confidence": e.confidence,
                    **({"note": e.note} if e.note else {}),
                    **({"also": list(e.absorbed)} if e.absorbed else {}),
                }
                for e in self.sorted_edits()
            ],
            "manual": [m.to_json() for m in sorted(self.manual, key=lambda m: (m.file, m.line))],
            "advisories": [a.to_json() for a in sorted(self.advisories, key=lambda a: (a.file, a.line))],
            "decisions": self.decisions,
            "options": self.options,
            "api": self.api_summary,
            "newer_than_from": self.newer_than_from,
            "files": [vars(report) for report in self.file_reports],
            "builds": self.builds,
        }
