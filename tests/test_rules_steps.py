"""Every rules file's own cases, beyond b5421 → b7785 (which tests/test_rules.py runs): each snippet parsed with
libclang against the tree of the file's `from` build (its stand-in), through the real engine. `invalid` code must
become its `output`, `valid` code must stay, an advisory's `flagged` code must raise it and its `quiet` code not."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from migrate.paths import data_dir
from migrate.rewrite.plan import ACTION
from migrate.rewrite.rules import RuleCase, RuleSet, rule_files
from migrate.sources import SourceTree, resolve
from tests.test_rules import run_case

COVERED_ELSEWHERE = {"b5421-b7785.yaml"}  # tests/test_rules.py
RULESETS = [r for r in rule_files() if r.path.name not in COVERED_ELSEWHERE]


@cache
def _tree(version: str) -> SourceTree:
    return resolve(version)


def _cases(kind: str) -> list[tuple[RuleSet, RuleCase]]:
    found = []
    for ruleset in RULESETS:
        if kind in ("invalid", "valid"):
            for rule in ruleset.rules:
                found += [(ruleset, case) for case in (rule.invalid if kind == "invalid" else rule.valid)]
        else:
            for advisory in ruleset.advisories:
                found += [(ruleset, case) for case in (advisory.flagged if kind == "flagged" else advisory.quiet)]
    return found


def _ids(cases: list[tuple[RuleSet, RuleCase]]) -> list[str]:
    return [f"{ruleset.path.stem}:{case.rule}:{case.name}" for ruleset, case in cases]


def _prelude(ruleset: RuleSet, case: RuleCase) -> str:
    return ruleset.test_prelude.get(case.lang, "") if case.prelude else ""


@pytest.mark.parametrize(("ruleset", "case"), _cases("invalid"), ids=_ids(_cases("invalid")))
def test_invalid_case_is_rewritten(ruleset: RuleSet, case: RuleCase, tmp_path: Path) -> None:
    after, plan = run_case(case, _tree(ruleset.from_version), tmp_path, ruleset)
    assert after == _prelude(ruleset, case) + (case.output or "")
    fired = {rule for e in plan.edits for rule in e.rules} | {m.rule for m in plan.manual}
    assert case.rule in fired, f"rule {case.rule} did not fire; fired: {sorted(fired)}"
    if case.manual:
        assert any(m.rule == case.rule and m.kind == ACTION for m in plan.manual)
    else:
        assert not [m for m in plan.actions if m.rule == case.rule], plan.actions


@pytest.mark.parametrize(("ruleset", "case"), _cases("valid"), ids=_ids(_cases("valid")))
def test_valid_case_is_left_alone(ruleset: RuleSet, case: RuleCase, tmp_path: Path) -> None:
    after, plan = run_case(case, _tree(ruleset.from_version), tmp_path, ruleset)
    assert after == _prelude(ruleset, case) + case.code
    assert plan.edits == []
    assert [m for m in plan.manual if m.kind == ACTION] == []


@pytest.mark.parametrize(("ruleset", "case"), _cases("flagged"), ids=_ids(_cases("flagged")))
def test_advisory_flags_its_code(ruleset: RuleSet, case: RuleCase, tmp_path: Path) -> None:
    after, plan = run_case(case, _tree(ruleset.from_version), tmp_path, ruleset)
    assert after == _prelude(ruleset, case) + case.code  # advisories never rewrite
    assert case.rule in {a.rule for a in plan.advisories}, plan.advisories


@pytest.mark.parametrize(("ruleset", "case"), _cases("quiet"), ids=_ids(_cases("quiet")))
def test_advisory_stays_quiet(ruleset: RuleSet, case: RuleCase, tmp_path: Path) -> None:
    _, plan = run_case(case, _tree(ruleset.from_version), tmp_path, ruleset)
    assert case.rule not in {a.rule for a in plan.advisories}, plan.advisories


def test_every_rule_and_advisory_has_a_case() -> None:
    for ruleset in RULESETS:
        assert [r.id for r in ruleset.rules if not r.invalid] == [], ruleset.path
        assert [a.id for a in ruleset.advisories if not a.flagged] == [], ruleset.path


def test_the_fold_covers_the_fixtures_two_compile_errors() -> None:
    """After b5421 → b7785, fixtures/localllm fails at b10361 only on use_mmap and use_mlock: rules fold both."""
    ruleset = next(r for r in RULESETS if (r.from_version, r.to_version) == ("b7785", "b10361"))
    assert {"llama_model_params.use_mmap", "llama_model_params.use_mlock"} <= ruleset.covered()
    assert (data_dir("rules") / "b7785-b10361.yaml") == ruleset.path


def test_advisory_conditions_on_an_argument(tmp_path: Path) -> None:
    """`when: {argument: i, equals: v}`: only calls whose i-th argument is written as v are flagged."""
    import yaml

    from migrate.rewrite.rules import load_rules

    call = "llama_sampler * f(const llama_vocab * v) {{ return llama_sampler_init_dry(v, 4096, 1, 2, 2, {}, 0, 0); }}\n"
    advisory = {"id": "dry-window", "description": "d", "message": "m",
                "match": {"function": "llama_sampler_init_dry", "header": "llama.h"},
                "when": {"argument": 5, "equals": -1},
                "tests": {"flagged": [{"code": call.format("-1")}],
                          "quiet": [{"code": call.format("64")}]}}  # fmt: skip
    data = {"migration": {"from": "b7785", "to": "b10361"}, "test_prelude": {"c++": '#include "llama.h"\n'},
            "rules": [], "advisories": [advisory]}  # fmt: skip
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data))
    ruleset = load_rules(path)
    for case, expected in ((ruleset.advisories[0].flagged[0], True), (ruleset.advisories[0].quiet[0], False)):
        folder = tmp_path / str(expected)
        folder.mkdir()
        _, plan = run_case(case, _tree("b7785"), folder, ruleset)
        assert ("dry-window" in {a.rule for a in plan.advisories}) is expected
