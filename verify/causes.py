"""Failures grouped by cause: checks that fail for one reason are one cause, reported once with its checks.

A failed check's cause is read from its evidence, most specific first:

1. the first call that broke the run-time contract before the failure (a traced run: `evidence.contract`): same
   clause at the same consumer line is one cause;
2. a crash: same signal and same last llama.cpp call (the call the process died in, from a traced run) or, untraced,
   the same assertion / abort line on stderr (`GGML_ASSERT`, `terminate called ...`);
3. a hang (killed at the timeout): the call it hung in when traced;
4. the same setup failure (the model or a context could not be made, same message);
5. the same shape of the first text difference between the text a check expected and the one it got (generate
   alone vs generate_parallel, libllama's decode vs the shim's, A vs A again): equal but for leading / trailing
   whitespace, equal up to where one of them stops (a stop string, an end of generation), or one token apart;
6. otherwise the check is a cause of its own.

Cause ids are stable strings (`contract:positions-continue@custom_files/shim.cpp:931`, `text:leading-whitespace-
missing`, `check:generate_aba`): a baseline (verify/baseline.py) records them to tell "still fails the same way"
from "fails differently".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from verify.checks import FAILED, CheckResult
from verify.outcomes import Classification


class CauseKind(Enum):
    CONTRACT = "contract"  # a run-time contract clause broken at a consumer line
    CRASH = "crash"  # the process died (a signal), at one llama.cpp call / assertion
    HANG = "hang"  # killed at the timeout
    SETUP = "setup"  # the model or a context could not be made
    TEXT = "text"  # the same shape of first text difference
    CHECK = "check"  # nothing shared: the check alone


class Shape(Enum):
    """How two texts that should be equal differ (the reference side against the side under test)."""

    LEADING_WHITESPACE_MISSING = "leading-whitespace-missing"  # the tested text lacks the reference's leading space
    LEADING_WHITESPACE_EXTRA = "leading-whitespace-extra"
    TRAILING_WHITESPACE = "trailing-whitespace"  # equal but for whitespace at the end
    EDGE_WHITESPACE = "edge-whitespace"  # equal but for whitespace at both ends
    STOPS_EARLY = "stops-early"  # the tested text is the reference cut short (stopped at a stop string / EOG)
    RUNS_ON = "runs-on"  # the tested text is the reference and more (did not stop where the reference did)
    ONE_TOKEN = "one-token"  # equal but for one token (judged on text: one piece, at most a leading space)
    OTHER = "other"


SHAPE_TEXT = {
    Shape.LEADING_WHITESPACE_MISSING: "equal except that the text under test lacks the reference's leading "
                                      "whitespace",
    Shape.LEADING_WHITESPACE_EXTRA: "equal except for leading whitespace the reference does not have",
    Shape.TRAILING_WHITESPACE: "equal except for trailing whitespace",
    Shape.EDGE_WHITESPACE: "equal except for leading and trailing whitespace",
    Shape.STOPS_EARLY: "equal up to where the text under test stops (a stop string or end of generation)",
    Shape.RUNS_ON: "equal up to where the reference stops; the text under test goes on",
    Shape.ONE_TOKEN: "one token apart",
    Shape.OTHER: "differ",
}  # fmt: skip

# Pairs of evidence keys holding a reference text and the text under test (the checks' own names for them).
# ("reference", "got"): the oracle's rows (verify/checks/oracle_cases.py), llama.cpp's own text against the
# consumer's, e.g. sampling_seed's generate_parallel outputs against the reference sampler chain.
TEXT_PAIRS = (("single", "parallel"), ("expected", "got"), ("reference_text", "shim_text"), ("A1", "A2"),
              ("fresh_A", "A1"), ("fresh_B", "B"), ("reference", "got"))  # fmt: skip
# Texts checked against a set of acceptable ones (generate_context_full: libllama's decode allows a choice of
# endings): the path of the acceptable texts, and the paths of the texts under test.
TEXT_CHOICES = ((("reference", "allowed"), (("generate", "text"), ("parallel", "results", 0))),)
# An untraced crash's signature on stderr: the assertion or abort that ended the process.
ABORT_LINE = re.compile(r"GGML_ASSERT|GGML_ABORT|terminate called|Assertion .* failed|what\(\):|error:")
# a token as text: a word with a space before it (or, where the common beginning took that space, after it)
ONE_PIECE = re.compile(r"\s?\S*|\S+\s")


@dataclass(frozen=True)
class TextDifference:
    shape: Shape
    reference: str
    tested: str
    common_prefix_chars: int
    keys: tuple[str, str]  # the evidence keys the two texts came from

    def to_json(self) -> dict[str, Any]:
        return {"shape": self.shape.value, "reference": self.reference[:200], "tested": self.tested[:200],
                "common_prefix_chars": self.common_prefix_chars, "keys": list(self.keys)}  # fmt: skip


@dataclass(frozen=True)
class Signature:
    """What makes two failures one cause: its kind and key (the id), with what a reader needs to act on it."""

    kind: CauseKind
    key: str  # inside its kind: clause@where, signal@call, a shape, a check name
    where: str | None = None  # the consumer's file:line, when known
    evidence: str = ""  # one line: the clause broken and its values, the assertion, the texts

    @property
    def id(self) -> str:
        return f"{self.kind.value}:{self.key}"


@dataclass
class Cause:
    signature: Signature
    checks: list[str] = field(default_factory=list)
    classifications: dict[str, Classification] = field(default_factory=dict)  # check -> old/new, when known
    messages: dict[str, str] = field(default_factory=dict)  # check -> its failure message

    @property
    def id(self) -> str:
        return self.signature.id

    @property
    def kind(self) -> CauseKind:
        return self.signature.kind

    def title(self) -> str:
        """One line: what failed, where, with what evidence."""
        s = self.signature
        where = f" at `{s.where}`" if s.where else ""
        return f"{s.evidence or self.messages.get(self.checks[0], '')}{where}".strip()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind.value, "where": self.signature.where,
                "evidence": self.signature.evidence, "checks": self.checks,
                "classifications": self.classifications, "messages": self.messages}  # fmt: skip


# --- one check's signature -----------------------------------------------------------------------------------------


def signature(result: CheckResult) -> Signature:
    """The cause of one failed check, from its evidence (see the module docstring for the order)."""
    return signatures(result)[0]


def signatures(result: CheckResult) -> list[Signature]:
    """Every way of naming one failed check's cause its evidence supports, most specific first, the check alone
    last. A baseline written from an untraced run records a crash or a text shape; the gate's traced re-run adds
    the contract break before it: either id names the same failure."""
    evidence = result.evidence or {}
    found = [_contract(evidence), _crash(evidence), _hang(result), _setup(evidence), _text(evidence)]
    return [s for s in found if s is not None] + [Signature(CauseKind.CHECK, result.name, None, result.message)]


def _contract(evidence: dict[str, Any]) -> Signature | None:
    first = (evidence.get("contract") or {}).get("first_break")
    if not first:
        return None
    values = ", ".join(f"{k} {v}" for k, v in (first.get("values") or {}).items())
    where = first.get("where")
    text = f"({first['clause']}) {first.get('call', '')}: {values}".strip()
    return Signature(CauseKind.CONTRACT, f"{first['clause']}@{where or '?'}", where, text)


def _died_in(evidence: dict[str, Any]) -> dict[str, Any]:
    return (evidence.get("trace") or {}).get("died_in") or {}


def abort_line(stderr: str) -> str | None:
    """The line of stderr that says why the process ended, paths and addresses taken out (so two builds' runs of
    one assertion read the same)."""
    for line in reversed(stderr.splitlines()):
        if ABORT_LINE.search(line):
            line = re.sub(r"(?:/[^\s/:]+)+/([^\s/:]+:\d+)", r"\1", line.strip())  # a path to its file name
            return re.sub(r"0x[0-9a-fA-F]+", "0x…", line)
    return None


def _crash(evidence: dict[str, Any]) -> Signature | None:
    signal = evidence.get("signal")
    after_check = evidence.get("exit_after_check")
    if not signal and not after_check:
        return None
    died = _died_in(evidence)
    stderr = str(evidence.get("stderr_tail") or "")
    how = signal or str(after_check)
    if died.get("call"):
        return Signature(CauseKind.CRASH, f"{how}@{died['call']}", died.get("where"),
                         f"{how} in {died['call']}" + (f" ({abort_line(stderr)})" if abort_line(stderr) else ""))
    line = abort_line(stderr)
    return Signature(CauseKind.CRASH, f"{how}@{line or 'unknown'}", None,
                     f"{how}: {line}" if line else f"{how} (no assertion on stderr)")  # fmt: skip


def _hang(result: CheckResult) -> Signature | None:
    if "timeout_s" not in (result.evidence or {}):
        return None
    died = _died_in(result.evidence)
    call = died.get("call")
    return Signature(CauseKind.HANG, call or "unknown", died.get("where"),
                     f"hang in {call}" if call else f"hang: {result.message}")  # fmt: skip


def _setup(evidence: dict[str, Any]) -> Signature | None:
    setup = evidence.get("setup")
    if not setup:
        return None
    text = " ".join(str(setup).split())
    return Signature(CauseKind.SETUP, text[:160], None, f"setup failed: {text}")


def _text(evidence: dict[str, Any]) -> Signature | None:
    found = first_text_difference(evidence)
    if found is None or found.shape == Shape.OTHER:
        return None
    text = f"{SHAPE_TEXT[found.shape]}: {found.reference[:60]!r} vs {found.tested[:60]!r}"
    return Signature(CauseKind.TEXT, found.shape.value, None, text)


# --- text differences ------------------------------------------------------------------------------------------------


def shape(reference: str, tested: str) -> Shape:
    """How `tested` differs from `reference` (assumed unequal)."""
    if reference.strip() == tested.strip():
        lead = reference[: len(reference) - len(reference.lstrip())] != tested[: len(tested) - len(tested.lstrip())]
        trail = reference[len(reference.rstrip()):] != tested[len(tested.rstrip()):]
        if lead and not trail:
            return (Shape.LEADING_WHITESPACE_MISSING if len(tested) < len(reference)
                    else Shape.LEADING_WHITESPACE_EXTRA)  # fmt: skip
        return Shape.TRAILING_WHITESPACE if trail and not lead else Shape.EDGE_WHITESPACE
    if reference.startswith(tested):
        return Shape.STOPS_EARLY
    if tested.startswith(reference):
        return Shape.RUNS_ON
    return Shape.ONE_TOKEN if _one_piece_apart(reference, tested) else Shape.OTHER


def _one_piece_apart(a: str, b: str) -> bool:
    """Equal but for one token, judged on text (no token ids here): once the common beginning and end are taken
    off, what is left on each side is at most one piece, a word with at most one space beside it."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    mid_a, mid_b = a[start : len(a) - end], b[start : len(b) - end]
    return bool(ONE_PIECE.fullmatch(mid_a) and ONE_PIECE.fullmatch(mid_b))


def _pairs(value: Any) -> Iterator[tuple[tuple[str, str], str, str]]:
    """Every (reference, tested) text pair in the evidence, in its order, depth first. A comparison the check did
    not judge (`not_judged`: the reference ran with assumed values) is no evidence of a cause and is passed over."""
    if isinstance(value, dict):
        if "not_judged" in value:
            return
        for ref_key, test_key in TEXT_PAIRS:
            ref, tested = value.get(ref_key), value.get(test_key)
            if isinstance(ref, str) and isinstance(tested, str):
                yield (ref_key, test_key), ref, tested
        for item in value.values():
            if isinstance(item, dict | list):
                yield from _pairs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _pairs(item)


def _at(value: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and len(value) > step else None
        else:
            value = value.get(step) if isinstance(value, dict) else None
    return value


def _choices(evidence: dict[str, Any]) -> Iterator[tuple[tuple[str, str], str, str]]:
    """A tested text outside its acceptable set, paired with the acceptable text it differs from most simply."""
    for allowed_path, tested_paths in TEXT_CHOICES:
        allowed = _at(evidence, allowed_path)
        if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed) or not allowed:
            continue
        for path in tested_paths:
            tested = _at(evidence, path)
            if isinstance(tested, str) and tested not in allowed:
                best = min(allowed, key=lambda a: list(Shape).index(shape(a, tested)))
                yield (".".join(map(str, allowed_path)), ".".join(map(str, path))), best, tested


def first_text_difference(evidence: dict[str, Any]) -> TextDifference | None:
    for keys, reference, tested in [*_pairs(evidence), *_choices(evidence)]:
        if reference != tested:
            common = next((i for i, (x, y) in enumerate(zip(reference, tested, strict=False)) if x != y),
                          min(len(reference), len(tested)))  # fmt: skip
            return TextDifference(shape(reference, tested), reference, tested, common, keys)
    return None


# --- grouping --------------------------------------------------------------------------------------------------------


def group(results: Iterable[CheckResult], classifications: dict[str, Classification] | None = None) -> list[Cause]:
    """The failed results as causes, in the order of their first check; each cause lists its checks."""
    causes: dict[str, Cause] = {}
    for result in results:
        if result.status != FAILED:
            continue
        sig = signature(result)
        cause = causes.setdefault(sig.id, Cause(sig))
        cause.checks.append(result.name)
        cause.messages[result.name] = result.message
        if classifications and result.name in classifications:
            cause.classifications[result.name] = classifications[result.name]
    return list(causes.values())


def headline(failing: int, causes: list[Cause]) -> str:
    """`N failing checks, K causes`: the line the summary, the report and the JSON share."""
    return f"{failing} failing check{'s' * (failing != 1)}, {len(causes)} cause{'s' * (len(causes) != 1)}"


def cause_of(causes: list[Cause], check: str) -> Cause | None:
    return next((c for c in causes if check in c.checks), None)
