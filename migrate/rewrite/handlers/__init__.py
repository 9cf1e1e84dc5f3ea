"""One handler per rule kind, in a registry keyed by kind: what the engine does with a site a rule matched.

The engine walks a translation unit once (collect.py) and hands each call site and field site to the handler of its
rule's kind; a handler returns what it makes of it (edits, manual items, advisories, decisions) as a
`HandlerResult`, which the engine applies. A kind declares what it needs from the rules
file in `rules.KIND_SPECS`; its module here (named after the kind) says what it does, and registers itself on import.
Every name of the API a handler reads or writes comes from its rule (match, fix, params, handle) or, as a documented
default, from defaults.py.
"""

from __future__ import annotations

from migrate.rewrite.handlers import (  # noqa: F401 - imported to register their handlers
    append_argument,
    bool_field_to_enum,
    decode_error,
    manual_call,
    memory_call,
    no_successor,
    params_insert,
)
from migrate.rewrite.handlers.base import (
    HANDLERS,
    ORDER,
    Findings,
    Handler,
    HandlerResult,
    UnitFacts,
    handler,
    handlers_for,
    template_call,
)
from migrate.rewrite.rules import KIND_SPECS

__all__ = ["HANDLERS", "Findings", "Handler", "HandlerResult", "UnitFacts", "handler", "handlers_for", "template_call"]

# Every kind a rules file may name has its handler, and runs in ORDER: a kind declared without one would be skipped
# without a word.
if set(HANDLERS) != set(KIND_SPECS) or sorted(ORDER) != sorted(KIND_SPECS):
    raise AssertionError(f"rule kinds without a handler or a place in ORDER: "
                         f"{sorted(set(KIND_SPECS) ^ set(HANDLERS) | set(KIND_SPECS) ^ set(ORDER))}")  # fmt: skip
