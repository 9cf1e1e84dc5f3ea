"""How mined rules stand against hand-written ones: per rule (precision) and on consumers (the rewrites they give).

- `confirm`: each mined rule's own cases (code made from its pairs) run through the hand rules of the same step: a
  hand rule that writes the same text confirms it; a different text, a manual hand rule, or no hand rule at all is
  listed for review. Precision = confirmed / rewriting mined rules.
- `compare_on`: a consumer tree planned with the hand rules (memory handle inline, option hoist_memory=false, so a
  hoisted `mem` does not count as a difference) and with the mined rules; the call rewrites of the functions either
  side rewrites, compared as the set of (file, line, after-text).
Everything runs the real engine (libclang against the step's `from` tree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from migrate.rewrite.engine import EngineConfig, build_plan
from migrate.rewrite.rules import Rule, RuleSet, load_rules
from migrate.sources import SourceTree

REWRITING = {"memory_call", "append_argument"}
INLINE = {"hoist_memory": False}


def _snippet(cases: list[dict[str, Any]], key: str) -> str:
    """The cases' code (key "code") or expected output (key "output") as one file: includes first, then bodies."""
    includes: list[str] = []
    bodies: list[str] = []
    for case in cases:
        for line in case[key].splitlines(keepends=True):
            if line.startswith("#include"):
                if line not in includes:
                    includes.append(line)
            else:
                bodies.append(line)
    return "".join(includes) + "".join(bodies)


def _plan_text(ruleset: RuleSet, tree: SourceTree, folder: Path, code: str, options: dict[str, Any]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    snippet = folder / "snippet.cpp"
    snippet.write_text(code, encoding="utf-8")
    plan = build_plan(EngineConfig(folder, tree.path, ruleset, options, jobs=1))
    return plan.new_contents().get(snippet.resolve(), snippet.read_bytes()).decode()


def _inline_options(ruleset: RuleSet) -> dict[str, Any]:
    return {k: v for k, v in INLINE.items() if k in ruleset.options}


def run_cases(rules_path: Path, rule_id: str, tree: SourceTree, folder: Path) -> tuple[str, str]:
    """The engine's output for a mined rule's invalid cases (one file), and the output the cases expect."""
    ruleset = load_rules(rules_path)
    raw = yaml.safe_load(rules_path.read_text(encoding="utf-8"))
    cases = next(r for r in raw["rules"] if r["id"] == rule_id)["tests"]["invalid"]
    prelude = ruleset.test_prelude.get("c++", "")
    got = _plan_text(ruleset, tree, folder, prelude + _snippet(cases, "code"), _inline_options(ruleset))
    return got, prelude + _snippet(cases, "output")


class Verdict(StrEnum):
    CONFIRMED = "confirmed"  # a hand rule writes the same text for the mined rule's cases
    DIFFERS = "differs"  # a hand rule rewrites the call, to another text
    HAND_MANUAL = "hand-manual"  # the hand rules list the call for a person; the mined rule rewrites it
    UNCONFIRMED = "unconfirmed"  # no hand rule for the function
    PROPOSAL = "proposal"  # the mined rule is manual (a conflict or a context-dependent shape)


@dataclass(frozen=True)
class RuleVerdict:
    rule: str
    function: str
    verdict: Verdict
    detail: str


def _hand_rule(hand: RuleSet, function: str) -> Rule | None:
    return next((r for r in hand.rules if r.match.function == function), None)


def confirm(mined_path: Path, hand: RuleSet, tree: SourceTree, folder: Path) -> list[RuleVerdict]:
    """Each mined rule against the hand rules of the step (see the module docstring)."""
    raw = yaml.safe_load(mined_path.read_text(encoding="utf-8"))
    verdicts = []
    for number, rule in enumerate(raw["rules"]):
        function = rule["match"]["function"]
        hand_rule = _hand_rule(hand, function)
        hand_says = f"hand rule {hand_rule.id} ({hand_rule.kind})" if hand_rule else "no hand rule"
        if rule["kind"] == "manual_call":
            verdicts.append(RuleVerdict(rule["id"], function, Verdict.PROPOSAL, hand_says))
        elif hand_rule is None:
            verdicts.append(RuleVerdict(rule["id"], function, Verdict.UNCONFIRMED, f"mined fix {rule['fix']}"))
        elif hand_rule.kind not in REWRITING:
            verdicts.append(RuleVerdict(rule["id"], function, Verdict.HAND_MANUAL, hand_says))
        else:
            cases = rule.get("tests", {}).get("invalid", [])
            prelude = hand.test_prelude.get("c++", "")
            got = _plan_text(hand, tree, folder / f"confirm-{number}", prelude + _snippet(cases, "code"),
                             _inline_options(hand))  # fmt: skip
            same = got == prelude + _snippet(cases, "output")
            verdicts.append(RuleVerdict(rule["id"], function, Verdict.CONFIRMED if same else Verdict.DIFFERS,
                                        f"{hand_says}: {'same text' if same else 'other text'} on "
                                        f"{len(cases)} mined case(s)"))  # fmt: skip
    return verdicts


@dataclass
class Comparison:
    """The call rewrites of one consumer tree by the hand and by the mined rules."""

    root: Path
    hand: set[tuple[str, int, str]] = field(default_factory=set)
    mined: set[tuple[str, int, str]] = field(default_factory=set)

    @property
    def same(self) -> set[tuple[str, int, str]]:
        return self.hand & self.mined

    @property
    def hand_only(self) -> set[tuple[str, int, str]]:
        return self.hand - self.mined

    @property
    def mined_only(self) -> set[tuple[str, int, str]]:
        return self.mined - self.hand

    def line(self) -> str:
        return (f"{self.root.name}: {len(self.same)} same, {len(self.hand_only)} only by the hand rules, "
                f"{len(self.mined_only)} only by the mined rules")  # fmt: skip


def _rewrites(root: Path, ruleset: RuleSet, tree: SourceTree, functions: set[str]) -> set[tuple[str, int, str]]:
    ids = {r.id for r in ruleset.rules if r.kind in REWRITING and r.match.function in functions}
    plan = build_plan(EngineConfig(root, tree.path, ruleset, _inline_options(ruleset), jobs=1))
    return {(plan.relative(e.file), e.line, " ".join(e.replacement.split())) for e in plan.edits if e.rule in ids}


def compare_on(root: Path, hand: RuleSet, mined: RuleSet, tree: SourceTree) -> Comparison:
    """Plan `root` with both rule sets; compare the rewrites of every function one of them rewrites."""
    functions = {r.match.function or "" for rs in (hand, mined) for r in rs.rules if r.kind in REWRITING} - {""}
    return Comparison(root, _rewrites(root, hand, tree, functions), _rewrites(root, mined, tree, functions))
