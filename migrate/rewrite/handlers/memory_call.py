"""Kind memory_call: a call moved onto a handle taken from its first argument, hoisted per function."""

from __future__ import annotations

import clang.cindex as ci

from migrate.rewrite.calls import CallJob
from migrate.rewrite.collect import CallSite
from migrate.rewrite.cursors import enclosing_function
from migrate.rewrite.edits import SEMANTIC
from migrate.rewrite.handlers.base import Findings, Handler, HandlerResult, UnitFacts, handler
from migrate.rewrite.memory import HoistPlanner, MemorySite
from migrate.rewrite.rules import HandleSpec
from migrate.rewrite.tokens import CallSpan

FunctionKey = tuple[str, int, HandleSpec]  # (file, the enclosing function or minus the site's offset, the handle)


@handler("memory_call")
class MemoryCall(Handler):
    """A call moved onto a handle taken from its first argument: the sites of one function share one hoisted handle
    where that is provably safe (memory.py), else each says the handle's initialiser inline."""

    template_call = True

    def __init__(self) -> None:  # the unit's sites, gathered per function until every call is seen
        self.sites: dict[FunctionKey, list[MemorySite]] = {}
        self.functions: dict[FunctionKey, ci.Cursor | None] = {}

    def call(self, site: CallSite, span: CallSpan, facts: UnitFacts) -> HandlerResult:
        source = facts.source(site.file)
        function, _ = enclosing_function(site.ancestors)
        key = (site.file, function.hash if function is not None else -site.name_offset, site.rule.handle)
        self.functions[key] = function
        ctx_text = source.text(*span.args[0]) if span.args else "ctx"
        self.sites.setdefault(key, []).append(MemorySite(site, span, ctx_text))
        return HandlerResult()

    def calls_done(self, facts: UnitFacts) -> HandlerResult:
        found = Findings(facts)
        collected = facts.collected
        preferred = str(facts.options.get("memory_variable", "mem"))
        hoist = bool(facts.options.get("hoist_memory", True))
        for key, sites in self.sites.items():
            function, handle = self.functions[key], key[2]
            source = facts.source(key[0])
            handles: dict[int, tuple[str, str]] = {}
            if function is not None and hoist:
                planner = HoistPlanner(source, collected.file_scope, preferred, sites[0].site.rule.id, handle,
                                       collected.subtree)  # fmt: skip
                result = planner.plan(function, sites)
                if result.insertion is not None:
                    found.edit(result.insertion)
                handles = {offset: (h.expression, h.note) for offset, h in result.handles.items()}
                found.decision(f"{facts.relative(source.path)}: {function.spelling}(): memory handle "
                               f"{result.reason}")  # fmt: skip
            for item in sites:
                why = "inline: not inside a function" if function is None else "inline: hoisting disabled"
                expression, note = handles.get(item.site.name_offset, (handle.inline(item.ctx_text), why))
                found.call(CallJob(source, item.span, item.site.rule, {"mem": expression, "ctx": item.ctx_text},
                                   SEMANTIC, note))  # fmt: skip
        return found.result()
