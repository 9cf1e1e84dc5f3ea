"""What a verification run says: console summary (rich), JSON, JUnit XML, and a markdown section for the report.

JUnit holds one testsuite per build and one testcase per check, named after the check, so CI shows a regression
as the same test passing in one suite and failing in the other. A skipped check is a JUnit skip, never a pass.
"""

from __future__ import annotations

import json
import platform
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from verify.baseline import KnownFailure, KnownState, Triage, triage
from verify.binding import Binding
from verify.checks import ERROR, FAILED, PASSED, REGISTRY, SKIPPED, CheckResult
from verify.devices import SKIPPED_COMPARISON, DeviceComparison
from verify.differential import BOTH_FAIL, BOTH_PASS, FIXED, REGRESSION, DifferentialReport, GreedyComparison
from verify.outcomes import CheckStatus, Classification
from verify.session import Options, Target
from verify.throughput import console_line as throughput_line
from verify.throughput import markdown_lines as throughput_markdown

STATUS_STYLE = {PASSED: "green", FAILED: "bold red", ERROR: "magenta", SKIPPED: "yellow"}
CLASS_STYLE = {REGRESSION: "bold red", BOTH_FAIL: "red", FIXED: "cyan", BOTH_PASS: "green"}
MESSAGE_WIDTH = 160


@dataclass
class RunReport:
    targets: list[Target]
    results: dict[str, list[CheckResult]]  # by build label, in check order
    options: Options
    seconds: float
    differential: DifferentialReport | None = None
    devices: list[DeviceComparison] = field(default_factory=list)  # CPU vs GPU per build, when layers are offloaded
    machine: dict[str, Any] = field(default_factory=lambda: {"platform": platform.platform(),
                                                              "python": platform.python_version()})  # fmt: skip
    bindings: dict[str, Binding] = field(default_factory=dict)  # by build label: how the C API was driven
    prediction: Any = None  # verify.contract.Prediction: a traced build's calls against a release's contract
    triage: Triage | None = None  # the build under test's failures by cause, and the known failures against them

    @property
    def under_test(self) -> Target:
        return self.targets[-1]

    def failed(self, label: str | None = None) -> list[CheckResult]:
        label = label or self.under_test.label
        return [r for r in self.results.get(label, []) if r.status == FAILED]

    def errors(self, label: str | None = None) -> list[CheckResult]:
        """Checks the harness could not drive: nothing was verified there (never the consumer's failure)."""
        label = label or self.under_test.label
        return [r for r in self.results.get(label, []) if r.status == ERROR]

    def counts(self, label: str) -> dict[CheckStatus, int]:
        counts = {PASSED: 0, FAILED: 0, ERROR: 0, SKIPPED: 0}
        for r in self.results.get(label, []):
            counts[r.status] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "targets": [t.to_json() for t in self.targets],
            "options": asdict(self.options),
            "seconds": round(self.seconds, 2),
            "machine": self.machine,
            "counts": {label: self.counts(label) for label in self.results},
            "results": {label: [r.to_json() for r in rs] for label, rs in self.results.items()},
            "differential": self.differential.to_json() if self.differential else None,
            "devices": [d.to_json() for d in self.devices],
            "bindings": {label: b.to_json() for label, b in self.bindings.items()},
            "prediction": self.prediction.to_json() if self.prediction is not None else None,
            "triage": self.triage.to_json() if self.triage is not None else None,
        }

    def classifications(self) -> dict[str, Classification] | None:
        """check -> old/new classification (differential runs), else None."""
        return {c.name: c.classification for c in self.differential.comparisons} if self.differential else None


def attach_triage(report: RunReport, known: list[KnownFailure]) -> Triage:
    """Group the build under test's failures by cause and judge the known failures against them (kept on the
    report: summary, JSON and markdown carry it). Call it after the last change to the results (the traced re-run
    of failed checks adds the contract break a cause is keyed on)."""
    report.triage = triage(report.results.get(report.under_test.label, []), known, report.classifications())
    return report.triage


def short(text: str, width: int = MESSAGE_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- console -------------------------------------------------------------------------------------------------


def print_summary(report: RunReport, console: Console | None = None) -> None:
    console = console or Console(stderr=True)
    if report.differential:
        _print_differential(report.differential, console)
    else:
        _print_single(report, console)
    for comparison in report.devices:
        _print_devices(comparison, console)
    if report.prediction is not None:
        _print_prediction(report.prediction, console)
    if report.triage is not None:
        _print_triage(report.triage, console)
    for label in report.results:
        c = report.counts(label)
        console.print(f"[bold]{label}[/]: {c[PASSED]} passed, {c[FAILED]} failed, {c[ERROR]} error, "
                      f"{c[SKIPPED]} skipped")  # fmt: skip
    console.print(f"checklist time: {report.seconds:.1f} s (threads {report.options.n_threads}, "
                  f"n_gpu_layers {report.options.n_gpu_layers})")  # fmt: skip


def _print_triage(result: Triage, console: Console) -> None:
    """The failures by cause: one line per cause with its checks, then the known failures that need a word."""
    if not result.causes and not result.verdicts:
        return
    console.print(f"[bold]{result.headline()}[/]")
    known = result.known_checks()
    for cause in result.causes:
        tag = "[cyan]known[/] " if all(n in known for n in cause.checks) else ""
        console.print(f"  {tag}{cause.id}: {len(cause.checks)} check(s): {', '.join(cause.checks)}", highlight=False)
    for verdict in result.verdicts:
        if verdict.state == KnownState.FIXED:
            console.print(f"  [bold yellow]fixed[/]: {verdict.entry.label()}: remove it from the baseline "
                          f"({verdict.entry.source})")  # fmt: skip
        elif verdict.state in (KnownState.CHANGED, KnownState.REGRESSION):
            console.print(f"  [bold red]{verdict.state.value}[/]: {verdict.entry.label()}: {verdict.now}")


def _print_single(report: RunReport, console: Console) -> None:
    label = report.under_test.label
    table = Table(title=f"verify {report.under_test.library}", show_lines=False)
    for col in ("check", "status", "s", "message"):
        table.add_column(col)
    for r in report.results[label]:
        status = f"[{STATUS_STYLE[r.status]}]{r.status}[/]"
        table.add_row(r.name, status, f"{r.seconds:.1f}", short(r.message or r.summary))
    console.print(table)


def _print_differential(diff: DifferentialReport, console: Console) -> None:
    table = Table(title=f"old {diff.old.label} vs new {diff.new.label}")
    for col in ("check", "old", "new", "classification", "message"):
        table.add_column(col)
    for c in diff.comparisons:
        old, new = c.old.status if c.old else "-", c.new.status if c.new else "-"
        message = (c.new.message if c.new and c.new.status != PASSED else c.old.message if c.old else "") or ""
        style = CLASS_STYLE.get(c.classification, "yellow")
        table.add_row(c.name, f"[{STATUS_STYLE.get(old, 'white')}]{old}[/]", f"[{STATUS_STYLE.get(new, 'white')}]"
                      f"{new}[/]", f"[{style}]{c.classification}[/]", short(message, 100))  # fmt: skip
    console.print(table)
    console.print(_greedy_table("greedy decode, token by token", diff.greedy, ("old", "new")))
    for key, row in diff.throughput.items():
        console.print(throughput_line(key, row))


def _print_prediction(prediction: Any, console: Console) -> None:
    breaks = prediction.breaks()
    style = "bold red" if breaks else "green"
    console.print(f"[{style}]predicted at {prediction.contract}[/] ({prediction.build} build, {prediction.calls} "
                  f"llama.cpp calls traced in {len(prediction.checks)} checks): {len(breaks)} run-time break(s), "
                  f"{len(prediction.notes())} note(s), {len(prediction.remedied)} remedied by assumption")  # fmt: skip
    for g in breaks:
        console.print(f"  [red]{g.consequence}[/] {short(g.line(), 150)}", markup=True, highlight=False)


def _print_devices(comparison: DeviceComparison, console: Console) -> None:
    style = "bold red" if comparison.failed else "yellow" if comparison.status == SKIPPED_COMPARISON else "green"
    console.print(f"CPU vs GPU ({comparison.build}): [{style}]{comparison.status}[/] — {comparison.message}")
    if not comparison.greedy:
        return
    title = f"greedy decode, CPU vs GPU ({comparison.build} build)"
    console.print(_greedy_table(title, comparison.greedy, ("CPU", "GPU")))


def _greedy_table(title: str, rows: list[GreedyComparison], sides: tuple[str, str]) -> Table:
    """Token-by-token comparison rows; `sides` names what GreedyComparison's old/new fields hold."""
    table = Table(title=title)
    for col in ("prompt", "verdict", "steps", "first diff", f"{sides[0]} token/margin", f"{sides[1]} token/margin"):
        table.add_column(col)
    for g in rows:
        table.add_row(short(g.prompt, 30), g.verdict, str(g.steps_compared), str(g.first_difference or "-"),
                      _token_cell(g.old), _token_cell(g.new))  # fmt: skip
    return table


def _token_cell(step: dict[str, Any]) -> str:
    if not step:
        return "-"
    if step.get("token") is None:
        return step.get("note", "-")
    return f"{step['token']} {step.get('piece', '')!r} / {step.get('margin', 0):.4g}"


# --- JSON and JUnit ---------------------------------------------------------------------------------------------


def write_json(report: RunReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False, default=str) + "\n")


def junit_xml(report: RunReport) -> str:
    suites = ET.Element("testsuites", name="llama-migrate verify", time=f"{report.seconds:.3f}")
    for target in report.targets:
        results = report.results.get(target.label, [])
        counts = report.counts(target.label)
        suite = ET.SubElement(suites, "testsuite", name=f"verify.{target.label}", tests=str(len(results)),
                              failures=str(counts[FAILED]), skipped=str(counts[SKIPPED]),
                              errors=str(counts[ERROR]), time=f"{sum(r.seconds for r in results):.3f}")  # fmt: skip
        props = ET.SubElement(suite, "properties")
        for key, value in (("library", target.library), ("header", target.header), ("model", target.model)):
            ET.SubElement(props, "property", name=key, value=str(value))
        for r in results:
            case = ET.SubElement(suite, "testcase", classname=f"verify.{target.label}", name=r.name,
                                 time=f"{r.seconds:.3f}")  # fmt: skip
            if r.status == FAILED:
                failure = ET.SubElement(case, "failure", message=short(r.message, 500))
                failure.text = json.dumps(r.evidence, indent=1, ensure_ascii=False, default=str)
            elif r.status == ERROR:
                error = ET.SubElement(case, "error", message=short(r.message, 500))
                error.text = json.dumps(r.evidence, indent=1, ensure_ascii=False, default=str)
            elif r.status == SKIPPED:
                ET.SubElement(case, "skipped", message=short(r.message, 500))
            else:
                out = ET.SubElement(case, "system-out")
                out.text = json.dumps(r.evidence, ensure_ascii=False, default=str)[:4000]
    if report.devices:
        _junit_devices(suites, report.devices)
    if report.prediction is not None:
        _junit_prediction(suites, report.prediction)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _junit_devices(suites: ET.Element, comparisons: list[DeviceComparison]) -> None:
    """One testcase per build: its greedy prompts on CPU and GPU agree (identical or near-tie)."""
    failed = sum(1 for c in comparisons if c.failed)
    skipped = sum(1 for c in comparisons if c.status == SKIPPED_COMPARISON)
    suite = ET.SubElement(suites, "testsuite", name="verify.cpu_vs_gpu", tests=str(len(comparisons)),
                          failures=str(failed), skipped=str(skipped), errors="0", time="0")  # fmt: skip
    for c in comparisons:
        case = ET.SubElement(suite, "testcase", classname="verify.cpu_vs_gpu", name=f"greedy_{c.build}", time="0")
        evidence = json.dumps(c.to_json()["greedy"], ensure_ascii=False, default=str)
        if c.failed:
            ET.SubElement(case, "failure", message=short(c.message, 500)).text = evidence
        elif c.status == SKIPPED_COMPARISON:
            ET.SubElement(case, "skipped", message=short(c.message, 500))
        else:
            ET.SubElement(case, "system-out").text = evidence[:4000]


def _junit_prediction(suites: ET.Element, prediction: Any) -> None:
    """One testcase per place a clause is broken (failure) — or one passing case when nothing is predicted."""
    breaks = prediction.breaks()
    suite = ET.SubElement(suites, "testsuite", name=f"verify.predict.{prediction.contract}", tests=str(max(1,
                          len(breaks))), failures=str(len(breaks)), skipped="0", errors="0", time="0")  # fmt: skip
    for g in breaks:
        case = ET.SubElement(suite, "testcase", classname=f"verify.predict.{prediction.contract}",
                             name=f"{g.clause} at {g.where}", time="0")  # fmt: skip
        failure = ET.SubElement(case, "failure", message=short(f"{g.line()}: {g.consequence}", 500))
        failure.text = json.dumps(g.to_json(), indent=1, ensure_ascii=False, default=str)
    if not breaks:
        case = ET.SubElement(suite, "testcase", classname=f"verify.predict.{prediction.contract}",
                             name="no run-time break predicted", time="0")  # fmt: skip
        ET.SubElement(case, "system-out").text = f"{prediction.calls} calls in {len(prediction.checks)} checks"


def write_junit(report: RunReport, path: Path) -> None:
    path.write_text(junit_xml(report), encoding="utf-8")


# --- markdown ---------------------------------------------------------------------------------------------------


def _md_cell(text: str, width: int = 140) -> str:
    return short(text, width).replace("|", "\\|")


def markdown_section(report: RunReport, level: int = 2) -> str:
    """A self-contained markdown section (heading at `level`) for the migration report to embed."""
    h = "#" * level
    lines = [f"{h} Verification", ""]
    for target in report.targets:
        c = report.counts(target.label)
        lines.append(f"- **{target.label}**: `{target.library}` — {c[PASSED]} passed, {c[FAILED]} failed, "
                     f"{c[ERROR]} error (harness could not drive), {c[SKIPPED]} skipped")  # fmt: skip
    lines += [f"- model `{report.under_test.model}`; checklist time {report.seconds:.1f} s; "
              f"threads {report.options.n_threads}, n_gpu_layers {report.options.n_gpu_layers}", ""]  # fmt: skip
    if report.triage is not None:
        lines += triage_lines(report.triage, h + "#") + [""]
    if report.differential:
        lines += _md_differential(report.differential, h)
    else:
        lines += ["| check | status | what was seen |", "| --- | --- | --- |"]
        for r in report.results[report.under_test.label]:
            seen = r.message or r.summary or _md_evidence(r)
            lines.append(f"| `{r.name}` | {r.status} | {_md_cell(seen)} |")
    if report.devices:
        lines += _md_devices(report.devices, h)
    lines += contract_section(report, h)
    lines += _md_binding(report, h)
    errors = report.errors()
    if errors:
        lines += ["", f"{h}# Not verified (harness errors)", ""]
        lines += [f"- `{r.name}`: {_md_cell(r.message, 600)}" for r in errors]
    failed = report.failed()
    if failed:
        lines += ["", f"{h}# Failures", ""]
        for r in failed:
            lines += [f"- `{r.name}` ({REGISTRY[r.name].title if r.name in REGISTRY else r.name}): "
                      f"{_md_cell(r.message, 600)}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def triage_lines(result: Triage, h: str = "###") -> list[str]:
    """"N failing checks, K causes": each cause with its checks, evidence and consumer line; then the known
    failures (known, fixed, failing differently, not excusable)."""
    if not result.causes and not result.verdicts:
        return []
    lines = [f"{h} Failures by cause: {result.headline()}", ""]
    known = result.known_checks()
    if result.causes:
        lines += ["| cause | checks | where | evidence |", "| --- | --- | --- | --- |"]
    for cause in result.causes:
        tag = " (known)" if all(n in known for n in cause.checks) else ""
        checks = ", ".join(f"`{n}`" + (f" ({cause.classifications[n]})" if n in cause.classifications else "")
                           for n in cause.checks)  # fmt: skip
        evidence = cause.signature.evidence or cause.messages.get(cause.checks[0], "")
        where = f"`{cause.signature.where}`" if cause.signature.where else "-"
        lines.append(f"| `{cause.id}`{tag} | {len(cause.checks)}: {checks} | {where} | {_md_cell(evidence, 300)} |")
    if result.verdicts:
        lines += ["", "Known failures (the baseline):", ""]
        for verdict in result.verdicts:
            lines.append(f"- {verdict.entry.label()}: **{_known_text(verdict.state)}** — {_md_cell(verdict.now, 200)}"
                         f" (reason: {_md_cell(verdict.entry.reason, 200)}; from {verdict.entry.source})")  # fmt: skip
    return lines


KNOWN_TEXT = {KnownState.KNOWN: "known, still fails the same way", KnownState.FIXED: "fixed — remove it from the "
              "baseline", KnownState.CHANGED: "fails differently (a finding)", KnownState.REGRESSION: "regression: "
              "passed on the old build, never baselined", KnownState.NOT_RUN: "not run on the new build"}  # fmt: skip


def _known_text(state: KnownState) -> str:
    return KNOWN_TEXT[state]


def contract_section(report: RunReport, h: str = "##") -> list[str]:
    """ "Run-time contract": the prediction (violations with file:line and values), and the first contract break
    before each failed check of a traced build."""
    firsts = [(label, r) for label, rs in report.results.items() for r in rs
              if r.status == FAILED and (r.evidence.get("contract") or {}).get("first_break")]  # fmt: skip
    if report.prediction is None and not firsts:
        return []
    lines = ["", f"{h}# Run-time contract", ""]
    if report.prediction is not None:
        lines += prediction_lines(report.prediction)
    if firsts:
        lines += ["", "Failed checks of traced builds, with the first contract break their calls made before the "
                  "failure:", "", "| build | check | where | clause | call | values |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for label, r in firsts:
            v = r.evidence["contract"]["first_break"]
            lines.append(f"| {label} | `{r.name}` | `{v['where']}` | {v['clause']} | `{_md_cell(v['call'], 80)}` | "
                         f"{_md_cell(_values(v['values']), 160)} |")  # fmt: skip
    return lines


def _values(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


def prediction_lines(prediction: Any) -> list[str]:
    """The prediction as markdown: breaks, then what an assumption remedied, then notes."""
    from verify.contract import ASSUMPTIONS, CONSEQUENCES, require_contract

    contract = require_contract(prediction.contract)
    assumed = "; assumed: " + "; ".join(ASSUMPTIONS[k] for k, v in prediction.assume.items() if v) \
        if any(prediction.assume.values()) else ""  # fmt: skip
    lines = [f"The llama.cpp calls of build `{prediction.build}` ({prediction.calls} traced in "
             f"{len(prediction.checks)} checks) replayed against the run-time contract of {contract.version} "
             f"(`contracts/{contract.version}.yaml`){assumed}. Each row is a place where a check's run first breaks "
             "the contract; `calls` counts every call there.", ""]  # fmt: skip
    breaks = prediction.breaks()
    if not breaks:
        lines.append(f"No call breaks a clause that aborts or is rejected at {contract.version}.")
    else:
        lines += [f"**{len(breaks)} predicted run-time break(s)** at {contract.version}:", "",
                  "| where | clause | at the target | call | values | calls | checks |",
                  "| --- | --- | --- | --- | --- | ---: | --- |"]  # fmt: skip
        lines += [_md_group(g, CONSEQUENCES) for g in breaks]
        lines += ["", "Remedies:", ""]
        for clause_id in dict.fromkeys(g.clause for g in breaks):
            clause = contract.clause(clause_id)
            rule = f" (rule `{clause.remedy_rule}`)" if clause.remedy_rule else ""
            lines.append(f"- **{clause.id}**{rule}: {clause.remedy} — why: {clause.why}")
    after = prediction.consequential()
    if after:
        lines += ["", f"Also reached only after an earlier break in the same check (at {contract.version} the run "
                  "would have stopped or gone another way first): " + "; ".join(
                      f"`{g.where}` {g.clause} ({g.count})" for g in after)]  # fmt: skip
    if prediction.remedied:
        lines += ["", "Remedied by the assumption (these calls break the contract as the code stands, not once the "
                  "assumed rule is applied):", "",
                  "| where | clause | at the target | call | values | calls | checks |",
                  "| --- | --- | --- | --- | --- | ---: | --- |"]  # fmt: skip
        lines += [_md_group(g, CONSEQUENCES) for g in prediction.remedied]
    notes = prediction.notes()
    if notes:
        lines += ["", "Behaves differently, does not break:", ""]
        for clause_id in dict.fromkeys(g.clause for g in notes):
            clause = contract.clause(clause_id)
            places = ", ".join(f"`{g.where}` `{_md_cell(g.first.call, 60)}` ({g.count})" for g in notes
                               if g.clause == clause_id)  # fmt: skip
            lines.append(f"- **{clause_id}** at {places}: {clause.why} Remedy: {clause.remedy}")
    if prediction.errors:
        lines += ["", "Traces not read: " + "; ".join(prediction.errors)]
    return lines


def _md_group(g: Any, consequences: dict[str, str]) -> str:
    return (f"| `{g.where}` | {g.clause} | {consequences[g.consequence]} | `{_md_cell(g.first.call, 80)}` | "
            f"{_md_cell(_values(g.first.values), 160)} | {g.count} | {', '.join(g.checks[:4])}"
            f"{' …' if len(g.checks) > 4 else ''} |")


def _md_binding(report: RunReport, h: str) -> list[str]:
    """How the consumer's C API was driven: operation -> function, parameter -> role or value."""
    binding = report.bindings.get(report.under_test.label)
    if binding is None:
        return []
    lines = ["", f"{h}# C API binding ({report.under_test.label} build)", "",
             f"Prefix `{binding.prefix or '(none)'}`" + (f"; adapter `{binding.adapter}`" if binding.adapter else "")
             + ".", "", "| operation | function | parameters | decided |", "| --- | --- | --- | --- |"]  # fmt: skip
    for op, fn, params, how in binding.table():
        lines.append(f"| {op} | `{fn}` | {_md_cell(params, 400)} | {how} |")
    if binding.notes:
        lines += ["", "Notes: " + "; ".join(binding.notes)]
    return lines


def _md_evidence(r: CheckResult) -> str:
    keys = list(r.evidence)[:4]
    return ", ".join(f"{k}={json.dumps(r.evidence[k], ensure_ascii=False, default=str)}" for k in keys)


def _md_differential(diff: DifferentialReport, h: str) -> list[str]:
    lines = ["| check | old | new | classification | message |", "| --- | --- | --- | --- | --- |"]
    for c in diff.comparisons:
        message = (c.new.message if c.new and c.new.status != PASSED else c.old.message if c.old else "") or ""
        lines.append(f"| `{c.name}` | {c.old.status if c.old else '-'} | {c.new.status if c.new else '-'} | "
                     f"{c.classification} | {_md_cell(message)} |")  # fmt: skip
    both = [c.name for c in diff.comparisons if c.classification == BOTH_FAIL]
    if both:
        lines += ["", f"Failing on both builds (a defect the upgrade did not cause, still a finding): "
                      f"{', '.join(f'`{n}`' for n in both)}."]  # fmt: skip
    lines += ["", f"{h}# Greedy decode, old vs new", ""]
    lines += _md_greedy([("", g) for g in diff.greedy], ("old", "new"))
    lines += throughput_markdown(diff.throughput, h)
    return lines


def _md_devices(comparisons: list[DeviceComparison], h: str) -> list[str]:
    lines = ["", f"{h}# Greedy decode, CPU vs GPU (same build, same prompts)", ""]
    for c in comparisons:
        lines.append(f"- **{c.build}**: {c.status} — {_md_cell(c.message, 300)}")
    rows = [(c.build, g) for c in comparisons for g in c.greedy]
    return lines + ([""] + _md_greedy(rows, ("CPU", "GPU")) if rows else [])


def _md_greedy(rows: list[tuple[str, GreedyComparison]], sides: tuple[str, str]) -> list[str]:
    """Rows of (build, comparison); the build column only when some row names one."""
    build = any(b for b, _ in rows)
    head = ["build"] * build + ["prompt", "verdict", "steps", "first difference", f"{sides[0]} token / margin",
                                f"{sides[1]} token / margin"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for b, g in rows:
        cells = [b] * build + [_md_cell(g.prompt, 40), g.verdict, str(g.steps_compared),
                               "-" if g.first_difference is None else str(g.first_difference),
                               _md_cell(_token_cell(g.old)), _md_cell(_token_cell(g.new))]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines
