"""Kind memory_call: a call moved onto a handle taken from its first argument, hoisted per function."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import clang.cindex as ci

from migrate.rewrite.calls import CallJob
from migrate.rewrite.collect import CallSite, Collected
from migrate.rewrite.cursors import enclosing_function
from migrate.rewrite.edits import SEMANTIC
from migrate.rewrite.handlers.base import Handler, handler
from migrate.rewrite.memory import HoistPlanner, MemorySite
from migrate.rewrite.plan import Plan
from migrate.rewrite.rules import HandleSpec
from migrate.rewrite.tokens import CallSpan

if TYPE_CHECKING:
    from migrate.rewrite.engine import Engine


FunctionKey = tuple[str, int, HandleSpec]  # (file, the enclosing function or minus the site's offset, the handle)


@handler("memory_call")
class MemoryCall(Handler):
    """A call moved onto a handle taken from its first argument: the sites of one function share one hoisted handle
    where that is provably safe (memory.py), else each says the handle's initialiser inline."""

    template_call = True

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.sites: dict[FunctionKey, list[MemorySite]] = {}
        self.functions: dict[FunctionKey, ci.Cursor | None] = {}

    def call(self, site: CallSite, span: CallSpan, plan: Plan) -> None:
        source = self.engine.sources[Path(site.file)]
        function, _ = enclosing_function(site.ancestors)
        key = (site.file, function.hash if function is not None else -site.name_offset, site.rule.handle)
        self.functions[key] = function
        ctx_text = source.text(*span.args[0]) if span.args else "ctx"
        self.sites.setdefault(key, []).append(MemorySite(site, span, ctx_text))

    def calls_done(self, collected: Collected, plan: Plan) -> list[CallJob]:
        engine = self.engine
        jobs = []
        preferred = str(engine.options.get("memory_variable", "mem"))
        hoist = bool(engine.options.get("hoist_memory", True))
        for key, sites in self.sites.items():
            function, handle = self.functions[key], key[2]
            source = engine.sources[Path(key[0])]
            handles: dict[int, tuple[str, str]] = {}
            if function is not None and hoist:
                planner = HoistPlanner(source, collected.file_scope, preferred, sites[0].site.rule.id, handle,
                                       collected.subtree)  # fmt: skip
                result = planner.plan(function, sites)
                if result.insertion is not None:
                    engine.edits.append(result.insertion)
                handles = {offset: (h.expression, h.note) for offset, h in result.handles.items()}
                plan.decisions.append(f"{plan.relative(source.path)}: {function.spelling}(): memory handle "
                                      f"{result.reason}")  # fmt: skip
            for item in sites:
                why = "inline: not inside a function" if function is None else "inline: hoisting disabled"
                expression, note = handles.get(item.site.name_offset, (handle.inline(item.ctx_text), why))
                jobs.append(CallJob(source, item.span, item.site.rule, {"mem": expression, "ctx": item.ctx_text},
                                    SEMANTIC, note))  # fmt: skip
        return jobs
