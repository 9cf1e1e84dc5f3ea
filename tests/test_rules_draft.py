"""`migrate rules draft --from b7785 --to b10361`: a draft that loads, whose renames pass their own generated cases,
and whose manual entries name every removed or changed API the fixtures use after the b5421 → b7785 step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from migrate.apidiff import diff, load_surface
from migrate.rewrite.apicheck import RULE_ID as API_RULE
from migrate.rewrite.apicheck import ApiTarget
from migrate.rewrite.engine import EngineConfig, build_plan
from migrate.rewrite.rules import RuleSet, load_rules
from migrate.rewrite.steps import StepInputs, plan_steps
from migrate.rulefiles import draft, render
from migrate.sources import resolve
from tests.conftest import REPO
from tests.test_rules import run_case


@pytest.fixture(scope="module")
def drafted(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    old, new = load_surface(resolve("b7785")), load_surface(resolve("b10361"))
    data, comments = draft(diff(old, new), old, new, "b7785", "b10361")
    path = tmp_path_factory.mktemp("draft") / "b7785-b10361.yaml"
    path.write_text(render(data, comments))
    return load_rules(path)


def test_the_draft_loads_with_renames_ready(drafted: RuleSet) -> None:
    renames = {r.match.function: r.fix for r in drafted.rules if r.kind != "manual_call"}
    assert renames["llama_apply_adapter_cvec"] == "llama_set_adapter_cvec({args[0]}, {rest})"
    assert renames["cpu_get_num_math"] == "common_cpu_get_num_math()"
    assert renames["get_model_endpoint"] == "common_get_model_endpoint()"
    manual = {r.match.function or r.match.field for r in drafted.rules if r.kind == "manual_call"}
    assert {"llama_set_adapter_lora", "llama_sampler_init_dry", "llama_model_params.use_mmap"} <= manual
    assert drafted.path.read_text().startswith("# DRAFT rules for llama.cpp b7785 → b10361")


def test_every_rename_passes_its_generated_case(drafted: RuleSet, tmp_path: Path) -> None:
    tree = resolve("b7785")
    renames = [r for r in drafted.rules if r.kind != "manual_call"]
    assert len(renames) >= 4
    for index, rule in enumerate(renames):
        case = rule.invalid[0]
        folder = tmp_path / str(index)
        folder.mkdir()
        after, plan = run_case(case, tree, folder, drafted)
        assert after == drafted.test_prelude["c++"] + (case.output or ""), rule.id
        assert rule.id in {r for e in plan.edits for r in e.rules}, rule.id


@pytest.mark.parametrize("fixture", ["localllm", "localllm-next", "textgen"])
def test_manual_entries_name_every_removed_api_the_migrated_fixtures_use(drafted: RuleSet, fixture: str,
                                                                           tmp_path: Path) -> None:  # fmt: skip
    """Step 1 (b5421 → b7785) on a copy, then the draft at b7836 with the API diff to b10361: every use of a changed
    declaration is named by a draft entry (no API-diff action is left uncovered)."""
    src = REPO / "fixtures" / fixture
    first = plan_steps("b5421", "b7785", StepInputs(src, resolve, options={"error_function": "set_error"}),
                       scratch=tmp_path / "s")  # fmt: skip
    copy = tmp_path / fixture
    subprocess.run(["cp", "-r", str(src), str(copy)], check=True)
    for path, data in first.new_contents().items():
        (copy / path.relative_to(src.resolve())).write_bytes(data)
    old, new = resolve("b7785"), resolve("b10361")
    plan = build_plan(EngineConfig(copy, old.path, drafted, api=ApiTarget(old, new)))
    assert [m for m in plan.actions if m.rule == API_RULE] == []
    if fixture == "localllm":
        named = {m.rule for m in plan.actions}
        assert {"llama-model-params-use-mmap", "llama-model-params-use-mlock"} <= named


def test_cli_rules_draft_writes_a_loadable_file(tmp_path: Path) -> None:
    out = tmp_path / "draft.yaml"
    proc = subprocess.run([sys.executable, "-m", "migrate", "rules", "draft", "--from", "b7785", "--to", "b10361",
                           "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and "rename(s) ready" in proc.stderr
    assert load_rules(out).from_version == "b7785"
