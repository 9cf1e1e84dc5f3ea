"""Kind decode_error: checks of the matched call's return code rewritten into a switch (decode.py)."""

from __future__ import annotations

from migrate.rewrite.cursors import enclosing_function
from migrate.rewrite.decode import DecodeRewriter
from migrate.rewrite.edits import Edit
from migrate.rewrite.handlers.base import Findings, Handler, HandlerResult, UnitFacts, handler
from migrate.rewrite.plan import Advisory


@handler("decode_error")
class DecodeError(Handler):
    """Checks of the matched call's return code, rewritten into a switch on the code (decode.py); its calls are
    collected apart (Collected.decodes)."""

    def unit(self, facts: UnitFacts) -> HandlerResult:
        found = Findings(facts)
        introduced: dict[tuple[int, int], set[str]] = {}
        for site in facts.collected.decodes:
            if site.file not in facts.fresh:
                continue
            source = facts.source(site.file)
            function, _ = enclosing_function(site.ancestors)
            key = (function.extent.start.offset, function.extent.end.offset) if function is not None else (0, 0)
            names = introduced.setdefault(key, set())
            rewriter = DecodeRewriter(source, facts.options, facts.language, facts.collected.file_scope, names)
            result = rewriter.rewrite(site, function)
            names |= result.names
            line = source.line_of(site.offset)
            if result.edits:
                found.edit(*(e if not result.note else _with_note(e, result.note) for e in result.edits))
                found.used(site.rule)
            if result.advisory:
                found.advisory(Advisory(facts.relative(site.file), line, site.rule.id, result.advisory))
        return found.result()


def _with_note(edit: Edit, note: str) -> Edit:
    return Edit(edit.file, edit.start, edit.end, edit.replacement, edit.rule, edit.line, edit.before,
                edit.confidence, note, edit.absorbed)  # fmt: skip
