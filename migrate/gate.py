"""`migrate gate`: `migrate run` for CI. Same arguments and report; the exit code says whether a human is needed
and which kind of problem it is, and a one-screen summary says why.

Exit codes (when several classes apply, the lowest number wins; the summary lists every class found):

   0  nothing needs a human: migrated, built at both versions, no check fails on the new build, greedy output
      identical or a near-tie, tokens/s within the threshold
   2  usage error: bad arguments or consumer config, unknown llama.cpp version, no toolchain (no report written)
  10  manual action required: a manual action in the plan, or a use of API that changed with no rule for it
  11  compile error: the migrated code does not build at the target (or the original at the source version)
  12  a check fails or crashes on the new build
  13  output difference that is not a near-tie: greedy decoding parts where a build's top-2 logit margin is at
      least the tie margin (or the two builds tokenize a prompt differently); with --n-gpu-layers, also the new
      build's CPU and GPU runs parting that way
  14  tokens/s regression: generate or generate_parallel on the new build slower than on the old one by more
      than the threshold, with 95 % confidence (the whole confidence interval of the median paired new/old ratio
      lies below 1 - threshold)
  15  not verified: no check really ran on the new build (every one skipped or not driven by the harness, say
      --n-gpu-layers on a machine without a GPU), or a check that passed on the old build was skipped or a
      harness error on the new one, or a greedy comparison could not be made: the gate does not pass what it
      did not check
  16  predicted run-time break at the target: the original, built traced at the old version, makes llama.cpp
      calls that abort or are rejected under the target's run-time contract (contracts/<version>.yaml), and no
      rule the plan applied removes the cause (`--no-predict` skips the step)
  17  tokens/s inconclusive: the run was too noisy to decide whether the new build is within the threshold (the
      confidence interval still straddles 1 - threshold after pairs were added while it did, up to 240 pairs or
      180 s; each look at a Bonferroni-adjusted level, 5 % error overall: verify/throughput.py Settings): not a
      pass, not a regression; rerun on a quieter runner. With the bundled default model the comparison runs on
      the small generated model, whose per-token cost dominates
  18  a known failure is fixed: a check the baseline (`[verify] known_failures`, `[verify] baseline`,
      `--known-failures FILE`) lists as failing passes on the new build: remove it from the baseline (strict, like
      pytest's xfail(strict=True))

Failing checks are reported by cause (verify/causes.py): one class-12 finding per cause, with its checks. A known
failure still failing the same way is reported as known and is no finding; one failing differently is; a check
that passed on the old build is a regression whatever the baseline says.

1 is never a verdict: it means the tool itself failed (a Python traceback). Thresholds: `--tie-margin` (default
0.05) and `--max-tps-regression` percent (default 25), or `tie_margin` / `max_tps_regression` in the consumer config;
flags win.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from migrate import pipeline
from migrate.exit_codes import ExitCode, GateExit
from migrate.pipeline import RunOutcome, RunRequest, Stages, UsageError
from verify.differential import not_verified_on_new, nothing_verified
from verify.outcomes import CheckStatus, GreedyVerdict
from verify.session import Options

if TYPE_CHECKING:
    from verify.baseline import Triage
    from verify.causes import Cause
    from verify.devices import DeviceComparison
    from verify.differential import DifferentialReport

DEFAULT_TIE_MARGIN = Options().tie_margin  # the harness's own default, so `run` and `gate` agree on near-ties
DEFAULT_MAX_TPS_REGRESSION = 25.0  # percent
SUMMARY_WIDTH = 160


@dataclass(frozen=True)
class FailureClass:
    code: GateExit
    title: str


MANUAL = FailureClass(GateExit.MANUAL, "manual action required")
COMPILE = FailureClass(GateExit.COMPILE, "compile error")
CHECK = FailureClass(GateExit.CHECK, "check fails on the new build")
OUTPUT = FailureClass(GateExit.OUTPUT, "output difference (not a near-tie)")
SPEED = FailureClass(GateExit.SPEED, "tokens/s regression")
UNVERIFIED = FailureClass(GateExit.UNVERIFIED, "not verified: checks skipped or not driven on the new build")
PREDICTED = FailureClass(GateExit.PREDICTED, "predicted run-time break at the target")
INCONCLUSIVE = FailureClass(GateExit.INCONCLUSIVE, "tokens/s inconclusive (too noisy to decide)")
FIXED = FailureClass(GateExit.FIXED, "known failure fixed: remove it from the baseline")
CLASSES = (MANUAL, COMPILE, CHECK, OUTPUT, SPEED, UNVERIFIED, PREDICTED, INCONCLUSIVE, FIXED)


@dataclass(frozen=True)
class Finding:
    kind: FailureClass
    where: str  # file:line, a check name, a prompt, a call
    message: str
    checks: tuple[str, ...] = ()  # a cause's checks (class 12)
    cause: str = ""  # its cause id (verify/causes.py)

    def line(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class GateRequest:
    """What one `migrate gate` was asked to do: the run's request and the thresholds given on the command line
    (None: not given, the consumer config's or the defaults apply)."""

    run: RunRequest
    tie_margin: float | None = None
    max_tps_regression: float | None = None  # percent


@dataclass(frozen=True)
class Thresholds:
    tie_margin: float = DEFAULT_TIE_MARGIN
    max_tps_regression: float = DEFAULT_MAX_TPS_REGRESSION  # percent


# --- classification ------------------------------------------------------------------------------------------


def classify(outcome: RunOutcome, thresholds: Thresholds) -> list[Finding]:
    """Every reason a human is needed, from the run's structured results (not its problem strings)."""
    findings = _manual(outcome) + _compile(outcome)
    verification = outcome.verification
    if verification is not None and verification.differential is not None:
        diff, triage = verification.differential, verification.triage
        findings += _checks(diff, triage) + _outputs(diff, thresholds) + _speed(diff, thresholds) + _unverified(diff)
        findings += _fixed(triage)
    findings += _devices(verification.devices if verification is not None else [], thresholds)
    findings += _predicted(outcome)
    if outcome.problems and not findings:
        # the run saw something this gate has no class for: never let that pass silently
        findings.append(Finding(MANUAL, "run", outcome.problems[0]))
    return findings


def exit_code(findings: list[Finding]) -> GateExit:
    return min((f.kind.code for f in findings), default=GateExit.OK)


def _relative(path: str, outcome: RunOutcome) -> str:
    """Compiler paths point into the migrated copy or the original; both have the consumer's layout."""
    for root in (outcome.migrated, outcome.src):
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            continue
    return path


def _manual(outcome: RunOutcome) -> list[Finding]:
    plan = outcome.plan
    if plan is None:
        return []
    return [Finding(MANUAL, f"{plan.relative(a.file)}:{a.line}", f"({a.rule}) {a.message}") for a in plan.actions]


def _compile(outcome: RunOutcome) -> list[Finding]:
    found = []
    for role, build in outcome.builds.items():
        if build.ok:
            continue
        version = outcome.trees[role].provided
        found += [Finding(COMPILE, f"{_relative(e.file, outcome)}:{e.line}", f"at {version}: {e.message}")
                  for e in build.errors]  # fmt: skip
        if not build.errors:
            found.append(Finding(COMPILE, f"build at {version}", f"failed at stage {build.stage} (see the log)"))
    return found


def _checks(diff: DifferentialReport, triage: Triage | None = None) -> list[Finding]:
    """One finding per cause of the new build's failures that is not a known failure (verify/causes.py); without a
    triage (a run that made none), one per failed check."""
    if triage is None:
        return [Finding(CHECK, c.name, f"{c.classification}: {c.new.message}", (c.name,))
                for c in diff.comparisons if c.new is not None and c.new.status == CheckStatus.FAILED]  # fmt: skip
    return [_cause_finding(cause, triage) for cause in triage.open_causes()]


def _cause_finding(cause: Cause, triage: Triage) -> Finding:
    """`where`: the consumer's line when the cause has one, else its first check; the message names every check
    with its classification, the evidence, and what the baseline says of them."""
    known = triage.known_checks()
    names = [n for n in cause.checks if n not in known]
    first = names[0]
    checks = ", ".join(f"{n} ({cause.classifications[n]})" if n in cause.classifications else n for n in names)
    notes = [note for n in names if (note := triage.note(n))]
    evidence = cause.signature.evidence or cause.messages.get(first, "")
    alone = len(names) == 1 and not cause.signature.where
    if alone:  # one check, no consumer line: `check: classification: evidence`, as for a lone failure
        head = f"{cause.classifications.get(first, CheckStatus.FAILED)}: "
    else:
        head = (f"{len(names)} checks: " if len(names) > 1 else "") + f"{checks}: "
    message = f"{head}{evidence}" + ("" if alone else f" [cause {cause.id}]")
    if notes:
        message += "; " + "; ".join(dict.fromkeys(notes))
    return Finding(CHECK, cause.signature.where or first, message, tuple(names), cause.id)


def _fixed(triage: Triage | None) -> list[Finding]:
    """A known failure that passes now: strict, so the baseline cannot hide a future regression of that check."""
    if triage is None:
        return []
    return [Finding(FIXED, v.entry.check or v.entry.cause or "?", f"fixed: {v.now}; remove it from the baseline "
                    f"({v.entry.source}; reason was: {v.entry.reason})", tuple(v.checks), v.entry.cause or "")
            for v in triage.fixed()]  # fmt: skip


def _token(step: dict[str, Any]) -> str:
    if step.get("token") is None:
        return step.get("note", "no token")
    return f"{step['token']} {step.get('piece', '')!r} (margin {step.get('margin', 0):.3g})"


def _outputs(diff: DifferentialReport, thresholds: Thresholds) -> list[Finding]:
    found = []
    for g in diff.greedy:
        if g.verdict == GreedyVerdict.DIVERGENCE:
            found.append(Finding(OUTPUT, f"prompt {g.prompt!r} step {g.first_difference}",
                                 f"old {_token(g.old)} vs new {_token(g.new)}; tie margin "
                                 f"{thresholds.tie_margin}"))  # fmt: skip
        elif g.verdict == GreedyVerdict.NOT_COMPARABLE and g.tokenized_differently:
            found.append(Finding(OUTPUT, f"prompt {g.prompt!r}", g.note))
    return found


def _devices(comparisons: list[DeviceComparison], thresholds: Thresholds) -> list[Finding]:
    """The new build's CPU and GPU parting for real (the old build's pair is the baseline's business)."""
    found = []
    for c in comparisons:
        if c.build != "new" or not c.failed:
            continue
        if not c.parted:
            found.append(Finding(OUTPUT, "CPU vs GPU (new build)", c.message))
        for g in c.parted:
            detail = (f"CPU {_token(g.old)} vs GPU {_token(g.new)}; tie margin {thresholds.tie_margin}"
                      if g.verdict == GreedyVerdict.DIVERGENCE else g.note)  # fmt: skip
            found.append(Finding(OUTPUT, f"CPU vs GPU (new build), prompt {g.prompt!r} step {g.first_difference}",
                                 detail))  # fmt: skip
    return found


def _unverified(diff: DifferentialReport) -> list[Finding]:
    """A gate that passed with no check run would vouch for nothing (e.g. --n-gpu-layers where there is no GPU)."""
    new = nothing_verified(diff.comparisons)
    if new:
        reasons = sorted({r.message for r in new})
        more = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
        return [Finding(UNVERIFIED, "checklist", f"all {len(new)} check(s) skipped or not driven: {reasons[0]}{more}")]
    found = [Finding(UNVERIFIED, c.name, f"{c.classification}: {c.new.status}: {c.new.message}")
             for c in not_verified_on_new(diff.comparisons)]  # fmt: skip
    found += [Finding(UNVERIFIED, f"prompt {g.prompt!r}", f"greedy output not compared: {g.note}")
              for g in diff.greedy
              if g.verdict == GreedyVerdict.NOT_COMPARABLE and not g.tokenized_differently]  # fmt: skip
    return found


def _predicted(outcome: RunOutcome) -> list[Finding]:
    """Calls of the original that the target's run-time contract says will abort or be rejected (the predict step)."""
    from verify.contract import CONSEQUENCES

    prediction = outcome.prediction
    if prediction is None:
        return []
    found = []
    for g in prediction.breaks():
        values = ", ".join(f"{k} {v}" for k, v in g.first.values.items())
        found.append(Finding(PREDICTED, g.where or "?", f"({g.clause}) {g.first.call}: {values}; at "
                             f"{prediction.contract}: {CONSEQUENCES[g.consequence]}; {g.count} call(s) in "
                             f"{', '.join(g.checks)}"))  # fmt: skip
    return found


def _speed(diff: DifferentialReport, thresholds: Thresholds) -> list[Finding]:
    """A regression only when the whole interval (95 %, or the sequential decision's level) of the median paired
    new/old ratio lies below the floor; inconclusive (17) when it straddles the floor. A row without an interval
    (one measurement) is its own bounds."""
    floor = 1 - thresholds.max_tps_regression / 100
    found = []
    for call, row in diff.throughput.items():
        ratio = row.get("new_over_old")
        if ratio is None:
            continue
        low, high = row.get("ci95") or (ratio, ratio)
        speeds = f"{row['old']['tokens_per_s']} → {row['new']['tokens_per_s']} tokens/s"
        loss = f"-{(1 - ratio) * 100:.0f}%, allowed -{thresholds.max_tps_regression:g}%"
        level = f"{row.get('confidence', 0.95) * 100:.4g}%"
        decided = row.get("decision")
        sequential = (f" (sequential: each look at {level} for a {decided['error_rate'] * 100:g}% error rate over "
                      f"{decided['looks']} looks)" if decided else "")  # fmt: skip
        stats = (f"; median of {row['pairs']} paired new/old ratios {ratio}, {level} CI [{low}, {high}]{sequential}"
                 if row.get("ci95") else "")  # fmt: skip
        if high < floor:
            found.append(Finding(SPEED, call, f"{speeds} ({loss}){stats}{_instructions(row)}"))
        elif low < floor:
            budget = (f" after {row['pairs']} pairs (limit {decided['max_pairs']} pairs / {decided['budget_s']:g} s)"
                      if decided else "")  # fmt: skip
            found.append(Finding(INCONCLUSIVE, call, f"{speeds} ({loss}){stats}: the interval straddles {floor:g}, "
                                 f"too noisy to decide{budget}{_instructions(row)}"))  # fmt: skip
    return found


def _instructions(row: dict[str, Any]) -> str:
    counts = row.get("instructions") or {}
    if counts.get("new_over_old") is None:
        return ""
    return f"; instructions per call {counts['old']} → {counts['new']} (x{counts['new_over_old']})"


# --- output --------------------------------------------------------------------------------------------------


def _clip(text: str, width: int = SUMMARY_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def by_class(findings: list[Finding]) -> list[tuple[FailureClass, list[Finding]]]:
    return [(c, [f for f in findings if f.kind == c]) for c in CLASSES if any(f.kind == c for f in findings)]


def summary(findings: list[Finding], thresholds: Thresholds, outcome: RunOutcome | None = None) -> list[str]:
    """The one-screen why: a verdict line, then one line per class found with its count and first example."""
    code = exit_code(findings)
    if code == GateExit.OK:
        return [f"GATE PASSED (exit 0): nothing needs a human{_passed_detail(outcome, thresholds)}"]
    groups = by_class(findings)
    lines = [f"GATE FAILED (exit {code}: {groups[0][0].title}); {len(groups)} class(es) found:"]
    for kind, items in groups:
        lines.append("  " + _clip(f"{kind.code} {kind.title}: {_count(kind, items)}; first: {items[0].line()}"))
    return lines


def _count(kind: FailureClass, items: list[Finding]) -> str:
    """How many: class 12 counts failing checks and their causes."""
    if kind != CHECK:
        return str(len(items))
    checks = sum(len(f.checks) or 1 for f in items)
    return f"{checks} failing check{'s' * (checks != 1)}, {len(items)} cause{'s' * (len(items) != 1)}"


def _passed_detail(outcome: RunOutcome | None, thresholds: Thresholds) -> str:
    verification = outcome.verification if outcome is not None else None
    diff = verification.differential if verification is not None else None
    if verification is None or diff is None:
        return ""
    checks = sum(1 for c in diff.comparisons if c.new is not None and c.new.status == CheckStatus.PASSED)
    triage = verification.triage
    known = len(triage.known_checks()) if triage is not None else 0
    known_text = f", {known} known failure(s) failing the same way" if known else ""
    measured = any(row.get("new_over_old") is not None for row in diff.throughput.values())
    levels = sorted({row.get("confidence", 0.95) for row in diff.throughput.values() if row.get("ci95")})
    level = f" ({levels[-1] * 100:.4g}% CI)" if levels else ""  # the sequential decision's level, else 95 %
    speed = f"tokens/s within -{thresholds.max_tps_regression:g}%{level}" if measured else "tokens/s not measured"
    return (f": {checks} check(s) pass on the new build{known_text}, greedy output identical or near-tie "
            f"(margin < {thresholds.tie_margin}), {speed}")


def markdown_section(findings: list[Finding], thresholds: Thresholds, per_class: int = 10,
                     triage: Triage | None = None) -> str:  # fmt: skip
    """The report's verdict in gate mode: every class found, with up to `per_class` findings each; then the failures
    by cause and the known failures (`triage`, verify.baseline.Triage), when the checks ran."""
    from verify.report import triage_lines

    code = exit_code(findings)
    lines = ["## Verdict (gate)", "", f"Exit code **{code}**; thresholds: tie margin {thresholds.tie_margin}, "
             f"tokens/s regression allowed {thresholds.max_tps_regression:g}%.", ""]  # fmt: skip
    causes = triage_lines(triage) if triage is not None else []
    if code == GateExit.OK:
        return "\n".join(lines + ["Nothing needs a human."] + ([""] + causes if causes else [])) + "\n"
    lines += ["| exit code | class | count | first |", "| ---: | --- | ---: | --- |"]
    groups = by_class(findings)
    for kind, items in groups:
        lines.append(f"| {kind.code} | {kind.title} | {_count(kind, items)} | "
                     f"{_clip(items[0].line(), 200).replace('|', '/')} |")  # fmt: skip
    for kind, items in groups:
        lines += ["", f"### {kind.code} {kind.title}" + (f": {_count(kind, items)}" if kind == CHECK else ""), ""]
        lines += [f"- `{f.where}` {_clip(f.message, 300 if not f.checks else 600)}" for f in items[:per_class]]
        if len(items) > per_class:
            lines.append(f"- … and {len(items) - per_class} more")
    return "\n".join(lines + ([""] + causes if causes else [])) + "\n"


def to_json(findings: list[Finding], thresholds: Thresholds) -> dict[str, Any]:
    return {
        "exit_code": exit_code(findings),
        "thresholds": {"tie_margin": thresholds.tie_margin, "max_tps_regression": thresholds.max_tps_regression},
        "classes": [{"code": k.code, "title": k.title, "count": len(items),
                     "findings": [{"where": f.where, "message": f.message, "checks": list(f.checks), "cause": f.cause}
                                  for f in items]}
                    for k, items in by_class(findings)],
    }  # fmt: skip


# --- the command ---------------------------------------------------------------------------------------------


def gate(request: GateRequest) -> int:
    run = request.run
    console = Console(stderr=True, quiet=run.quiet)
    stages = Stages(console, run.quiet)
    try:
        src, config = pipeline.load_consumer(run)
        config = config.with_thresholds(request.tie_margin, request.max_tps_regression)
        thresholds = Thresholds(
            DEFAULT_TIE_MARGIN if config.tie_margin is None else config.tie_margin,
            DEFAULT_MAX_TPS_REGRESSION if config.max_tps_regression is None else config.max_tps_regression,
        )
        # the harness classifies greedy divergences with this margin, and samples tokens/s until the interval
        # clears this floor (or its budget ends): hand it the ones the gate uses
        config = config.with_thresholds(thresholds.tie_margin, thresholds.max_tps_regression)
        outcome = pipeline.execute(run, src, config, console, stages)
    except UsageError as exc:
        pipeline.usage_error(exc)
        return ExitCode.USAGE
    findings = classify(outcome, thresholds)
    code = exit_code(findings)
    triage = outcome.verification.triage if outcome.verification is not None else None
    report = pipeline.write_outputs(outcome, run, markdown_section(findings, thresholds, triage=triage), code,
                                    {"gate": to_json(findings, thresholds)})  # fmt: skip
    print(report)
    for line in summary(findings, thresholds, outcome):
        print(line, file=sys.stderr)
    return code
