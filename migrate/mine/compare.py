"""How mined rules stand against hand-written ones: per rule (precision) and on consumers (the rewrites they give).

- `confirm`: each mined rule's own cases (code made from its pairs) run through the hand rules of the same step: a
  hand rule that writes the same text confirms it; a different text, a manual hand rule, or no hand rule at all is
  listed for review. Precision = confirmed / rewriting mined rules.
- `compare_on`: a consumer tree planned with the hand rules (memory handle inline, option hoist_memory=false, so a
  hoisted `mem` does not count as a difference) and with the mined rules; the call rewrites of the functions either
  side rewrites, compared as the set of (file, line, after-text). First with the mined options at their defaults;
  then, where a mined option is the same argument of the same call as a hand rule's option (`llama_memory_clear`'s
  `data`: mined `llama_memory_clear_data`, hand `clear_data`), again with the mined option set to the hand
  option's value. Both are reported: the two files' defaults are never silently aligned.
A mined option's cases are run with the option set as each case says (`options:`), grouped by those settings.
Everything runs the real engine (libclang against the step's `from` tree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from migrate.rewrite.engine import EngineConfig, build_plan
from migrate.rewrite.rules import Rule, RuleError, RuleSet, load_rules
from migrate.sources import SourceTree

REWRITING = {"memory_call", "append_argument"}
Names = tuple[str, ...] | list[str]
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


def by_options(cases: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The cases grouped by the options they set (`options:`; none: the defaults), in order of first appearance."""
    groups: dict[tuple[tuple[str, Any], ...], list[dict[str, Any]]] = {}
    for case in cases:
        groups.setdefault(tuple(sorted((case.get("options") or {}).items())), []).append(case)
    return [(dict(key), group) for key, group in groups.items()]


def run_cases(rules_path: Path, rule_id: str, tree: SourceTree, folder: Path) -> tuple[str, str]:
    """The engine's output for a mined rule's invalid cases (one file per setting of options, concatenated), and
    the output the cases expect."""
    ruleset = load_rules(rules_path)
    raw = yaml.safe_load(rules_path.read_text(encoding="utf-8"))
    cases = next(r for r in raw["rules"] if r["id"] == rule_id)["tests"]["invalid"]
    prelude = ruleset.test_prelude.get("c++", "")
    got, expected = "", ""
    for number, (options, group) in enumerate(by_options(cases)):
        got += _plan_text(ruleset, tree, folder / f"options-{number}", prelude + _snippet(group, "code"),
                          {**_inline_options(ruleset), **options})  # fmt: skip
        expected += prelude + _snippet(group, "output")
    return got, expected


def _fix_arguments(fix: str) -> list[str]:
    """The top-level arguments of a fix template `name(a, b, ...)` as written (placeholders' braces nest)."""
    start = fix.find("(")
    if start < 0 or not fix.endswith(")"):
        return []
    found, depth, current = [], 0, ""
    for char in fix[start + 1 : -1]:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            found.append(current.strip())
            current = ""
            continue
        current += char
    return [*found, current.strip()] if current.strip() or found else found


def option_positions(fix: str | None, options: Names) -> dict[int, str]:
    """Argument index -> the option that argument is, where a fix passes an option as a whole argument."""
    positions = {}
    for index, argument in enumerate(_fix_arguments(fix or "")):
        named = re.fullmatch(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", argument)
        if named and named[1] in options:
            positions[index] = named[1]
    return positions


def aligned_options(mined_fix: str | None, mined_options: Names, hand_rule: Rule) -> dict[str, str]:
    """Mined option -> hand option, where both rules (of the same function) pass them as the same argument."""
    hand = option_positions(hand_rule.fix, hand_rule.options)
    return {name: hand[index] for index, name in option_positions(mined_fix, mined_options).items() if index in hand}


def _as_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class Verdict(StrEnum):
    CONFIRMED = "confirmed"  # a hand rule writes the same text for the mined rule's cases
    # the same text for the cases at the mined option's default; other text for the other values' cases, which the
    # hand rule (no option at that argument) cannot write
    CONFIRMED_AT_DEFAULT = "confirmed at the mined default"
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
            verdicts.append(_confirm_cases(rule, raw.get("options") or {}, hand, hand_rule, tree,
                                           folder / f"confirm-{number}", hand_says))  # fmt: skip
    return verdicts


@dataclass(frozen=True)
class _CaseGroup:
    """Mined cases of one setting of the mined options, as the hand rules are run on them."""

    settings: dict[str, Any]  # every mined option of the rule, at its default unless the cases set it
    hand_options: dict[str, Any]  # the hand options set to the mined values (aligned options only)
    unaligned: bool  # a mined option away from its default that the hand rule has no option for
    cases: list[dict[str, Any]]


def _case_groups(rule: dict[str, Any], declared: dict[str, Any], hand: RuleSet, hand_rule: Rule) -> list[_CaseGroup]:
    names = list(rule.get("options") or [])
    aligned = aligned_options(rule.get("fix"), names, hand_rule)
    groups = []
    for options, cases in by_options(rule.get("tests", {}).get("invalid", [])):
        settings = {name: options.get(name, declared.get(name, {}).get("default")) for name in names}
        hand_options = dict(_inline_options(hand))
        unaligned = False
        for name, value in settings.items():
            if name in aligned:
                hand_options[aligned[name]] = _as_text(value)
            elif name in options:
                unaligned = True
        groups.append(_CaseGroup(settings, hand_options, unaligned, cases))
    return groups


def _confirm_cases(rule: dict[str, Any], declared: dict[str, Any], hand: RuleSet, hand_rule: Rule, tree: SourceTree,
                   folder: Path, hand_says: str) -> RuleVerdict:  # fmt: skip
    """The mined rule's cases through the hand rules, each setting of the mined options apart (an aligned hand
    option set to the same value): the same text on all is CONFIRMED; on the default's cases only, where the hand
    rule has no option for the other values, CONFIRMED_AT_DEFAULT; else DIFFERS."""
    prelude = hand.test_prelude.get("c++", "")
    outcomes: list[tuple[_CaseGroup, bool]] = []
    for number, group in enumerate(_case_groups(rule, declared, hand, hand_rule)):
        try:
            got = _plan_text(hand, tree, folder / f"options-{number}", prelude + _snippet(group.cases, "code"),
                             group.hand_options)  # fmt: skip
        except RuleError:  # the mined value is not one the hand option takes (another type)
            got = ""
        outcomes.append((group, got == prelude + _snippet(group.cases, "output")))
    count = sum(len(g.cases) for g, _ in outcomes)
    set_hand = sorted({f"{k}={v}" for g, _ in outcomes for k, v in g.hand_options.items() if k not in INLINE})
    how = f" (hand option set as each case's mined option: {', '.join(set_hand)})" if set_hand else ""
    if all(same for _, same in outcomes):
        return RuleVerdict(rule["id"], rule["match"]["function"], Verdict.CONFIRMED,
                           f"{hand_says}: same text on {count} mined case(s){how}")  # fmt: skip
    if all(same or group.unaligned for group, same in outcomes) and any(same for _, same in outcomes):
        other = "; ".join(", ".join(f"{k}={_as_text(v)}" for k, v in g.settings.items())
                          for g, same in outcomes if not same)  # fmt: skip
        return RuleVerdict(rule["id"], rule["match"]["function"], Verdict.CONFIRMED_AT_DEFAULT,
                           f"{hand_says}: same text on the cases at the mined default; other text at {other}, which "
                           "the hand rule has no option for")  # fmt: skip
    return RuleVerdict(rule["id"], rule["match"]["function"], Verdict.DIFFERS,
                       f"{hand_says}: other text on the mined cases{how}")  # fmt: skip


@dataclass
class Comparison:
    """The call rewrites of one consumer tree by the hand and by the mined rules (with `mined_options` set: mined
    option -> (value, the hand option it was set from); empty: the mined defaults)."""

    root: Path
    hand: set[tuple[str, int, str]] = field(default_factory=set)
    mined: set[tuple[str, int, str]] = field(default_factory=set)
    mined_options: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def setting(self) -> str:
        if not self.mined_options:
            return "mined options at their defaults"
        return "mined " + ", ".join(f"{name}={value} (the hand rules' {hand})"
                                    for name, (value, hand) in self.mined_options.items())  # fmt: skip

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
        return (f"{self.root.name} ({self.setting}): {len(self.same)} same, {len(self.hand_only)} only by the hand "
                f"rules, {len(self.mined_only)} only by the mined rules")  # fmt: skip


def _rewrites(root: Path, ruleset: RuleSet, tree: SourceTree, functions: set[str],
              options: dict[str, Any] | None = None) -> set[tuple[str, int, str]]:  # fmt: skip
    ids = {r.id for r in ruleset.rules if r.kind in REWRITING and r.match.function in functions}
    settings = {**_inline_options(ruleset), **(options or {})}
    plan = build_plan(EngineConfig(root, tree.path, ruleset, settings, jobs=1))
    return {(plan.relative(e.file), e.line, " ".join(e.replacement.split())) for e in plan.edits if e.rule in ids}


def hand_settings(hand: RuleSet, mined: RuleSet) -> dict[str, tuple[str, str]]:
    """Mined option -> (the hand option's value as source text, the hand option), for each mined option that is the
    same argument of the same function's rewrite as a hand rule's option (values as the hand rules run here)."""
    values = hand.resolve_options(_inline_options(hand))
    settings = {}
    for rule in mined.rules:
        hand_rule = _hand_rule(hand, rule.match.function or "")
        if not rule.options or hand_rule is None or hand_rule.kind not in REWRITING:
            continue
        for name, hand_name in aligned_options(rule.fix, rule.options, hand_rule).items():
            settings[name] = (_as_text(values[hand_name]), hand_name)
    return settings


def compare_on(root: Path, hand: RuleSet, mined: RuleSet, tree: SourceTree) -> list[Comparison]:
    """Plan `root` with both rule sets; compare the rewrites of every function one of them rewrites: at the mined
    defaults, then (when a mined option lines up with a hand option) with the mined options set to the hand's."""
    functions = {r.match.function or "" for rs in (hand, mined) for r in rs.rules if r.kind in REWRITING} - {""}
    by_hand = _rewrites(root, hand, tree, functions)
    comparisons = [Comparison(root, by_hand, _rewrites(root, mined, tree, functions))]
    settings = hand_settings(hand, mined)
    if settings:
        options = {name: value for name, (value, _) in settings.items()}
        comparisons.append(Comparison(root, by_hand, _rewrites(root, mined, tree, functions, options), settings))
    return comparisons
