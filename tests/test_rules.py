"""Every rule's own test cases (rules/b5421-b7785.yaml), run through the real engine: a real libclang parse of
each snippet against the b5421 stand-in tree (b5415). `invalid` code must become its `output` (and list a
manual item when the case says so); `valid` code must be left alone with no manual action."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from migrate.paths import data_dir
from migrate.rewrite.engine import EngineConfig, build_plan
from migrate.rewrite.plan import ACTION, Plan
from migrate.rewrite.rules import KINDS, AdvisoryRule, RuleCase, RuleError, RuleSet, find_rules, load_rules
from migrate.sources import SourceTree

RULES_FILE = data_dir("rules") / "b5421-b7785.yaml"
RULESET = load_rules(RULES_FILE)


def _cases(kind: str) -> list[RuleCase]:
    return [case for rule in RULESET.rules for case in (rule.invalid if kind == "invalid" else rule.valid)]


def _ids(cases: list[RuleCase]) -> list[str]:
    return [f"{case.rule}:{case.name}" for case in cases]


def run_case(case: RuleCase, tree: SourceTree, tmp_path: Path, ruleset: RuleSet = RULESET) -> tuple[str, Plan]:
    """The snippet's text after the plan, and the plan."""
    prelude = ruleset.test_prelude.get(case.lang, "") if case.prelude else ""
    snippet = tmp_path / ("snippet.c" if case.lang == "c" else "snippet.cpp")
    snippet.write_text(prelude + case.code)
    plan = build_plan(EngineConfig(tmp_path, tree.path, ruleset, dict(case.options), set(case.enable)))
    after = plan.new_contents().get(snippet.resolve(), snippet.read_bytes())
    return after.decode(), plan


@pytest.mark.parametrize("case", _cases("invalid"), ids=_ids(_cases("invalid")))
def test_invalid_case_is_rewritten(case: RuleCase, old_tree: SourceTree, tmp_path: Path) -> None:
    after, plan = run_case(case, old_tree, tmp_path)
    prelude = RULESET.test_prelude.get(case.lang, "") if case.prelude else ""
    assert after == prelude + (case.output or "")
    fired = {rule for e in plan.edits for rule in e.rules} | {m.rule for m in plan.manual}
    assert case.rule in fired, f"rule {case.rule} did not fire; fired: {sorted(fired)}"
    if case.manual:
        assert any(m.rule == case.rule for m in plan.manual), "the case expects a manual item for its rule"


@pytest.mark.parametrize("case", _cases("valid"), ids=_ids(_cases("valid")))
def test_valid_case_is_left_alone(case: RuleCase, old_tree: SourceTree, tmp_path: Path) -> None:
    after, plan = run_case(case, old_tree, tmp_path)
    prelude = RULESET.test_prelude.get(case.lang, "") if case.prelude else ""
    assert after == prelude + case.code
    assert plan.edits == []
    assert [m for m in plan.manual if m.kind == ACTION] == []


def _advisory_cases(kind: str) -> list[tuple[AdvisoryRule, RuleCase]]:
    return [(a, case) for a in RULESET.advisories for case in (a.flagged if kind == "flagged" else a.quiet)]


# An advisory of this step watches calls the rules rewrite (the old memory calls), so its code is rewritten too:
# only what it reports is checked here, under its own id or that of the rule whose call it is about.
@pytest.mark.parametrize(("advisory", "case"), _advisory_cases("flagged"), ids=_ids([c for _, c in
                                                                                     _advisory_cases("flagged")]))
def test_advisory_flags_its_code(advisory: AdvisoryRule, case: RuleCase, old_tree: SourceTree, tmp_path: Path) -> None:
    _, plan = run_case(case, old_tree, tmp_path)
    assert advisory.reported_ids & {a.rule for a in plan.advisories}, plan.advisories


@pytest.mark.parametrize(("advisory", "case"), _advisory_cases("quiet"), ids=_ids([c for _, c in
                                                                                   _advisory_cases("quiet")]))
def test_advisory_stays_quiet(advisory: AdvisoryRule, case: RuleCase, old_tree: SourceTree, tmp_path: Path) -> None:
    _, plan = run_case(case, old_tree, tmp_path)
    assert not advisory.reported_ids & {a.rule for a in plan.advisories}, plan.advisories


def test_every_advisory_has_a_flagged_case() -> None:
    assert [a.id for a in RULESET.advisories if not a.flagged] == []


def test_every_rule_has_an_invalid_case() -> None:
    missing = [rule.id for rule in RULESET.rules if not rule.invalid]
    assert missing == []


def test_the_required_rules_are_there() -> None:
    ids = {rule.id for rule in RULESET.rules}
    for name in ("clear", "seq-rm", "seq-cp", "seq-keep", "seq-add", "seq-div", "seq-pos-max", "can-shift"):
        assert f"kv-self-{name}" in ids and f"kv-cache-{name}" in ids
    assert {"kv-self-seq-pos-min", "kv-self-defrag", "kv-self-update", "kv-self-n-tokens", "kv-self-used-cells"} <= ids
    assert {"flash-attn-type", "flash-attn-auto", "kv-unified", "decode-error-detail"} <= ids
    assert {"sampler-get-candidates-sort", "sampler-init-const-params"} <= ids
    opt_in = {rule.id for rule in RULESET.rules if rule.opt_in}
    assert opt_in == {"flash-attn-auto", "kv-unified"}


def test_find_rules_by_step_and_unknown_step() -> None:
    assert find_rules("b5421", "b7785").path == RULES_FILE
    with pytest.raises(RuleError, match="no rules for b1 → b2"):
        find_rules("b1", "b2")


def test_options_are_converted_and_checked() -> None:
    values = RULESET.resolve_options({"clear_data": "true", "error_message_arg": "1"})
    assert values["clear_data"] is True and values["error_message_arg"] == 1
    with pytest.raises(RuleError, match="unknown option"):
        RULESET.resolve_options({"no_such_option": "1"})
    with pytest.raises(RuleError, match="true or false"):
        RULESET.resolve_options({"clear_data": "maybe"})
    with pytest.raises(RuleError, match="no rule"):
        RULESET.active({"no-such-rule"})


def _write_rules(tmp_path: Path, rule: dict) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"migration": {"from": "b1", "to": "b2"}, "rules": [rule]}))
    return path


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"id": "x", "kind": "nonsense", "description": "d", "match": {"function": "f", "header": "h"}},
            "unknown kind",
        ),
        ({"id": "x", "kind": "memory_call", "description": "d", "match": {"function": "f", "header": "h"}}, "needs a"),
        ({"id": "x", "kind": "memory_call", "description": "d", "match": {"header": "h"}, "fix": "f()"}, "exactly one"),
        ({"id": "x", "kind": "memory_call", "match": {"function": "f", "header": "h"}, "fix": "f()"}, "description"),
        (
            {
                "id": "x",
                "kind": "memory_call",
                "description": "d",
                "match": {"function": "f", "header": "h"},
                "fix": "f({nope})",
            },
            "neither a known placeholder",
        ),  # fmt: skip
        ({"id": "x", "kind": "manual_call", "description": "d", "match": {"function": "f", "header": "h"}}, "guidance"),
    ],
)
def test_malformed_rules_are_refused(tmp_path: Path, rule: dict, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        load_rules(_write_rules(tmp_path, rule))


def test_every_kind_is_used_by_the_shipped_rules() -> None:
    assert {rule.kind for rule in RULESET.rules} == KINDS


def test_a_read_of_a_retyped_field_says_what_the_rule_notes(old_tree: SourceTree, tmp_path: Path) -> None:
    """The manual item of a read says the new field's values in the rule's words (params.read_note)."""
    [case] = [c for c in RULESET.by_id("flash-attn-type").invalid if c.manual]
    _, plan = run_case(case, old_tree, tmp_path)
    [item] = [m for m in plan.manual if m.rule == "flash-attn-type"]
    assert "at the target read `flash_attn_type` (an enum, AUTO = -1) instead." in item.message
