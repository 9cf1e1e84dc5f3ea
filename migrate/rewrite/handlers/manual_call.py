"""Kind manual_call: a call (or a field) only a person can migrate, listed at each use."""

from __future__ import annotations

import clang.cindex as ci

from migrate.rewrite.collect import CallSite, FieldSite
from migrate.rewrite.cursors import unwrap
from migrate.rewrite.handlers.base import Findings, Handler, HandlerResult, UnitFacts, handler
from migrate.rewrite.tokens import CallSpan


@handler("manual_call")
class ManualCall(Handler):
    """A call (or a field) only a person can migrate: listed at each use, never rewritten."""

    def call(self, site: CallSite, span: CallSpan, facts: UnitFacts) -> HandlerResult:
        if site.rule.match.when == "const_argument":
            const_args = [a for a in site.call.get_arguments() if _is_const_object(unwrap(a).type)]
            if not const_args:
                return HandlerResult()
        return _listed(site.file, site.name_offset, site, facts)

    def field(self, site: FieldSite, facts: UnitFacts) -> HandlerResult:
        return _listed(site.file, site.name_offset, site, facts)


def _listed(file: str, offset: int, site: CallSite | FieldSite, facts: UnitFacts) -> HandlerResult:
    found = Findings(facts)
    found.listed(file, offset, site.rule, site.rule.guidance or "")
    return found.result()


def _is_const_object(type_: ci.Type) -> bool:
    if type_.kind == ci.TypeKind.LVALUEREFERENCE:
        type_ = type_.get_pointee()
    return type_.is_const_qualified() and type_.kind not in (ci.TypeKind.POINTER,)
