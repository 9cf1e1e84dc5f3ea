"""The markdown migration report (templates/report.md.j2), meant to be pasted into a pull request.

`render_report` takes extra markdown `sections` (e.g. a later verification section) appended after the generic
parts, so other stages extend the report without a template of their own. Without `sections` it appends the plan's
own (`plan_sections`: the API diff and its cross reference with the consumer's code). The report reads the plan and
never changes it: what a stage knows beside the plan (`migrate run`'s own llama.cpp trees) comes as `builds`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2

from migrate.paths import data_dir
from migrate.rewrite.plan import ACTION, Plan

CELL_LIMIT = 90


def _cell_text(text: str, limit: int = 300) -> str:
    """Plain text safe inside a markdown table cell."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat.replace("|", "\\|")


def _cell(text: str) -> str:
    """Code inside a table cell: one line (line breaks shown as ⏎), shortened, pipes escaped."""
    if text == "":
        return "—"
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n")]
    flat = " ⏎ ".join(line for line in lines if line) or "⏎"
    if len(flat) > CELL_LIMIT:
        flat = flat[: CELL_LIMIT - 1] + "…"
    flat = flat.replace("|", "\\|")
    fence = "``" if "`" in flat else "`"
    return f"{fence}{flat}{fence}" if fence == "`" else f"{fence} {flat} {fence}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        autoescape=False,
        trim_blocks=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["cell"] = _cell
    env.filters["cell_text"] = _cell_text
    return env


def _edit_rows(plan: Plan) -> list[dict[str, Any]]:
    return [
        {
            "where": f"`{plan.relative(e.file)}:{e.line}`",
            "rule": e.rule,
            "mined": e.mined,  # a mined rule's edit (migrate/mine/chain.py): the table says so beside the rule
            "confidence": e.confidence,
            "before": e.before,
            "after": e.replacement,
        }
        for e in plan.sorted_edits()
    ]


def plan_sections(plan: Plan) -> list[str]:
    """The sections a plan brings with it: the API diff and cross reference, when the plan has one."""
    return [plan.api_section] if plan.api_section else []


def render_report(plan: Plan, title: str | None = None, sections: list[str] | None = None, mode: str = "",
                  builds: list[dict[str, Any]] | None = None, verdict: str = "") -> str:  # fmt: skip
    """The report as markdown; `sections` are extra markdown blocks appended in order (default: the plan's own);
    `builds` the llama.cpp trees to list (default: those the plan was made with); `verdict` (markdown) opens the
    report, right under its title: a reader meets what needs doing, and why, before the listings."""
    template = _environment().get_template("report.md.j2")
    manual = sorted(plan.manual, key=lambda m: (m.file, m.line))
    text = template.render(
        plan=plan,
        title=title or plan.root.name,
        mode=mode,
        counts=plan.summary_counts(),
        builds=plan.builds if builds is None else builds,
        edits=_edit_rows(plan),
        rules=sorted(plan.rules_used.items()),
        actions=[m for m in manual if m.kind == ACTION],
        reviews=[m for m in manual if m.kind != ACTION],
        advisories=sorted(plan.advisories, key=lambda a: (a.file, a.line)),
        diff=plan.diff(),
        sections=plan_sections(plan) if sections is None else sections,
        verdict=verdict.strip(),
    )
    return re.sub(r"\n{3,}", "\n\n", text)


def default_report_path(plan: Plan, directory: Path = Path("reports")) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", plan.root.name) or "consumer"
    return directory / f"{name}-{plan.from_version}-{plan.to_version}.md"


def write_report(plan: Plan, path: Path, sections: list[str] | None = None, mode: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(plan, sections=sections, mode=mode), encoding="utf-8")
    return path
