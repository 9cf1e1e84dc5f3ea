"""The run-time contract as data (contracts/b7785.yaml): it loads and validates strictly, and every clause's own
cases come out as they say — `violates` traces break the clause with the values given, `holds` traces do not —
like the rules' valid/invalid cases. Pure Python: no build, no model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from verify.contract import (
    BREAKS,
    Assume,
    Case,
    ContractError,
    check_case,
    check_events,
    find_contract,
    group,
    load_contract,
    require_contract,
)
from verify.trace import Call, Trace, events

CONTRACT = require_contract("b7785")
CASES = [case for clause in CONTRACT.clauses for case in clause.cases]


def _id(case: Case) -> str:
    return f"{case.clause}:{'violates' if case.violates else 'holds'}:{case.name}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_clause_case(case: Case) -> None:
    ok, found = check_case(CONTRACT, case)
    assert ok, (case.values, [v.to_json() for v in found])


def test_the_required_clauses_are_there() -> None:
    ids = {c.id for c in CONTRACT.clauses}
    assert {"seq-id-range", "batch-seq-id-range", "seq-cp-partial", "positions-continue", "per-sequence-capacity",
            "memory-clear-data"} <= ids  # fmt: skip
    for clause in CONTRACT.clauses:
        assert clause.why and clause.condition and clause.source and clause.constrains
        assert any(c.violates for c in clause.cases) and any(not c.violates for c in clause.cases), clause.id
        if clause.breaks:
            assert clause.remedy, clause.id


def test_found_by_version_and_stand_in() -> None:
    assert find_contract("b7836").version == "b7785"
    assert find_contract("b5421") is None
    with pytest.raises(ContractError, match="no run-time contract for llama.cpp b1"):
        require_contract("b1")


def _write(tmp_path: Path, mutate) -> Path:  # noqa: ANN001
    data = yaml.safe_load(CONTRACT.path.read_text())
    mutate(data)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["clauses"][0].update(severity="high"), r"unknown key\(s\) severity"),
        (lambda d: d.update(extra=1), r"unknown key\(s\) extra"),
        (lambda d: d["clauses"][0].update(consequence="explodes"), "consequence must be one of"),
        (lambda d: d["clauses"][0].update(check="nope"), "check 'nope' is not a predicate"),
        (lambda d: d["clauses"][0].pop("why"), r"missing key\(s\) why"),
        (lambda d: d["clauses"][0]["cases"].update(holds=[]), "at least one case"),
        (lambda d: d["clauses"][0]["cases"]["holds"][0]["trace"].append({"op": "seq_rm", "sq": 1}),
         r"unknown key\(s\) sq"),
        (lambda d: d["clauses"][1].update(id=d["clauses"][0]["id"]), "given twice"),
        (lambda d: d["constants"].update(max_seq=-1), "a positive integer"),
    ],
    ids=["clause key", "top key", "consequence", "predicate", "missing why", "no holds case", "event key",
         "duplicate id", "constant"],
)
def test_invalid_contract_is_refused(tmp_path: Path, mutate, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ContractError, match=message):
        load_contract(_write(tmp_path, mutate))


def test_a_case_that_does_not_hold_fails(tmp_path: Path) -> None:
    """The cases test something: a `holds` case that breaks its clause is reported as not holding."""
    def mutate(d: dict) -> None:
        d["clauses"][0]["cases"]["holds"][0]["trace"][1]["seq"] = 9

    contract = load_contract(_write(tmp_path, mutate))
    case = next(c for c in contract.clauses[0].cases if not c.violates)
    ok, found = check_case(contract, case)
    assert not ok and found[0].values["seq_id"] == 9


def _call(i: int, fn: str, args: dict, ret=None, where: str = "shim.cpp:1") -> Call:  # noqa: ANN001
    return Call(i, fn, args, 0, True, ret, {}, None, where)


def test_old_and_new_calls_replay_alike() -> None:
    """llama_kv_self_seq_rm(ctx, ...) at b5421 and llama_memory_seq_rm(mem, ...) at b7785 are the same operation;
    a memory handle is mapped back to the context it came from."""
    ctx = {"ctx": "0x1"}
    created = Call(1, "llama_init_from_model", {"n_ctx": 512, "n_seq_max": 2}, 0, True, None, {"ctx": "0x1"})
    old = Trace("lib", 1, [created, _call(2, "llama_kv_self_seq_rm", ctx | {"seq": 2, "p0": 0, "p1": -1}, 1,
                                         "a.cpp:7")])  # fmt: skip
    memory = Call(2, "llama_get_memory", ctx, 0, True, None, {"mem": "0x9"})
    new = Trace("lib", 1, [created, memory, _call(3, "llama_memory_seq_rm", {"mem": "0x9", "seq": 2, "p0": 0,
                                                                             "p1": -1}, 1, "a.cpp:7")])  # fmt: skip
    for trace in (old, new):
        found = check_events(CONTRACT, events(trace, "generate_parallel"))
        assert [(v.clause, v.where, v.values["seq_id"], v.check) for v in found] == [
            ("seq-id-range", "a.cpp:7", 2, "generate_parallel")]
    assert check_events(CONTRACT, events(old), Assume(kv_unified=True)) == []


def test_violations_group_by_clause_and_place() -> None:
    ctx = {"ctx": "0x1"}
    created = Call(1, "llama_init_from_model", {"n_ctx": 512, "n_seq_max": 1}, 0, True, None, {"ctx": "0x1"})
    calls = [created] + [_call(i, "llama_kv_self_seq_keep", ctx | {"seq": 1}, None, "a.cpp:3") for i in (2, 3, 4)]
    groups = group(check_events(CONTRACT, events(Trace("lib", 1, calls), "c")))
    assert [(g.clause, g.where, g.count, g.checks) for g in groups] == [("seq-id-range", "a.cpp:3", 3, ["c"])]
    assert groups[0].consequence in BREAKS
