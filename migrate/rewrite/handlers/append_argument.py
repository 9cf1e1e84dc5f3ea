"""Kind append_argument: a call rebuilt from the rule's fix template over its arguments."""

from __future__ import annotations

from migrate.rewrite.calls import CallJob
from migrate.rewrite.collect import CallSite
from migrate.rewrite.edits import SEMANTIC
from migrate.rewrite.handlers.base import Handler, HandlerResult, UnitFacts, handler
from migrate.rewrite.tokens import CallSpan


@handler("append_argument")
class AppendArgument(Handler):
    """A call rebuilt from the rule's fix template over its arguments."""

    template_call = True

    def __init__(self) -> None:
        self.jobs: list[CallJob] = []  # composed with the unit's other template calls once all are seen

    def call(self, site: CallSite, span: CallSpan, facts: UnitFacts) -> HandlerResult:
        self.jobs.append(CallJob(facts.source(site.file), span, site.rule, {}, SEMANTIC, ""))
        return HandlerResult()

    def calls_done(self, facts: UnitFacts) -> HandlerResult:
        return HandlerResult(calls=tuple(self.jobs))
