"""The handler registry: one `Handler` subclass per rule kind (rules.KIND_SPECS), registered with `@handler(kind)`.

A handler is given a site (the node a rule matched, which carries its rule) and the unit's `UnitFacts`, and returns a
`HandlerResult`: the edits, manual items, advisories and decisions it made of them, as a value. The engine applies the
results in the order the handlers return them; a handler never writes into the engine or the plan, so the same unit
planned in a worker process gives back the same values (units.py).

Handlers are made per translation unit (`handlers_for`), so a kind that gathers its sites before acting (the memory
handle, hoisted once per function) keeps that gathering for one unit only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from migrate.rewrite.calls import CallJob
from migrate.rewrite.collect import CallSite, Collected, FieldSite
from migrate.rewrite.edits import Edit, SourceFile
from migrate.rewrite.plan import ACTION, Advisory, ManualItem
from migrate.rewrite.rules import KIND_SPECS, Rule
from migrate.rewrite.tokens import CallSpan


@dataclass(frozen=True)
class UnitFacts:
    """What a handler may read about the unit being planned (read only: it answers with a `HandlerResult`)."""

    sources: Mapping[Path, SourceFile]  # the consumer's files read so far, by path
    rules: tuple[Rule, ...]  # the active rules
    options: Mapping[str, Any]  # the resolved rule options
    relative: Callable[[Path | str], str]  # a file as the plan names it (relative to the consumer's root)
    collected: Collected  # what the unit's walk found
    fresh: frozenset[str]  # the unit's files no earlier unit planned: only their sites are planned
    language: str  # "c" or "c++" (language_of the unit)

    def source(self, file: str | Path) -> SourceFile:
        return self.sources[Path(file)]

    def of_kind(self, kind: str) -> list[Rule]:
        return [r for r in self.rules if r.kind == kind]


@dataclass(frozen=True)
class HandlerResult:
    """What a handler made of a site (or of the whole unit): applied by the engine in the order returned."""

    edits: tuple[Edit, ...] = ()
    manual: tuple[ManualItem, ...] = ()
    advisories: tuple[Advisory, ...] = ()
    decisions: tuple[str, ...] = ()
    rules_used: tuple[tuple[str, str], ...] = ()  # (rule id, description) of the rules that fired, in that order
    calls: tuple[CallJob, ...] = ()  # template calls to compose with the unit's others (nested calls: one edit)


NOTHING = HandlerResult()


class Findings:
    """Builds one `HandlerResult`: a handler's scratch pad while it looks at one site or unit, frozen by `result()`."""

    def __init__(self, facts: UnitFacts) -> None:
        self.facts = facts
        self.edits: list[Edit] = []
        self.manual: list[ManualItem] = []
        self.advisories: list[Advisory] = []
        self.decisions: list[str] = []
        self.rules_used: list[tuple[str, str]] = []
        self.calls: list[CallJob] = []

    def edit(self, *edits: Edit) -> None:
        self.edits += edits

    def listed(self, file: str, offset: int, rule: Rule, message: str, kind: str = ACTION) -> None:
        """A manual item at `offset` of `file` (the rule counts as used, as an edit of it would)."""
        line = self.facts.source(file).line_of(offset)
        self.manual.append(ManualItem(self.facts.relative(file), line, rule.id, message, kind))
        self.used(rule)

    def advisory(self, advisory: Advisory) -> None:
        self.advisories.append(advisory)

    def decision(self, text: str) -> None:
        self.decisions.append(text)

    def used(self, rule: Rule) -> None:
        self.rules_used.append((rule.id, rule.description))

    def call(self, job: CallJob) -> None:
        self.calls.append(job)

    def result(self) -> HandlerResult:
        return HandlerResult(tuple(self.edits), tuple(self.manual), tuple(self.advisories), tuple(self.decisions),
                             tuple(self.rules_used), tuple(self.calls))  # fmt: skip


class Handler:
    """What one rule kind does. The defaults find nothing: a kind overrides the sites it has."""

    kind: ClassVar[str] = ""
    # The call is rebuilt from the rule's fix over its arguments: a use in a macro body, or of a name the --from tree
    # does not declare, is rewritten too (the rule's handle written inline), not only listed.
    template_call: ClassVar[bool] = False

    def call(self, site: CallSite, span: CallSpan, facts: UnitFacts) -> HandlerResult:
        """A call that resolved to the rule's function (`site.rule`), read token by token as `span`."""
        return NOTHING

    def calls_done(self, facts: UnitFacts) -> HandlerResult:
        """After every call site of the unit: the template calls to compose (`calls`), and what deciding them made."""
        return NOTHING

    def field(self, site: FieldSite, facts: UnitFacts) -> HandlerResult:
        """A use of the rule's struct field (a field folded with others is planned apart: fold.py)."""
        return NOTHING

    def unit(self, facts: UnitFacts) -> HandlerResult:
        """Once per unit, after its call and field sites: what the kind finds by itself (set-ups, checks)."""
        return NOTHING


HANDLERS: dict[str, type[Handler]] = {}
H = TypeVar("H", bound=type[Handler])


def handler(kind: str) -> Callable[[H], H]:
    """Register a class as the handler of `kind` (a kind rules.KIND_SPECS declares)."""

    def register(cls: H) -> H:
        if kind not in KIND_SPECS or kind in HANDLERS:
            raise AssertionError(f"handler for {kind!r}: not a declared kind, or registered twice")
        cls.kind = kind
        HANDLERS[kind] = cls
        return cls

    return register


# The order handlers run in within a unit, and so the order their results are gathered into the plan. Said here,
# not left to the order the kind modules happen to be imported in (the package's imports are sorted).
ORDER = ("manual_call", "no_successor", "append_argument", "memory_call", "bool_field_to_enum", "decode_error",
         "params_insert")  # fmt: skip


def handlers_for() -> dict[str, Handler]:
    """Fresh handlers for one unit, in ORDER."""
    return {kind: HANDLERS[kind]() for kind in ORDER}


def template_call(rule: Rule) -> bool:
    return HANDLERS[rule.kind].template_call
