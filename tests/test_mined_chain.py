"""Mined rules in the steps chain (issue 23 item 2): a part of a bump no hand-written rules file covers as written
plans with rules mined from llama.cpp's own code (migrate/mine/chain.py, migrate/rewrite/steps.py).

The real pair: b7836 → b10068 (node-llama-cpp 3.15.1 → 3.19.1), inside the carried step b7785 → b10361. Between
them `common_sampler_types_from_names(names, allow_alt_names)` lost its second parameter, which no hand rule names
and llama.cpp's own common/ migrated (arg.cpp, common.cpp). No fixture calls it, so the consumer is a copy of
fixtures/localllm-today-next (code at b7785, passes the checklist at b7836 and b10068) whose sampler settings read
their sampler order back through it: a no-op at both releases (every name is canonical), one call the plan must
rewrite with the mined rule. Tests that need the trees skip, saying so, when b7836 / b10068 are not in the cache
(`migrate sources b10068` fetches it: an npm bundle).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from migrate.config import ConfigError, load_config
from migrate.mine.chain import MinedRules, MinedState, cache_path, merge, mined_rules, miner_code_files
from migrate.rewrite.rules import RuleSet, find_rules, load_rules
from migrate.sources import SourceTree
from tests.conftest import REPO

FIXTURE = REPO / "fixtures" / "localllm-today-next"
START, END = "b7836", "b10068"
MINED_RULE = "mined-common-sampler-types-from-names"
SAMPLER_ROUND_TRIP = """    // the sampler order as names, read back: the same samplers
    std::vector<std::string> sampler_names;
    for (const common_sampler_type type : sparams.samplers) {
        sampler_names.push_back(common_sampler_type_to_str(type));
    }
    sparams.samplers = common_sampler_types_from_names(sampler_names, true);
    return sparams;
}
"""


# --- no tree: merging, the outcomes without a pair, the cache key, the config key ---------------------------------


MINED_YAML = """migration: {from: b7836, to: b10068}
options:
  hoist_memory: {default: false, description: inline}
rules:
  - id: mined-cpu-get-num-math
    kind: call_rewrite
    description: mined rename
    match: {function: cpu_get_num_math, header: common.h}
    fix: common_cpu_get_num_math()
    mined: true
  - id: mined-common-sampler-types-from-names
    kind: call_rewrite
    description: mined drop
    match: {function: common_sampler_types_from_names, header: sampling.h}
    fix: common_sampler_types_from_names({args[0]})
    mined: true
"""


def _hand() -> RuleSet:
    return find_rules("b7785", "b10361")


def test_the_hand_rule_wins_where_both_exist(tmp_path: Path) -> None:
    (tmp_path / "mined.yaml").write_text(MINED_YAML)
    hand = _hand()
    merged, taken = merge(hand, load_rules(tmp_path / "mined.yaml"), {r.match.name for r in hand.rules})
    assert [r.id for r in taken] == [MINED_RULE]  # cpu_get_num_math: the hand rule `cpu-get-num-math` runs instead
    assert [r.id for r in merged.rules] == [r.id for r in hand.rules] + [MINED_RULE]
    assert merged.by_id("cpu-get-num-math").fix == hand.by_id("cpu-get-num-math").fix
    assert set(merged.options) == set(hand.options) | {"hoist_memory"} and merged.path == hand.path


MINED_OPTION_YAML = """migration: {from: b7836, to: b10068}
options:
  hoist_memory: {default: false, description: inline}
  clear_data: {default: true, description: a mined literal whose name a hand option has}
rules:
  - id: mined-common-sampler-types-from-names
    kind: call_rewrite
    description: mined literal
    match: {function: common_sampler_types_from_names, header: sampling.h}
    fix: common_sampler_types_from_names({args[0]}, {clear_data})
    options: [clear_data]
    mined: true
    tests:
      invalid:
        - options: {clear_data: false}
          code: |
            #include "sampling.h"
            void f(const std::vector<std::string> & names) { common_sampler_types_from_names(names, true); }
          output: |
            #include "sampling.h"
            void f(const std::vector<std::string> & names) { common_sampler_types_from_names(names, false); }
"""


MINED_FLAG_YAML = """migration: {from: b7836, to: b10068}
options:
  hoist_memory: {default: false, description: inline}
  common_sampler_types_from_names_flag:
    default: true
    description: a literal mined as an option (made up for the test)
    decisions: {true: "flag true: 3 uses", false: "flag false: 1 use"}
rules:
  - id: mined-common-sampler-types-from-names
    kind: call_rewrite
    description: mined, its literal an option
    match: {function: common_sampler_types_from_names, header: sampling.h}
    fix: common_sampler_types_from_names({args[0]}, {common_sampler_types_from_names_flag})
    options: [common_sampler_types_from_names_flag]
    mined: true
"""


def test_a_mined_option_named_like_a_hand_option_is_renamed_in_the_merge(tmp_path: Path) -> None:
    """A hand option of the same name means something else: the mined rule reads its own, renamed."""
    from dataclasses import replace

    (tmp_path / "mined.yaml").write_text(MINED_OPTION_YAML)
    hand = _hand()
    hand = replace(hand, options={**hand.options, "clear_data": load_rules(REPO / "rules" / "b5421-b7785.yaml")
                                  .options["clear_data"]})  # fmt: skip
    merged, (taken,) = merge(hand, load_rules(tmp_path / "mined.yaml"), {r.match.name for r in hand.rules})
    assert taken.options == ("mined_clear_data",)
    assert taken.fix == "common_sampler_types_from_names({args[0]}, {mined_clear_data})"
    assert [c.options for c in taken.invalid] == [{"mined_clear_data": False}]
    assert merged.options["clear_data"] is hand.options["clear_data"]  # the hand option stays as it is
    assert merged.options["mined_clear_data"].default is True


def _tree(tag: str, commit: str) -> SourceTree:
    return SourceTree(Path("/nonexistent") / tag, tag, tag, commit, "test")


def test_no_mined_rules_without_a_tree_or_between_one_tree_and_itself(tmp_path: Path) -> None:
    missing = mined_rules("b1", "b2", _tree("b1", "a" * 40), None, tmp_path, missing="b2: not in the cache")
    assert missing.state is MinedState.UNAVAILABLE and missing.ruleset is None
    assert missing.describe() == "mined rules for (b1, b2]: none (a tree is not available: b2: not in the cache)"
    same = mined_rules("b1", "b2", _tree("b1", "a" * 40), _tree("b2", "a" * 40), tmp_path)
    assert same.state is MinedState.SAME_TREE and "same llama.cpp tree" in same.describe()
    off = MinedRules(MinedState.OFF, "b1", "b2", why="--no-mined")
    assert off.describe() == "mined rules for (b1, b2]: turned off (--no-mined)"
    assert not list(tmp_path.rglob("*.yaml"))  # nothing mined, nothing cached


def test_the_cache_is_keyed_by_both_trees_and_the_miners_code(tmp_path: Path) -> None:
    one = cache_path(_tree("b1", "a" * 40), _tree("b2", "b" * 40), tmp_path)
    assert one.parent == tmp_path / "rules-mined" / "chain" and one.name.startswith("b1-aaaaaaaaaaaa_b2-bbbbbbbbbbbb_")
    assert cache_path(_tree("b1", "a" * 40), _tree("b2", "c" * 40), tmp_path) != one
    code = {p.relative_to(REPO).as_posix() for p in miner_code_files()}
    assert {"migrate/mine/chain.py", "migrate/mine/unify.py", "migrate/mine/corpus.py"} <= code
    assert any(name.startswith("migrate/apidiff/") for name in code)  # what the miner imports counts too


def test_config_mined_rules_is_a_boolean(tmp_path: Path) -> None:
    assert load_config(tmp_path).mined_rules is True
    (tmp_path / "llama-migrate.toml").write_text("mined_rules = false\n")
    assert load_config(tmp_path).mined_rules is False
    (tmp_path / "llama-migrate.toml").write_text('mined_rules = "false"\n')
    with pytest.raises(ConfigError, match="mined_rules"):
        load_config(tmp_path)


# --- the cached trees b7836 and b10068 -------------------------------------------------------------------------------


def _cached_pair() -> None:
    from migrate.sources import SourceCache

    cache = SourceCache()
    missing = [tag for tag in (START, END) if cache.lookup(tag) is None]
    if missing:
        pytest.skip(f"llama.cpp {', '.join(missing)} not in the source cache (`migrate sources {missing[-1]}` "
                    "fetches it); the mined chain is tested on b7836 → b10068")  # fmt: skip


def variant(tmp_path: Path) -> Path:
    """fixtures/localllm-today-next with its sampler order read back through common_sampler_types_from_names."""
    root = tmp_path / "localllm-today-next-samplers"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("build", "build-*", ".llama-migrate*"))
    capi = root / "custom_files" / "localllm_capi.cpp"
    text = capi.read_text()
    anchor = "    return sparams;\n}\n\nstatic std::string decode_failure_text"
    assert text.count(anchor) == 1, "fixtures/localllm-today-next changed: make_sampling_params's end not found"
    capi.write_text(text.replace(anchor, SAMPLER_ROUND_TRIP + "\nstatic std::string decode_failure_text"))
    return root


def _plan(src: Path, tmp_path: Path, mined: bool = True,
          options: dict[str, str] | None = None):  # type: ignore[no-untyped-def]  # fmt: skip
    """The plan of the variant b7836 → b10068, with its config's options and `options` over them."""
    from migrate.rewrite.steps import StepInputs, plan_steps
    from migrate.sources import resolve

    config = load_config(src)
    inputs = StepInputs(src=src, resolve=resolve, options={**config.options, **(options or {})},
                        enabled=set(config.enable),
                        flags=("-include", "filesystem"), mined=mined)  # fmt: skip
    return plan_steps(START, END, inputs, scratch=tmp_path / "steps")


def test_a_bump_inside_a_carried_step_plans_with_mined_rules(tmp_path: Path) -> None:
    """b7836 → b10068 lies inside b7785 → b10361: the step is partial, its hand rules for API changed by b10068 run,
    and the mined rules of (b7836, b10068] run for the API the hand file names nowhere; the edit is marked mined."""
    from migrate.rewrite.steps import ChainPlan

    _cached_pair()
    src = variant(tmp_path)
    plan = _plan(src, tmp_path)
    assert isinstance(plan, ChainPlan) and plan.selection is not None
    (step,) = plan.selection.steps
    assert step.partial and step.mined is not None and step.mined.state in (MinedState.MINED, MinedState.CACHED)
    assert MINED_RULE in step.mined_ids and "mined-cpu-get-num-math" not in step.mined_ids  # the hand rule wins
    (edit,) = [e for e in plan.edits if e.rule == MINED_RULE]
    assert edit.mined and edit.before == "common_sampler_types_from_names(sampler_names, true)"
    assert edit.replacement == "common_sampler_types_from_names(sampler_names)"
    assert all(not e.mined for e in plan.edits if e.rule != MINED_RULE)
    data = plan.to_json()
    assert [e["mined"] for e in data["edits"] if e["rule"] == MINED_RULE] == [True]
    step_json = data["steps"][0]["mined"]
    assert step_json["state"] in ("mined", "cached") and MINED_RULE in step_json["rules"]
    assert any("mined rules for (b7836, b10068]" in d for d in plan.decisions)
    assert f"`{MINED_RULE}` (mined)" in plan.api_section  # the plan's Steps section lists the edit as mined
    # a second plan reads the mined file from the cache
    again = _plan(src, tmp_path)
    assert again.selection is not None and again.selection.steps[0].mined.state is MinedState.CACHED
    assert [e.replacement for e in again.edits if e.mined] == [edit.replacement]
    # turned off: the call is left to the API diff's manual actions, as without mining
    off = _plan(src, tmp_path, mined=False)
    assert not any(e.mined for e in off.edits) and off.selection is not None
    assert off.selection.steps[0].mined.state is MinedState.OFF
    assert any(m.line == edit.line and "common_sampler_types_from_names" in m.message for m in off.actions)


def test_a_gap_no_rules_file_covers_runs_as_a_mined_step(tmp_path: Path) -> None:
    """With only the first hand file, (b7785, b10068] is covered by no file: it becomes a step of mined rules."""
    from migrate.rewrite.rules import rule_files
    from migrate.rewrite.steps import StepInputs, plan_steps
    from migrate.sources import resolve

    _cached_pair()
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(REPO / "rules" / "b5421-b7785.yaml", rules)
    src = variant(tmp_path)
    inputs = StepInputs(src=src, resolve=resolve, options={"error_function": "set_error"},
                        flags=("-include", "filesystem"))  # fmt: skip
    plan = plan_steps(START, END, inputs, rule_files(rules), scratch=tmp_path / "steps")
    assert plan.selection is not None and plan.selection.uncovered == []
    mined_step = plan.selection.steps[-1]
    assert mined_step.mined_only and mined_step.label == f"{START} → {END} (mined)"
    assert any(e.mined and e.rule == MINED_RULE for e in plan.edits)


CLEAR_YAML = """migration: {from: b5421, to: b7785}
options:
  hoist_memory: {default: false, description: inline}
  llama_memory_clear_data:
    default: true
    description: a literal mined as an option
    decisions:
      true: "mined value true: 11 of 13 uses"
      false: "mined value false: 2 of 13 uses"
rules:
  - id: mined-llama-kv-self-clear
    kind: memory_call
    description: mined, its literal an option
    match: {function: llama_kv_self_clear, header: llama.h}
    fix: "llama_memory_clear({mem}, {llama_memory_clear_data})"
    options: [llama_memory_clear_data]
    mined: true
"""


def test_a_mined_option_is_set_as_hand_options_are_and_the_plan_says_what_its_value_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """(b5421, b7785] with no hand file for it is a mined step; its file's option (a mined literal, here read from
    the mined-rules cache) takes --option / [options] like a hand option, checked once the mined file is known, and
    the plan's decisions say what the chosen value does. fixtures/textgen calls llama_kv_self_clear 3 times."""
    from migrate.mine import chain
    from migrate.rewrite.rules import RuleError, rule_files
    from migrate.rewrite.steps import StepInputs, plan_steps
    from migrate.sources import SourceError, resolve

    try:
        resolve("b5421"), resolve("b7785")
    except SourceError as exc:
        pytest.skip(f"llama.cpp b5421/b7785 not available here: {exc}")
    (tmp_path / "mined.yaml").write_text(CLEAR_YAML)
    monkeypatch.setattr(chain, "cache_path", lambda old, new, cache=None: tmp_path / "mined.yaml")
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(REPO / "rules" / "b7785-b10361.yaml", rules)  # nothing hand-written for (b5421, b7785]

    def plan(options: dict[str, str]):  # type: ignore[no-untyped-def]
        inputs = StepInputs(src=REPO / "fixtures" / "textgen", resolve=resolve, options=options)
        return plan_steps("b5421", "b7785", inputs, rule_files(rules), scratch=tmp_path / "steps")

    def clears(result) -> list[str]:  # type: ignore[no-untyped-def]
        return [e.replacement for e in result.edits if e.rule == "mined-llama-kv-self-clear" and e.mined]

    default = plan({})
    assert default.selection is not None and default.selection.steps[0].mined_only
    assert clears(default) == ["llama_memory_clear(llama_get_memory(ctx), true)"] * 3
    assert "(step b5421 → b7785 (mined)) mined value true: 11 of 13 uses" in default.decisions
    chosen = plan({"llama_memory_clear_data": "false"})  # as --option / [options] give it: text, converted
    assert clears(chosen) == ["llama_memory_clear(llama_get_memory(ctx), false)"] * 3
    said = [d for d in chosen.decisions if "mined value" in d]
    assert said == ["(step b5421 → b7785 (mined)) mined value false: 2 of 13 uses"]
    with pytest.raises(RuleError, match="unknown option 'llama_memory_clear_dat'.*llama_memory_clear_data"):
        plan({"llama_memory_clear_dat": "false"})  # a typo is still refused, once the mined file is known


def test_a_mined_option_in_a_partial_step_is_set_and_its_decision_shown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """In a partial step the mined rules join the hand file's (merge): a mined option is set through the step's
    options and the plan says what the chosen value does, as for the hand options. The mined file (read from the
    mined-rules cache) is written here: llama.cpp's own code between b7836 and b10068 gives no literal option."""
    from migrate.mine import chain

    _cached_pair()
    (tmp_path / "mined.yaml").write_text(MINED_FLAG_YAML)
    monkeypatch.setattr(chain, "cache_path", lambda old, new, cache=None: tmp_path / "mined.yaml")
    src = variant(tmp_path)
    for value, said in (("true", "flag true: 3 uses"), ("false", "flag false: 1 use")):
        plan = _plan(src, tmp_path, options={"common_sampler_types_from_names_flag": value})
        assert plan.selection is not None and plan.selection.steps[0].partial
        (edit,) = [e for e in plan.edits if e.rule == MINED_RULE]
        assert edit.mined and edit.replacement == f"common_sampler_types_from_names(sampler_names, {value})"
        assert [d for d in plan.decisions if "flag " in d] == [f"(step b7785 → b10361) {said}"]  # the partial step


def test_when_a_tree_is_missing_the_plan_says_so_and_goes_on(tmp_path: Path) -> None:
    """The b10068 tree cannot be resolved: no mined rules (the plan says why), the step still plans."""
    from migrate.rewrite.steps import StepInputs, plan_steps
    from migrate.sources import SourceError, resolve

    _cached_pair()

    def without_end(tag: str) -> SourceTree:
        if tag == END:
            raise SourceError(f"{END}: not available here (test)")
        return resolve(tag)

    inputs = StepInputs(src=variant(tmp_path), resolve=without_end, options={"error_function": "set_error"},
                        flags=("-include", "filesystem"))  # fmt: skip
    plan = plan_steps(START, END, inputs, scratch=tmp_path / "steps")
    assert plan.selection is not None and plan.selection.steps[0].mined.state is MinedState.UNAVAILABLE
    assert any(f"mined rules for ({START}, {END}]: none (a tree is not available: {END}: not available here" in d
               for d in plan.decisions)  # fmt: skip
    assert not any(e.mined for e in plan.edits)


def test_run_builds_and_passes_the_checklist_with_the_mined_edit(tmp_path: Path) -> None:
    """The issue's done-when: the bump plans with mined rules, builds at both releases and passes the checklist."""
    _cached_pair()
    src = variant(tmp_path)
    out = tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "migrate", "run", str(src), "--from", START, "--to", END,
                           "--llama-build", "auto", "--no-predict", "--quiet", "--out", str(tmp_path / "report"),
                           "--json", str(out)], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert out.is_file(), proc.stderr[-3000:]
    data = json.loads(out.read_text())
    mined = [e for e in data["plan"]["edits"] if e.get("mined")]
    assert [e["rule"] for e in mined] == [MINED_RULE], data["plan"]["edits"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    migrated = Path(data["migrated"]) / "custom_files" / "localllm_capi.cpp"
    assert "common_sampler_types_from_names(sampler_names);" in migrated.read_text()
    for role in ("old", "new"):  # the checklist on the original at b7836 and on the migrated copy at b10068
        counts = data["verification"]["counts"][role]
        assert counts["passed"] > 0 and counts["failed"] == counts["error"] == 0, (role, counts)
