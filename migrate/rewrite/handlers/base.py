"""The handler registry: one `Handler` subclass per rule kind (rules.KIND_SPECS), registered with `@handler(kind)`.

Handlers are made per translation unit (`handlers_for`), so a kind that gathers its sites before acting (the memory
handle, hoisted once per function) keeps that state for one unit only. They write through the engine
(`engine.edits`, `engine.manual`) at the time they run: units.py swaps the engine's state while it records a unit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, TypeVar

from migrate.rewrite.calls import CallJob
from migrate.rewrite.collect import CallSite, Collected, FieldSite
from migrate.rewrite.plan import Plan
from migrate.rewrite.rules import KIND_SPECS, Rule
from migrate.rewrite.tokens import CallSpan

if TYPE_CHECKING:
    from migrate.rewrite.engine import Engine


class Handler:
    """What one rule kind does. The defaults do nothing: a kind overrides the sites it has."""

    kind: ClassVar[str] = ""
    # The call is rebuilt from the rule's fix over its arguments: a use in a macro body, or of a name the --from tree
    # does not declare, is rewritten too (the rule's handle written inline), not only listed.
    template_call: ClassVar[bool] = False

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def call(self, site: CallSite, span: CallSpan, plan: Plan) -> None:
        """A call that resolved to the rule's function, read token by token as `span`."""

    def calls_done(self, collected: Collected, plan: Plan) -> list[CallJob]:
        """After every call site of the unit: the template calls to compose (nested calls become one edit)."""
        return []

    def field(self, site: FieldSite, plan: Plan) -> None:
        """A use of the rule's struct field (a field folded with others is planned apart: fold.py)."""

    def unit(self, collected: Collected, fresh: set[str], plan: Plan, language: str) -> None:
        """Once per unit, after its call and field sites: what the kind finds by itself (set-ups, checks)."""

    def rules(self) -> list[Rule]:
        """The active rules of this kind."""
        return [r for r in self.engine.rules if r.kind == self.kind]


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


def handlers_for(engine: Engine) -> dict[str, Handler]:
    """Fresh handlers for one unit, in ORDER."""
    return {kind: HANDLERS[kind](engine) for kind in ORDER}


def template_call(rule: Rule) -> bool:
    return HANDLERS[rule.kind].template_call
