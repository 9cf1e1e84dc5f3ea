"""Steps chain: `--from A --to B` runs every rules file whose step overlaps (A, B], in order, each on the previous
step's output; bumps that do not land on the files' endpoints say what no rules cover."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from migrate.paths import data_dir
from migrate.rewrite.apply import apply_plan
from migrate.rewrite.rules import RuleError, RuleSet, rule_files
from migrate.rewrite.steps import ChainPlan, StepInputs, plan_steps, select_steps
from migrate.sources import resolve
from tests.conftest import LOCALLLM

RULES = data_dir("rules")


def _fake(start: str, end: str) -> RuleSet:
    return RuleSet(Path(f"{start}-{end}.yaml"), start, end, [], {}, {})


FILES = [_fake("b100", "b200"), _fake("b200", "b300"), _fake("b400", "b500")]


def _shape(selection) -> list[tuple[str, str, str, bool]]:  # noqa: ANN001
    return [(s.label, s.start, s.end, s.partial) for s in selection.steps]


def test_exact_step() -> None:
    selection = select_steps("b100", "b200", FILES)
    assert _shape(selection) == [("b100 → b200", "b100", "b200", False)] and selection.uncovered == []


def test_two_steps_in_order_each_from_the_previous_end() -> None:
    selection = select_steps("b100", "b300", list(reversed(FILES[:2])))
    assert _shape(selection) == [("b100 → b200", "b100", "b200", False), ("b200 → b300", "b200", "b300", False)]


def test_a_bump_past_a_files_end_is_partial_and_the_rest_uncovered() -> None:
    selection = select_steps("b100", "b250", FILES)
    assert _shape(selection) == [("b100 → b200", "b100", "b200", False), ("b200 → b300", "b200", "b250", True)]
    assert selection.uncovered == []
    assert any("PARTIAL" in line for line in selection.coverage())
    gap = select_steps("b150", "b450", FILES)
    assert _shape(gap)[0] == ("b100 → b200", "b150", "b200", False)
    assert _shape(gap)[-1] == ("b400 → b500", "b300", "b450", True)  # its API diff starts where the last step ended
    assert gap.uncovered == [("b300", "b400")]
    assert any("NOT COVERED by rules: (b300, b400]" in line for line in gap.coverage())
    assert any("starts at b100, before b150" in line for line in gap.coverage())


def test_a_bump_beyond_every_file_says_so() -> None:
    selection = select_steps("b100", "b225", FILES[:1])
    assert _shape(selection) == [("b100 → b200", "b100", "b225", False)]
    assert selection.uncovered == [("b200", "b225")]
    nothing = select_steps("b600", "b700", FILES)
    assert nothing.steps == [] and nothing.uncovered == [("b600", "b700")]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [("b300", "b100", "later build"), ("notatag", "b7785", "no rules for notatag → b7785"), ("b1", "main", "main")],
)
def test_bad_bumps_are_refused(start: str, end: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        select_steps(start, end, FILES)


def test_overlapping_files_are_refused() -> None:
    with pytest.raises(RuleError, match="overlap"):
        select_steps("b100", "b300", [_fake("b100", "b200"), _fake("b150", "b300")])


def test_the_shipped_steps_chain() -> None:
    selection = select_steps("b5421", "b10361", rule_files())
    assert _shape(selection) == [("b5421 → b7785", "b5421", "b7785", False),
                                 ("b7785 → b10361", "b7785", "b10361", False)]  # fmt: skip


# --- real plans over the fixture (libclang; the trees of b5421, b7785 and b10361) -------------------------------------


def _inputs(src: Path, tmp_path: Path, **extra) -> StepInputs:  # noqa: ANN003
    return StepInputs(src=src, resolve=resolve, options={"error_function": "set_error"}, enabled={"kv-unified"},
                      **extra)  # fmt: skip


def test_b5421_to_b10361_plans_both_steps_on_each_others_output(tmp_path: Path) -> None:
    plan = plan_steps("b5421", "b10361", _inputs(LOCALLLM, tmp_path), scratch=tmp_path / "steps")
    assert isinstance(plan, ChainPlan)
    steps = {label for label, _ in plan.step_edits}
    assert steps == {"b5421 → b7785", "b7785 → b10361"}
    by_rule = {edit.rule: label for label, edit in plan.step_edits}
    assert by_rule["kv-self-clear"] == "b5421 → b7785" and by_rule["load-mode-mmap"] == "b7785 → b10361"
    (path, text), = ((p, d.decode()) for p, d in plan.new_contents().items())  # fmt: skip
    assert "llama_memory_clear(mem, false)" in text and "llama_kv_self_clear" not in text
    assert "model_params.load_mode    = (use_mmap && use_mlock) ? LLAMA_LOAD_MODE_MMAP_MLOCK" in text
    assert "use_mlock    = use_mlock;" not in text
    assert plan.actions == []
    data = plan.to_json()
    assert {e["step"] for e in data["edits"]} == steps
    assert [s["rules"] for s in data["steps"]] == ["b5421 → b7785", "b7785 → b10361"] and data["uncovered"] == []
    assert {a["rule"] for a in data["advisories"]} >= {"model-load-io-mode", "decode-error-detail"}
    assert "## Steps" in plan.api_section and "step b7785 → b10361 (b7785 → b10361)" in plan.api_section
    # apply writes the end result, all steps at once
    copy = tmp_path / "copy"
    shutil.copytree(LOCALLLM, copy)
    applied = plan_steps("b5421", "b10361", _inputs(copy, tmp_path), scratch=tmp_path / "steps2")
    result = apply_plan(applied, force=True, backup_root=tmp_path / "backups")
    assert [p.name for p in result.written] == [path.name]
    assert (copy / path.relative_to(LOCALLLM)).read_text() == text


def test_b5421_to_b7825_plans_with_the_first_steps_rules_and_says_what_is_not_covered(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES / "b5421-b7785.yaml", rules)  # the shipped b5421 → b7785 file alone: (b7785, b7825] uncovered
    plan = plan_steps("b5421", "b7825", _inputs(LOCALLLM, tmp_path), rule_files(rules), scratch=tmp_path / "s")
    assert isinstance(plan, ChainPlan) and plan.selection is not None
    assert plan.selection.uncovered == [("b7785", "b7825")]
    assert any("NOT COVERED by rules: (b7785, b7825]" in d for d in plan.decisions)
    assert {label for label, _ in plan.step_edits} == {"b5421 → b7785"} and len(plan.edits) == 19
    assert plan.actions == []  # b7825 and b7785 are both provided by b7836: the API diff has nothing more


def test_b5421_to_b7825_with_every_shipped_file_runs_the_next_step_partially(tmp_path: Path) -> None:
    plan = plan_steps("b5421", "b7825", _inputs(LOCALLLM, tmp_path), scratch=tmp_path / "s")
    assert isinstance(plan, ChainPlan) and plan.selection is not None
    second = plan.selection.steps[1]
    assert second.partial and second.ruleset.rules == [] and "load-mode-mmap (use_mmap unchanged at b7825)" in (
        second.left_out)  # fmt: skip
    assert "same llama.cpp tree" in second.note and second.plan is None
    assert "LLAMA_LOAD_MODE" not in next(iter(plan.new_contents().values())).decode()


def test_b5500_to_b7785_plans_with_the_b5421_rules(tmp_path: Path) -> None:
    plan = plan_steps("b5500", "b7785", _inputs(LOCALLLM, tmp_path), scratch=tmp_path / "s")
    assert isinstance(plan, ChainPlan)
    assert any("its file starts at b5421, before b5500" in d for d in plan.decisions)
    assert len(plan.edits) == 19 and plan.actions == []


def test_unknown_enable_or_option_across_steps_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="opt-in rules there are: flash-attn-auto, kv-unified"):
        plan_steps("b5421", "b10361", StepInputs(LOCALLLM, resolve, enabled={"nope"}))
    with pytest.raises(RuleError, match="unknown option 'nope'"):
        plan_steps("b5421", "b10361", StepInputs(LOCALLLM, resolve, options={"nope": 1}))


def test_cli_plan_b5421_to_b7825(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "migrate", "plan", str(LOCALLLM), "--from", "b5421", "--to", "b7825",
                           "--no-diff", "--report", str(tmp_path / "r.md"), "--json", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["from"] == "b5421" and data["to"] == "b7825"
    assert [s["rules"] for s in data["steps"]] == ["b5421 → b7785", "b7785 → b10361"]
    assert data["steps"][1]["partial"] is True
    report = (tmp_path / "r.md").read_text()
    assert "## Steps" in report and "PARTIAL" in report
