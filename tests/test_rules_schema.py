"""The rules-file schema: every shipped file loads, and a malformed one is refused with the file, the rule and the key
(no libclang, no llama.cpp tree: pure loading)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrate.rewrite.rules import KIND_ALIASES, KINDS, RuleError, load_rules, rule_files

GOOD_RULE: dict[str, Any] = {
    "id": "r1",
    "kind": "memory_call",
    "description": "d",
    "match": {"function": "llama_kv_self_clear", "header": "llama.h"},
    "fix": "llama_memory_clear({mem}, {clear_data})",
    "options": ["clear_data"],
    "tests": {"invalid": [{"code": "x", "output": "y", "options": {"clear_data": True}}], "valid": [{"code": "z"}]},
}
GOOD_FILE: dict[str, Any] = {
    "migration": {"from": "b1", "to": "b2"},
    "options": {"clear_data": {"default": False, "description": "d"}},
    "test_prelude": {"c++": '#include "llama.h"\n'},
    "rules": [GOOD_RULE],
}


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "step.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _with(change) -> dict[str, Any]:  # noqa: ANN001 - a function that edits the copy in place
    data = copy.deepcopy(GOOD_FILE)
    change(data)
    return data


def test_every_shipped_rules_file_loads() -> None:
    files = rule_files()
    assert len(files) >= 2
    assert [(r.from_version, r.to_version) for r in files][:2] == [("b5421", "b7785"), ("b7785", "b10361")]
    for ruleset in files:
        assert ruleset.rules, ruleset.path
        assert {rule.kind for rule in ruleset.rules} <= KINDS


def test_a_good_file_loads(tmp_path: Path) -> None:
    ruleset = load_rules(_write(tmp_path, GOOD_FILE))
    assert ruleset.by_id("r1").invalid[0].options == {"clear_data": True}


def _rule_key(key: str, value: Any):  # noqa: ANN202
    return lambda data: data["rules"][0].__setitem__(key, value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # unknown keys, with the close one suggested
        (_rule_key("opt-in", True), r"rule r1: unknown key 'opt-in' \(did you mean 'opt_in'\?\)"),
        (_rule_key("guidence", "x"), r"rule r1: unknown key 'guidence' \(did you mean 'guidance'\?\)"),
        (lambda d: d["rules"][0]["match"].__setitem__("fucntion", "f"), r"rule r1: match: unknown key 'fucntion'"),
        (lambda d: d.__setitem__("rule", []), r"step.yaml: unknown key 'rule' \(did you mean 'rules'\?\)"),
        (lambda d: d["options"]["clear_data"].__setitem__("defualt", 1), r"options.clear_data: unknown key 'defualt'"),
        (
            lambda d: d["rules"][0]["tests"]["invalid"][0].__setitem__("ouput", "y"),
            r"rule r1: tests.invalid\[1\]: unknown key 'ouput'",
        ),  # fmt: skip
        # wrong types
        (_rule_key("opt_in", "yes"), r"rule r1: key 'opt_in' must be true or false, got 'yes' \(str\)"),
        (_rule_key("options", "clear_data"), r"rule r1: key 'options' must be a list of strings"),
        (_rule_key("fix", ["a"]), r"rule r1: key 'fix' must be a string"),
        (_rule_key("match", "llama.h"), r"rule r1: key 'match' must be a mapping, got 'llama.h' \(str\)"),
        (
            lambda d: d["rules"][0]["tests"]["invalid"][0].__setitem__("manual", "true"),
            r"rule r1: tests.invalid\[1\]: key 'manual' must be true or false",
        ),  # fmt: skip
        (lambda d: d["migration"].__setitem__("to", 7785), r"migration: key 'to' must be a string"),
        # duplicates
        (
            lambda d: d["rules"].append(copy.deepcopy(GOOD_RULE)),
            r"step.yaml: rule r1: key 'id': 'r1' is used twice \(rules 1 and 2\)",
        ),  # fmt: skip
        # options and rules that do not exist
        (_rule_key("options", ["clear_dat"]), r"rule r1: key 'options': option 'clear_dat' is not declared"),
        (
            lambda d: d["rules"][0]["tests"]["invalid"][0].__setitem__("options", {"nope": 1}),
            r"rule r1: tests.invalid\[1\]: key 'options': option 'nope' does not exist",
        ),  # fmt: skip
        (
            lambda d: d["rules"][0]["tests"]["invalid"][0].__setitem__("enable", ["no-such-rule"]),
            r"rule r1: tests.invalid\[1\]: key 'enable': no rule 'no-such-rule'",
        ),  # fmt: skip
        # kinds and their params
        (_rule_key("kind", "memroy_call"), r"rule r1: key 'kind': unknown kind 'memroy_call'"),
        (_rule_key("params", {"member": "x"}), r"rule r1: key 'params': kind memory_call takes no params"),
        (
            _rule_key("match", {"function": "f", "header": "h", "when": "sometimes"}),
            r"rule r1: key 'match.when': 'sometimes' is not a condition kind memory_call knows",
        ),  # fmt: skip
        (_rule_key("action", "delete"), r"rule r1: key 'action': unknown action 'delete'"),
        (
            lambda d: d["rules"][0]["tests"]["valid"][0].__setitem__("output", "y"),
            r"rule r1: tests.valid\[1\]: key 'output' belongs to `invalid` cases only",
        ),  # fmt: skip
    ],
)
def test_malformed_files_name_file_rule_and_key(tmp_path: Path, change, message: str) -> None:  # noqa: ANN001
    path = _write(tmp_path, _with(change))
    with pytest.raises(RuleError, match=message) as caught:
        load_rules(path)
    assert str(caught.value).startswith(str(path))


FIELD_RULE: dict[str, Any] = {
    "id": "fold",
    "kind": "field_to_enum",
    "description": "d",
    "match": {"field": "llama_model_params.use_mmap", "header": "llama.h"},
    "params": {
        "member": "load_mode",
        "fold": {"use_mmap": True, "use_mlock": False},
        "values": [{"when": {"use_mmap": True}, "value": "MMAP"}, {"value": "NONE"}],
    },
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["params"].__setitem__("memebr", "x"), r"unknown key 'params.memebr' \(did you mean 'member'\?\)"),
        (lambda r: r["params"].__setitem__("fold", {"use_mmap": "yes"}), r"key 'params.fold.use_mmap' must be true"),
        (lambda r: r["match"].__setitem__("field", "llama_model_params.use_direct_io"), r"must name the matched field"),
        (lambda r: r["params"].pop("values"), r"key 'params.fold' needs params.values"),
        (
            lambda r: r["params"]["values"][0]["when"].__setitem__("use_direct_io", True),
            r"params.values\[1\]: key 'when.use_direct_io': not a field of params.fold",
        ),  # fmt: skip
        (lambda r: r["params"]["values"].pop(), r"the last row must have no 'when'"),
        (lambda r: r["params"].pop("fold"), r"needs params.true"),
    ],
)
def test_field_fold_params_are_checked(tmp_path: Path, change, message: str) -> None:  # noqa: ANN001
    rule = copy.deepcopy(FIELD_RULE)
    change(rule)
    data = {"migration": {"from": "b1", "to": "b2"}, "rules": [rule]}
    with pytest.raises(RuleError, match=r"rule fold: .*" + message):
        load_rules(_write(tmp_path, data))


def test_kind_aliases_load_as_their_handler(tmp_path: Path) -> None:
    data = {"migration": {"from": "b1", "to": "b2"}, "rules": [copy.deepcopy(FIELD_RULE)]}
    assert load_rules(_write(tmp_path, data)).rules[0].kind == KIND_ALIASES["field_to_enum"]


def test_advisories_are_checked(tmp_path: Path) -> None:
    advisory = {"id": "a1", "description": "d", "message": "m", "match": {"function": "f", "header": "llama.h"},
                "when": {"argument": 1, "equals": -1},
                "tests": {"flagged": [{"code": "x"}], "quiet": [{"code": "y"}]}}  # fmt: skip
    data = _with(lambda d: d.__setitem__("advisories", [advisory]))
    ruleset = load_rules(_write(tmp_path, data))
    assert ruleset.advisories[0].when == {"argument": 1, "equals": -1}
    assert [c.code for c in ruleset.advisories[0].flagged] == ["x"]
    bad = copy.deepcopy(advisory)
    bad["when"] = {"argumnet": 1}
    with pytest.raises(RuleError, match=r"advisory a1: when: unknown key 'argumnet' \(did you mean 'argument'\?\)"):
        load_rules(_write(tmp_path, _with(lambda d: d.__setitem__("advisories", [bad]))))
    clash = dict(advisory, id="r1")
    with pytest.raises(RuleError, match=r"advisory r1: key 'id': 'r1' is also a rule's id"):
        load_rules(_write(tmp_path, _with(lambda d: d.__setitem__("advisories", [clash]))))


SEQ_ADVISORY: dict[str, Any] = {
    "id": "a1",
    "description": "d",
    "match": [{"function": "llama_kv_self_clear", "header": "llama.h", "arguments": [1]},
              {"function": "g", "header": "common.h", "arguments": [3]}],
    "messages": [{"when": {"integer_at_least": 1}, "report_as": "rule", "message": "id {value} needs {count}"},
                 {"when": {"not_bounded_in_function": r"\bn_max\b"}, "once": "function", "message": "`{argument}`"}],
    "unless_enabled": ["r1"],
}  # fmt: skip


def test_an_advisory_over_several_calls_reports_as_their_rule(tmp_path: Path) -> None:
    ruleset = load_rules(_write(tmp_path, _with(lambda d: d.__setitem__("advisories", [SEQ_ADVISORY]))))
    advisory = ruleset.advisories[0]
    assert [m.rule for m in advisory.matches] == ["r1", None]  # the rule of the same function and header
    assert advisory.names == {"llama_kv_self_clear", "g"} and advisory.match.function == "llama_kv_self_clear"
    assert advisory.reported_ids == {"a1", "r1"}
    assert [(m.report_as, m.once) for m in advisory.messages] == [("rule", "line"), ("advisory", "function")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a["match"][0].__setitem__("argumnets", [1]), r"advisory a1: match\[1\]: unknown key 'argumnets'"),
        (lambda a: a["match"].append({"field": "s.m", "header": "llama.h"}), "mixes functions and fields"),
        (lambda a: a["messages"][0].__setitem__("report_as", "rules"), "key 'report_as' must be one of"),
        (lambda a: a["messages"][1].__setitem__("once", "file"), "key 'once' must be one of"),
        (lambda a: a["messages"][1]["when"].__setitem__("not_bounded_in_function", "("), "not a regular expression"),
        (lambda a: a["messages"][1].__setitem__("message", "{nope}"), r"uses \{nope\}"),
        (lambda a: a["messages"][0].pop("when"), "only the last row may have no 'when'"),
        (lambda a: a.__setitem__("unless_enabled", ["kv-unifed"]), "key 'unless_enabled': no rule 'kv-unifed'"),
        (lambda a: a.__setitem__("message", "m"), "exactly one of 'message' or 'messages'"),
        (lambda a: a["match"][1].pop("arguments"), r"key 'when.integer_at_least' reads an argument: say which"),
        (lambda a: a.__setitem__("when", {"argument": 1}), "the match entries already say their 'arguments'"),
        (lambda a: a.__setitem__("when", {"integers": {"3": [1]}}), "maps an argument index to a list of integers"),
    ],
)
def test_malformed_advisories_are_refused(tmp_path: Path, change, message: str) -> None:  # noqa: ANN001
    advisory = copy.deepcopy(SEQ_ADVISORY)
    change(advisory)
    with pytest.raises(RuleError, match=message):
        load_rules(_write(tmp_path, _with(lambda d: d.__setitem__("advisories", [advisory]))))


def test_report_as_rule_needs_a_rule_of_the_file(tmp_path: Path) -> None:
    advisory = {"id": "a1", "description": "d", "match": {"function": "f", "header": "llama.h"},
                "report_as": "rule", "message": "m"}  # fmt: skip
    with pytest.raises(RuleError, match="advisory a1: key 'report_as': no rule of this file rewrites"):
        load_rules(_write(tmp_path, _with(lambda d: d.__setitem__("advisories", [advisory]))))


def test_every_advisory_condition_is_evaluated() -> None:
    from migrate.rewrite import advisories
    from migrate.rewrite.rules import ADVISORY_CONDITIONS, SCHEMA

    assert set(ADVISORY_CONDITIONS) == set(SCHEMA["advisory_when"]) == set(advisories._CHECKS) | {"argument"}
