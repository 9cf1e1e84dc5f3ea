"""Kind append_argument: a call rebuilt from the rule's fix template over its arguments."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from migrate.rewrite.calls import CallJob
from migrate.rewrite.collect import CallSite, Collected
from migrate.rewrite.edits import SEMANTIC
from migrate.rewrite.handlers.base import Handler, handler
from migrate.rewrite.plan import Plan
from migrate.rewrite.tokens import CallSpan

if TYPE_CHECKING:
    from migrate.rewrite.engine import Engine


@handler("append_argument")
class AppendArgument(Handler):
    """A call rebuilt from the rule's fix template over its arguments."""

    template_call = True

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.jobs: list[CallJob] = []

    def call(self, site: CallSite, span: CallSpan, plan: Plan) -> None:
        self.jobs.append(CallJob(self.engine.sources[Path(site.file)], span, site.rule, {}, SEMANTIC, ""))

    def calls_done(self, collected: Collected, plan: Plan) -> list[CallJob]:
        return self.jobs
