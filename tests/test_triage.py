"""Failures grouped by cause (verify/causes.py) and known failures as a ratchet (verify/baseline.py), on
constructed check results: the evidence shapes the runner and the checks really write (crash, contract break,
text pairs), values made up. The end-to-end runs on built fixture variants are in tests/test_triage_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import LOCALLLM
from verify.baseline import (
    BaselineError,
    KnownFailure,
    KnownState,
    baseline_entries,
    load_known,
    read_baseline,
    triage,
    write_baseline,
)
from verify.causes import CauseKind, Shape, abort_line, group, headline, shape, signature
from verify.checks import ALL_CHECKS, FAILED, PASSED, SKIPPED, CheckResult

SHIM_LINE = "custom_files/shim.cpp:931"
ASSERT_TAIL = ("load: printing all EOG tokens:\n/home/u/.cache/llama-migrate/src/b7836/src/llama-kv-cache.cpp:123: "
               "GGML_ASSERT(seq_id >= 0 && (size_t) seq_id < seq_to_stream.size()) failed\n"
               "/lib/libggml-base.so(+0x1a2b3) [0x7f00deadbeef]")  # fmt: skip


def failed(name: str, evidence: dict, message: str = "it failed") -> CheckResult:
    return CheckResult(name, FAILED, evidence, message)


def contract(clause: str = "positions-continue", where: str = SHIM_LINE) -> dict:
    return {"contract": {"contract": "b7785", "first_break": {
        "clause": clause, "consequence": "rejected", "call": "llama_decode(ctx, batch)", "fn": "llama_decode",
        "values": {"seq": 1, "pos": 7, "expected": 8}, "where": where, "check": "x", "index": 3}}}


def crash(tail: str = ASSERT_TAIL, signal: str = "SIGABRT") -> dict:
    return {"exit": f"killed by signal {signal}", "signal": signal, "stderr_tail": tail}


def isolation(single: str, parallel: str) -> dict:
    return {"n_ctx": 512, "prompts": [{"prompt": "a", "single": "same", "parallel": "same", "equal": True},
                                      {"prompt": "b", "single": single, "parallel": parallel, "equal": False}]}


# --- signatures --------------------------------------------------------------------------------------------------


def test_contract_break_groups_by_clause_and_consumer_line() -> None:
    causes = group([failed("a", contract()), failed("b", contract() | crash()), failed("c", contract(where="x.cpp:2")),
                    failed("d", contract(clause="seq-id-range"))])  # fmt: skip
    assert [(c.kind, c.checks) for c in causes] == [(CauseKind.CONTRACT, ["a", "b"]), (CauseKind.CONTRACT, ["c"]),
                                                    (CauseKind.CONTRACT, ["d"])]  # fmt: skip
    assert causes[0].id == f"contract:positions-continue@{SHIM_LINE}"
    assert causes[0].signature.where == SHIM_LINE
    assert "seq 1, pos 7, expected 8" in causes[0].signature.evidence


def test_crash_groups_by_signal_and_assertion_or_the_call_it_died_in() -> None:
    other_build = ASSERT_TAIL.replace("/home/u/.cache/llama-migrate/src/b7836/", "/tmp/x/").replace("dead", "f00d")
    traced = crash() | {"trace": {"died_in": {"call": "llama_memory_seq_rm", "where": "shim.cpp:40", "args": {}}}}
    causes = group([failed("a", crash()), failed("b", crash(other_build)), failed("c", crash(signal="SIGSEGV")),
                    failed("d", traced), failed("e", traced), failed("f", crash("nothing useful"))])  # fmt: skip
    assert [c.checks for c in causes] == [["a", "b"], ["c"], ["d", "e"], ["f"]]
    assert causes[0].id == ("crash:SIGABRT@llama-kv-cache.cpp:123: GGML_ASSERT(seq_id >= 0 && (size_t) seq_id < "
                            "seq_to_stream.size()) failed")  # fmt: skip
    assert causes[2].id == "crash:SIGABRT@llama_memory_seq_rm" and causes[2].signature.where == "shim.cpp:40"
    assert causes[3].id == "crash:SIGABRT@unknown"


def test_abort_line_takes_paths_and_addresses_out() -> None:
    assert abort_line("x\n/a/b/c.cpp:12: GGML_ASSERT(y) failed\n") == "c.cpp:12: GGML_ASSERT(y) failed"
    assert abort_line("terminate called after throwing an instance of 'std::out_of_range'") is not None
    assert abort_line("all fine") is None


def test_hang_and_setup_failures_group_by_what_they_share() -> None:
    hang = {"timeout_s": 60, "stderr_tail": ""}
    causes = group([failed("a", hang, "hang: no result after 60 s (killed)"), failed("b", hang),
                    failed("c", {"setup": "model load failed: /m.gguf"}), failed("d", {"setup": "model load failed: "
                                                                                         "/m.gguf"})])  # fmt: skip
    assert [(c.kind, c.checks) for c in causes] == [(CauseKind.HANG, ["a", "b"]), (CauseKind.SETUP, ["c", "d"])]


@pytest.mark.parametrize(("reference", "tested", "expected"), [
    (" Hello world", "Hello world", Shape.LEADING_WHITESPACE_MISSING),
    ("Hello world", " Hello world", Shape.LEADING_WHITESPACE_EXTRA),
    ("Hello world", "Hello world\n", Shape.TRAILING_WHITESPACE),
    (" Hello world", "Hello world ", Shape.EDGE_WHITESPACE),
    ("Hello world. Bye", "Hello world.", Shape.STOPS_EARLY),
    ("Hello world.", "Hello world. Bye now", Shape.RUNS_ON),
    ("Hello big world", "Hello small world", Shape.ONE_TOKEN),
    ("Hello big world", "Hello world", Shape.ONE_TOKEN),  # one token dropped
    ("Hello big wide world", "Hello small narrow world", Shape.OTHER),
    ("abc", "xyz qrs", Shape.OTHER),
])  # fmt: skip
def test_text_difference_shapes(reference: str, tested: str, expected: Shape) -> None:
    assert shape(reference, tested) == expected


def test_same_text_shape_is_one_cause_across_checks_and_evidence_layouts() -> None:
    """The R backend's case: the parallel path's text lacks the leading space the single path's has, seen by the
    isolation checks (single/parallel rows), a reference comparison (expected/got) and A-B-A (A1/A2)."""
    results = [failed("iso_a", isolation(" The cat", "The cat")), failed("iso_b", isolation(" A dog", "A dog")),
               failed("order", {"rows": [{"expected": " x y", "got": "x y", "equal": False}]}),
               failed("aba", {"A1": " one two", "A2": "one two"}),
               failed("other", isolation("The cat sat", "A dog ran off")),
               CheckResult("passing", PASSED, isolation(" The cat", "The cat"))]  # fmt: skip
    causes = group(results)
    assert [(c.id, c.checks) for c in causes] == [("text:leading-whitespace-missing", ["iso_a", "iso_b", "order",
                                                                                       "aba"]),
                                                  ("check:other", ["other"])]  # fmt: skip
    assert headline(5, causes) == "5 failing checks, 2 causes"
    assert headline(1, causes[1:]) == "1 failing check, 1 cause"


def test_a_text_outside_its_acceptable_set_is_shaped_against_the_nearest() -> None:
    """generate_context_full: libllama's decode allows a choice of endings; the one-slot parallel call's text lacks
    the leading space of both."""
    evidence = {"reference": {"allowed": [" rail", " rail付"]}, "generate": {"text": " rail"},
                "parallel": {"results": ["rail", None]}}  # fmt: skip
    sig = signature(failed("generate_context_full", evidence))
    assert sig.id == "text:leading-whitespace-missing"


def test_an_oracle_row_is_shaped_like_the_other_text_pairs() -> None:
    """sampling_seed's layout (verify/checks/oracle_cases.py rows): generate agrees with llama.cpp's sampler chain,
    generate_parallel's outputs lack the reference's leading space: the parallel path's cause, not the check's own."""
    def cases(*rows: tuple[str, str]) -> dict:
        return {"chain": ["top_k", "dist"], "values": {"seed": 1234},
                "cases": [{"prompt": "p", "reference": ref, "got": got, "stopped": "length"} for ref, got in rows]}

    evidence = {"prompts": ["a", "b"], "seed_first": [" x", " y"], "reference": cases((" x", " x"), (" y", " y")),
                "generate_parallel": [{"code": 0, "ok": True, "message": "", "results": ["x", "y"]}],
                "generate_parallel_reference": cases((" x", "x"), (" y", "y"))}  # fmt: skip
    causes = group([failed("sampling_seed", evidence), failed("iso", isolation(" The cat", "The cat"))])
    assert [(c.id, c.checks) for c in causes] == [("text:leading-whitespace-missing", ["sampling_seed", "iso"])]
    # the sampled texts differing otherwise stay the check's own cause
    evidence["generate_parallel_reference"] = cases((" x", " the cat sat"), (" y", " y"))
    assert signature(failed("sampling_seed", evidence)).id == "check:sampling_seed"
    # rows the check did not judge (assumed sampling values) name no cause, whatever their texts
    evidence["generate_parallel_reference"] = cases((" x", "x"), (" y", "y")) | {"not_judged": "min_p assumed"}
    assert signature(failed("sampling_seed", evidence)).id == "check:sampling_seed"


def test_a_contract_break_wins_over_the_text_it_caused() -> None:
    sig = signature(failed("iso", isolation(" The cat", "The cat") | contract()))
    assert sig.kind == CauseKind.CONTRACT


# --- known failures ---------------------------------------------------------------------------------------------


def known(check: str | None = None, cause: str | None = None) -> KnownFailure:
    return KnownFailure(check, cause, "issue #7", "[verify] known_failures")


def test_known_failure_failing_the_same_way_is_known_and_leaves_no_open_cause() -> None:
    new = [failed("a", crash()), failed("b", crash()), CheckResult("c", PASSED)]
    cause_id = signature(new[0]).id
    both = {"a": "failing on both", "b": "failing on both"}
    result = triage(new, [known("a", cause_id), known(cause=cause_id)], both)
    assert [v.state for v in result.verdicts] == [KnownState.KNOWN, KnownState.KNOWN]
    assert result.open_causes() == [] and len(result.known_causes()) == 1
    assert result.headline() == "2 failing checks, 1 cause (2 known)"


def test_known_failure_that_passes_now_is_fixed_and_one_failing_otherwise_is_a_finding() -> None:
    new = [CheckResult("a", PASSED), failed("b", contract()), failed("c", crash())]
    result = triage(new, [known("a"), known("b", "crash:SIGABRT@unknown"), known(cause="text:stops-early"),
                          known("d"), known("c")])  # fmt: skip
    assert [v.state for v in result.verdicts] == [KnownState.FIXED, KnownState.CHANGED, KnownState.FIXED,
                                                  KnownState.NOT_RUN, KnownState.KNOWN]  # fmt: skip
    assert [c.checks for c in result.open_causes()] == [["b"]]
    assert result.note("b") == (f"known failure (`b` cause `crash:SIGABRT@unknown`) now fails differently: was "
                                f"crash:SIGABRT@unknown, now contract:positions-continue@{SHIM_LINE}")  # fmt: skip
    assert [v.entry.check or v.entry.cause for v in result.fixed()] == ["a", "text:stops-early"]


def test_a_baseline_from_an_untraced_run_matches_the_traced_rerun() -> None:
    """Written from `migrate verify` (untraced: the crash), read by the gate, whose traced re-run adds the contract
    break before the crash: the same failure, so still known."""
    untraced = failed("q", crash())
    traced = failed("q", crash() | contract())
    assert signature(traced).kind == CauseKind.CONTRACT
    for entry in (known("q", signature(untraced).id), known(cause=signature(untraced).id), known("q", "check:q")):
        assert triage([traced], [entry], {"q": "failing on both"}).verdicts[0].state == KnownState.KNOWN, entry


def test_a_regression_is_never_baselined_away() -> None:
    new = [failed("a", crash()), failed("b", crash())]
    cause_id = signature(new[0]).id
    classes = {"a": "regression", "b": "failing on both"}
    result = triage(new, [known("a"), known(cause=cause_id)], classes)
    assert [v.state for v in result.verdicts] == [KnownState.REGRESSION, KnownState.KNOWN]
    assert [c.checks for c in result.open_causes()] == [["a", "b"]] and result.known_checks() == {"b"}
    assert "regression is never baselined" in result.note("a")
    only_regression = triage(new[:1], [known(cause=cause_id)], classes)
    assert only_regression.verdicts[0].state == KnownState.REGRESSION and only_regression.open_causes()


def test_skipped_known_failure_is_not_run() -> None:
    result = triage([CheckResult("a", SKIPPED, {}, "skipped: no GPU")], [known("a")])
    assert result.verdicts[0].state == KnownState.NOT_RUN and result.fixed() == []


# --- reading and writing --------------------------------------------------------------------------------------------


def test_config_entries_are_checked(tmp_path: Path) -> None:
    check = ALL_CHECKS[0]
    entries = load_known({"known_failures": [{"check": check, "reason": "r"}, {"cause": "check:x", "reason": "r"}]},
                         tmp_path, None, ALL_CHECKS)  # fmt: skip
    assert [(e.check, e.cause) for e in entries] == [(check, None), (None, "check:x")]
    for bad, said in [([{"check": check}], "has no reason"), ([{"reason": "r"}], "a check and/or a cause"),
                      ([{"check": "no_such_check", "reason": "r"}], "not in the checklist"),
                      ([{"check": check, "reason": "r", "why": "x"}], "must be a table"),
                      ({"check": check}, "must be a list"), ([{"check": check, "reason": ""}], "non-empty")]:
        with pytest.raises(BaselineError, match=said):
            load_known({"known_failures": bad}, tmp_path, None, ALL_CHECKS)
    with pytest.raises(BaselineError, match="no such baseline file"):
        load_known({"baseline": "missing.json"}, tmp_path, None, ALL_CHECKS)


def test_written_baseline_reads_back_without_regressions(tmp_path: Path) -> None:
    a, b = ALL_CHECKS[:2]
    new = [failed(a, crash(), "crashed: killed by signal SIGABRT"), failed(b, contract())]
    classes = {a: "failing on both", b: "regression"}
    path = tmp_path / "base" / "known.json"
    write_baseline(path, baseline_entries(triage(new, [], classes), classes), {"library": "libx.so"})
    data = json.loads(path.read_text())
    assert [e["check"] for e in data["known_failures"]] == [a]
    entries = read_baseline(path, ALL_CHECKS)
    assert entries[0].cause == signature(new[0]).id and "crashed: killed by signal SIGABRT" in entries[0].reason
    assert load_known({"baseline": "base/known.json"}, tmp_path, None, ALL_CHECKS) == entries
    (tmp_path / "not.json").write_text("{}")
    with pytest.raises(BaselineError, match="not a baseline file"):
        read_baseline(tmp_path / "not.json", ALL_CHECKS)


# --- the gate's findings -------------------------------------------------------------------------------------------


def gate_outcome(new: list[CheckResult], old_status: dict[str, str], known_entries: list[KnownFailure]) -> Any:
    """A run whose only findings are its checks: the differential of `new` against old statuses, triaged."""
    from migrate.pipeline import RunOutcome
    from verify.differential import CheckComparison, classify

    comparisons = [CheckComparison(r.name, classify(CheckResult(r.name, old_status.get(r.name, PASSED)), r),
                                   CheckResult(r.name, old_status.get(r.name, PASSED)), r) for r in new]  # fmt: skip
    result = triage(new, known_entries, {c.name: c.classification for c in comparisons})
    diff = SimpleNamespace(comparisons=comparisons, greedy=[], throughput={})
    builds = {role: SimpleNamespace(ok=True, errors=[]) for role in ("from", "to")}
    return RunOutcome(src=Path("/c"), migrated=Path("/m"), trees={}, plan=SimpleNamespace(actions=[]), builds=builds,
                      verification=SimpleNamespace(differential=diff, triage=result, devices=[]))  # fmt: skip


def test_the_gate_reports_one_finding_per_open_cause_and_fixed_entries_as_18() -> None:
    from migrate import gate

    new = [failed("q1", contract() | crash()), failed("q2", contract()), failed("q3", contract()),
           failed("seed", {}, "seed ignored"), CheckResult("aba", PASSED)]  # fmt: skip
    run = gate_outcome(new, {"q3": FAILED, "seed": FAILED}, [known("seed"), known("aba"), known("q3")])
    findings = gate.classify(run, gate.Thresholds())
    where = [(f.kind.code, f.where, f.checks) for f in findings]
    assert where == [(12, SHIM_LINE, ("q1", "q2")), (18, "aba", ("aba",))]  # q3 fails on both builds: known
    assert findings[0].cause == f"contract:positions-continue@{SHIM_LINE}"
    assert findings[0].message.startswith("2 checks: q1 (regression), q2 (regression): (positions-continue)")
    lines = gate.summary(findings, gate.Thresholds())
    assert lines[1].startswith(f"  12 check fails on the new build: 2 failing checks, 1 cause; first: {SHIM_LINE}: ")
    assert lines[2].startswith("  18 known failure fixed: remove it from the baseline: 1; first: aba: fixed: passes")
    section = gate.markdown_section(findings, gate.Thresholds(), triage=run.verification.triage)
    assert "Failures by cause: 4 failing checks, 2 causes (2 known)" in section
    data = gate.to_json(findings, gate.Thresholds())
    assert data["classes"][0]["findings"][0]["checks"] == ["q1", "q2"]


def test_every_failure_known_passes_the_gate_and_says_so() -> None:
    from migrate import gate

    run = gate_outcome([failed("seed", {}, "seed ignored"), CheckResult("aba", PASSED)], {"seed": FAILED},
                       [known("seed")])  # fmt: skip
    findings = gate.classify(run, gate.Thresholds())
    assert findings == []
    assert "1 check(s) pass on the new build, 1 known failure(s) failing the same way" in gate.summary(
        findings, gate.Thresholds(), run)[0]  # fmt: skip


def test_a_bad_known_failures_entry_is_a_usage_error_before_anything_is_built(tmp_path: Path) -> None:
    from migrate.config import load_config
    from migrate.pipeline import RunRequest, UsageError, known_failures

    (tmp_path / "llama-migrate.toml").write_text('[verify]\nknown_failures = [{ check = "nope", reason = "x" }]\n')
    with pytest.raises(UsageError, match="names check 'nope', which is not in the checklist"):
        known_failures(RunRequest(src=str(tmp_path)), tmp_path, load_config(tmp_path))
    with pytest.raises(UsageError, match="no such baseline file"):
        known_failures(RunRequest(known_failures=str(tmp_path / "missing.json")), tmp_path, load_config(LOCALLLM))
