"""Known failures, like a ratchet: a defect the consumer already knows about does not block the gate, and the gate
says when it got fixed.

Known failures come from the consumer config's `[verify]` table (`known_failures`: a check and/or a cause id, and a
reason; `baseline`: a file) or from a file given on the command line (`--known-failures FILE`), written by
`migrate verify --write-baseline FILE`. Against the new build each entry is:

- known: the check still fails, the same way (the same cause id, when the entry names one) - reported as known, it
  does not fail the gate;
- fixed: it passes now - "fixed: remove it from the baseline", which the gate reports (strict, like pytest's
  `xfail(strict=True)`: a baseline that no longer matches the code is itself a finding, exit 18);
- fails differently: it fails with another cause than the one recorded - a finding like any failed check;
- regression: it passed on the old build - a regression is never baselined away, the entry changes nothing;
- not run: the check did not run on the new build (a `--checks` subset, skipped): nothing to say.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verify.causes import Cause, cause_of, group, headline, signatures
from verify.checks import FAILED, PASSED, CheckResult
from verify.errors import ToolError
from verify.outcomes import Classification, KnownState

FORMAT = "llama-migrate known failures"
FORMAT_VERSION = 1
ENTRY_KEYS = {"check", "cause", "reason"}


class BaselineError(ToolError):
    """A known-failures entry or file that cannot be used: the message names it and what is expected."""


@dataclass(frozen=True)
class KnownFailure:
    check: str | None
    cause: str | None
    reason: str
    source: str  # where the entry was read: the config, or a baseline file

    def label(self) -> str:
        parts = [f"`{self.check}`" if self.check else "", f"cause `{self.cause}`" if self.cause else ""]
        return " ".join(p for p in parts if p)

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "cause": self.cause, "reason": self.reason, "source": self.source}


@dataclass
class KnownVerdict:
    """One entry against the new build."""

    entry: KnownFailure
    state: KnownState
    checks: list[str] = field(default_factory=list)  # the checks it applied to
    now: str = ""  # what the new build showed: the cause id it fails with now, or why it does not apply

    def to_json(self) -> dict[str, Any]:
        return {**self.entry.to_json(), "state": self.state.value, "checks": self.checks, "now": self.now}


@dataclass
class Triage:
    """The new build's failures by cause, and the known failures against them."""

    failing: int
    causes: list[Cause]
    verdicts: list[KnownVerdict] = field(default_factory=list)

    def known_checks(self) -> set[str]:
        return {name for v in self.verdicts if v.state == KnownState.KNOWN for name in v.checks}

    def open_causes(self) -> list[Cause]:
        """Causes with a check that is not a known failure: what needs a human."""
        known = self.known_checks()
        return [c for c in self.causes if any(name not in known for name in c.checks)]

    def known_causes(self) -> list[Cause]:
        known = self.known_checks()
        return [c for c in self.causes if all(name in known for name in c.checks)]

    def fixed(self) -> list[KnownVerdict]:
        return [v for v in self.verdicts if v.state == KnownState.FIXED]

    def note(self, check: str) -> str:
        """What the baseline says about a failing check that still needs a human (fails differently, or a
        regression it cannot excuse), or ''."""
        for v in self.verdicts:
            if check in v.checks and v.state == KnownState.CHANGED:
                return f"known failure ({v.entry.label()}) now fails differently: {v.now}"
            if check in v.checks and v.state == KnownState.REGRESSION:
                return "listed as a known failure, but it passed on the old build: a regression is never baselined"
        return ""

    def headline(self) -> str:
        text = headline(self.failing, self.causes)
        known = len(self.known_checks())
        return text + (f" ({known} known)" if known else "")

    def to_json(self) -> dict[str, Any]:
        return {"headline": self.headline(), "failing_checks": self.failing,
                "causes": [c.to_json() | {"known": all(n in self.known_checks() for n in c.checks)}
                           for c in self.causes],
                "known_failures": [v.to_json() for v in self.verdicts]}  # fmt: skip


# --- reading entries -----------------------------------------------------------------------------------------------


def entries_from_table(items: Any, source: str, checks: Iterable[str]) -> list[KnownFailure]:
    """`known_failures = [{check = "...", cause = "...", reason = "..."}, ...]`: each entry names a check of the
    checklist and/or a cause id, and says why it is known (a reason is required: a baseline entry nobody can
    explain is a defect nobody owns)."""
    if items is None:
        return []
    known = set(checks)
    if not isinstance(items, list):
        raise BaselineError(f"{source}: known_failures must be a list of tables {{check, cause, reason}}; got "
                            f"{items!r}")  # fmt: skip
    entries = []
    for item in items:
        if not isinstance(item, dict) or not set(item) <= ENTRY_KEYS or not ({"check", "cause"} & set(item)):
            raise BaselineError(f"{source}: known_failures entry {item!r} must be a table with a check and/or a "
                                "cause, and a reason, e.g. { check = \"generate_aba\", reason = \"issue #12\" }")
        if not all(isinstance(v, str) and v.strip() for v in item.values()):
            raise BaselineError(f"{source}: known_failures entry {item!r}: every value must be a non-empty string")
        if "reason" not in item:
            raise BaselineError(f"{source}: known_failures entry {item!r} has no reason: say why it is known")
        # a user test (a pytest node id, verify/usertests.py) is known only once collected: not checked here
        if item.get("check") and item["check"] not in known and "::" not in item["check"]:
            raise BaselineError(f"{source}: known_failures entry names check {item['check']!r}, which is not in "
                                "the checklist (`migrate verify --help` lists them)")  # fmt: skip
        entries.append(KnownFailure(item.get("check"), item.get("cause"), item["reason"], source))
    return entries


def read_baseline(path: Path, checks: Iterable[str]) -> list[KnownFailure]:
    if not path.is_file():
        raise BaselineError(f"{path}: no such baseline file (write one with `migrate verify --write-baseline`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: not a baseline file (not JSON: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(f"{path}: not a baseline file (no \"format\": \"{FORMAT}\")")
    entries = [{k: v for k, v in item.items() if k in ENTRY_KEYS and v is not None}
               for item in data.get("known_failures", []) if isinstance(item, dict)]  # fmt: skip
    return entries_from_table(entries, str(path), checks)


def load_known(verify_table: dict[str, Any], root: Path | None, extra: str | None,
               checks: Iterable[str]) -> list[KnownFailure]:  # fmt: skip
    """Every known failure: the config's `[verify] known_failures`, its `[verify] baseline` file (relative to the
    config's folder) and a file given on the command line."""
    names = list(checks)
    entries = entries_from_table(verify_table.get("known_failures"), "[verify] known_failures", names)
    configured = verify_table.get("baseline")
    if configured is not None:
        if not isinstance(configured, str) or not configured.strip():
            raise BaselineError(f"[verify] baseline must be a file name (a string); got {configured!r}")
        path = Path(configured)
        entries += read_baseline(path if path.is_absolute() or root is None else root / path, names)
    if extra:
        entries += read_baseline(Path(extra), names)
    return entries


# --- against a run -------------------------------------------------------------------------------------------------


def triage(new: list[CheckResult], known: list[KnownFailure],
           classifications: dict[str, Classification] | None = None) -> Triage:  # fmt: skip
    """The new build's results (in check order) grouped by cause, and each known failure judged against them.
    `classifications`: check -> old/new classification (differential runs); a regression is never known."""
    causes = group(new, classifications)
    by_name = {r.name: r for r in new}
    result = Triage(sum(1 for r in new if r.status == FAILED), causes)
    regressions = {n for n, c in (classifications or {}).items() if c == Classification.REGRESSION}
    for entry in known:
        result.verdicts.append(_judge(entry, by_name, causes, regressions))
    return result


def _judge(entry: KnownFailure, by_name: dict[str, CheckResult], causes: list[Cause],
           regressions: set[str]) -> KnownVerdict:  # fmt: skip
    if entry.check is not None:
        return _judge_check(entry, by_name.get(entry.check), causes, regressions)
    failing = [(name, c) for c in causes for name in c.checks if entry.cause in _ids(by_name[name])]
    if not failing:
        return KnownVerdict(entry, KnownState.FIXED, [], f"no check fails with cause {entry.cause} now")
    names = [name for name, _ in failing if name not in regressions]
    if not names:  # every check failing with it passed on the old build: the entry excuses none of them
        return KnownVerdict(entry, KnownState.REGRESSION, [n for n, _ in failing], "passed on the old build")
    return KnownVerdict(entry, KnownState.KNOWN, names, entry.cause or "")


def _judge_check(entry: KnownFailure, result: CheckResult | None, causes: list[Cause],
                 regressions: set[str]) -> KnownVerdict:  # fmt: skip
    name = entry.check or ""
    if result is None or result.status not in (PASSED, FAILED):
        why = KnownState.NOT_RUN.value if result is None else f"{result.status}: {result.message}"
        return KnownVerdict(entry, KnownState.NOT_RUN, [], why)
    if result.status == PASSED:
        return KnownVerdict(entry, KnownState.FIXED, [name], "passes on the new build")
    if name in regressions:
        return KnownVerdict(entry, KnownState.REGRESSION, [name], "passed on the old build")
    cause = cause_of(causes, name)
    now = cause.id if cause else ""
    if entry.cause is not None and entry.cause not in _ids(result):
        return KnownVerdict(entry, KnownState.CHANGED, [name], f"was {entry.cause}, now {now}")
    return KnownVerdict(entry, KnownState.KNOWN, [name], now)


def _ids(result: CheckResult) -> set[str]:
    """The cause ids a failed check answers to (its cause, and the less specific names of it: verify.causes)."""
    return {s.id for s in signatures(result)}


# --- writing a baseline --------------------------------------------------------------------------------------------


def baseline_entries(result: Triage, classifications: dict[str, Classification] | None = None) -> list[dict[str, str]]:
    """The failures a baseline records: each failing check with its cause, except regressions (never known)."""
    entries = []
    for cause in result.causes:
        for name in cause.checks:
            if (classifications or {}).get(name) == Classification.REGRESSION:
                continue
            message = " ".join(cause.messages.get(name, "").split())[:300]
            entries.append({"check": name, "cause": cause.id, "reason": f"failing when the baseline was written "
                            f"({time.strftime('%Y-%m-%d')}): {message}"})  # fmt: skip
    return entries


def write_baseline(path: Path, entries: list[dict[str, str]], build: dict[str, Any]) -> None:
    data = {"format": FORMAT, "version": FORMAT_VERSION, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build": build, "known_failures": entries}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
