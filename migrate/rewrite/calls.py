"""Call composition: one edit per rewritten call, a call nested in another's arguments part of the outer edit.

Shared by the engine's handlers and the syntactic fallback (which used to import it from the engine, a cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migrate.rewrite.edits import Edit, SourceFile, render_range
from migrate.rewrite.rules import Rule
from migrate.rewrite.tokens import CallSpan


@dataclass
class CallJob:
    source: SourceFile
    span: CallSpan
    rule: Rule
    values: dict[str, str]
    confidence: str
    note: str
    undeclared: bool = False  # a name the --from tree does not declare (Edit.undeclared)


def compose_calls(jobs: list[CallJob], option_values: Callable[[Rule], dict[str, str]]) -> list[Edit]:
    """One edit per call, innermost first, so a call nested in another's arguments is part of the outer edit."""
    produced: list[Edit] = []
    for job in sorted(jobs, key=lambda j: j.span.end - j.span.name_start):
        data = job.source.data
        same_file = [e for e in produced if e.file == job.source.path]
        args = [render_range(data, start, end, same_file) for start, end in job.span.args]
        rest = render_range(data, job.span.args[1][0], job.span.args[-1][1], same_file) if len(args) > 1 else ""
        values = {"name": job.rule.match.name, "args": args, "rest": rest, **option_values(job.rule), **job.values}
        replacement = str(job.rule.fix).format_map(values)
        if len(args) > 1:
            replacement = replacement.replace(", )", ")")
        else:
            replacement = replacement.replace(", )", ")").replace("(, ", "(")
        start, end = job.span.name_start, job.span.end
        inner = [e for e in same_file if start <= e.start and e.end <= end]
        absorbed = tuple(rule for e in inner for rule in e.rules)
        produced = [e for e in produced if e not in inner]
        produced.append(job.source.make_edit(start, end, replacement, job.rule.id, job.confidence, job.note, absorbed,
                                             job.undeclared))  # fmt: skip
    return produced


def option_values(rule: Rule, options: dict[str, Any]) -> dict[str, str]:
    """The rule's options as C/C++ source text for its fix template (booleans as true/false)."""
    values = {}
    for name in rule.options:
        value = options[name]
        values[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return values


def inline_values(rule: Rule, ctx_text: str) -> dict[str, str]:
    """A template call's values where no handle can be hoisted (a macro body, a name matched by name only): the
    rule's handle written inline on the first argument."""
    return {"mem": rule.handle.inline(ctx_text), "ctx": ctx_text}
