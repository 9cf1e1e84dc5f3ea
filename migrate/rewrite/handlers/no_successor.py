"""Kind no_successor: removed with nothing to call instead; the statement removed, or listed."""

from __future__ import annotations

from migrate.rewrite.collect import CallSite
from migrate.rewrite.cursors import K, meaningful_parent
from migrate.rewrite.edits import SEMANTIC, SourceFile
from migrate.rewrite.handlers.base import Findings, Handler, HandlerResult, UnitFacts, handler
from migrate.rewrite.plan import REVIEW
from migrate.rewrite.tokens import CallSpan, tokenize


@handler("no_successor")
class NoSuccessor(Handler):
    """Removed with nothing to call instead: the statement removed (action remove_statement) and listed, or listed."""

    def call(self, site: CallSite, span: CallSpan, facts: UnitFacts) -> HandlerResult:
        found = Findings(facts)
        source = facts.source(site.file)
        parent, _ = meaningful_parent(site.ancestors)
        is_statement = parent is not None and parent.kind == K.COMPOUND_STMT
        if site.rule.action == "remove_statement" and is_statement:
            start, end = _statement_bounds(source, span.name_start, span.end)
            found.edit(source.make_edit(start, end, "", site.rule.id, SEMANTIC, "statement removed"))
            found.listed(site.file, site.name_offset, site.rule, f"removed: {site.rule.guidance}", REVIEW)
        else:
            found.listed(site.file, site.name_offset, site.rule, site.rule.guidance or "")
        return found.result()


def _statement_bounds(source: SourceFile, start: int, end: int) -> tuple[int, int]:
    """The statement `call;` to remove: with its whole line when nothing else is on it."""
    data = source.data
    tokens = tokenize(data, end, min(len(data), end + 32))
    if tokens and tokens[0].text == b";":
        end = tokens[0].end
    return source.removal_span(start, end)
