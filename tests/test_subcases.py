"""A check that gets at what it measures past a crash it knows about (issue 25): sub-case checks, each part in its
own child (verify/checks/subcases.py), and shared_prefix_effective made of such parts.

The planted variant of fixtures/localllm has two defects of one real consumer's history: its parallel path decodes
every prompt in full instead of sharing the prefix, and it aborts when the prompts fill every slot (a slot's sequence
id reaching n_seq_max). The prefix check must report both: the re-decoding, measured on the parts with a sequence to
spare, and the abort of the parts that fill every sequence. The merge itself is tested without a build.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.build import BuildResult, build
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM_HEADER
from tests.test_oracle import variant_folder
from verify.checks import ERROR, FAILED, PASSED, SKIPPED, CheckResult, Verdict
from verify.checks.parallel import PREFIX_PARTS, prefix_prompts
from verify.checks.subcases import SUBCASES, SubcaseOutcome, Subcases, merge
from verify.faults import Fault
from verify.runner import run_checks
from verify.session import Options, Target

CHECK = "shared_prefix_effective"

# (a) a slot too many (sequence ids 1..n_seq_max) and the abort b7785's memory gives such an id (llama.cpp at b5415
# accepts it, so the abort is planted where the later release has it); (b) no prefix copied into the slots: every
# prompt decoded in full
PREFIX_REDECODED_AND_ABORT = Fault(
    "prefix_redecoded_abort_on_full_slots",
    "generate_parallel decodes every prompt in full (no shared prefix) and aborts when the prompts fill every slot",
    CHECK,
    ("b5421", "b7785"),
    (
        (r"int n_slots = n_seq_max > 1 \? n_seq_max - 1 : 1;", "int n_slots = n_seq_max > 1 ? n_seq_max : 1;"),
        (r"(slots\[s\]\.seq_id = first_seq \+ s;)", r"\1\n            GGML_ASSERT(slots[s].seq_id < n_seq_max);"),
        (r"llama_kv_self_seq_cp\(ctx, 0, slot\.seq_id, -1, -1\);\n\s*slot\.n_past = static_cast<int>\(prefix_len\);",
         "/* planted fault: prefix not shared, every prompt decoded in full */"),
    ),
)  # fmt: skip

# the parts with more sequences than prompts, and those whose prompts fill every sequence
SPARE = [k for k, (n_seq_max, kind) in PREFIX_PARTS.items() if n_seq_max > len(prefix_prompts(kind))]
FILLED = [k for k in PREFIX_PARTS if k not in SPARE]


# --- the merge, without a build -------------------------------------------------------------------------------------


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> str:
    def never(_s: object, _key: str) -> Verdict:
        raise AssertionError("the merge runs no part")

    monkeypatch.setitem(SUBCASES, "toy", Subcases(("spare", "full"), never, "the toy figure"))
    return "toy"


def measured(key: str, ok: bool) -> SubcaseOutcome:
    result = CheckResult(f"toy[{key}]", PASSED if ok else FAILED, {"figure": 3}, "" if ok else "figure 3 > 2",
                         1.0, "old", "figure 3")  # fmt: skip
    return SubcaseOutcome(key, result, True)


def crashed(key: str) -> SubcaseOutcome:
    tail = "loading...\nshim.cpp:12: GGML_ASSERT(seq_id < n_seq_max) failed\nbacktrace"
    evidence = {"exit": "killed by signal SIGABRT", "signal": "SIGABRT", "stderr_tail": tail}
    return SubcaseOutcome(key, CheckResult(f"toy[{key}]", FAILED, evidence, "crashed: killed by signal SIGABRT",
                                           0.5, "old"), False)  # fmt: skip


def skipped(key: str) -> SubcaseOutcome:
    return SubcaseOutcome(key, CheckResult(f"toy[{key}]", SKIPPED, {}, "skipped: no perf counters"), True)


def test_a_crash_in_one_part_leaves_the_others_measurement(toy: str) -> None:
    result = merge(toy, [measured("spare", False), crashed("full")])
    assert result.status == FAILED
    assert result.message == ("spare: figure 3 > 2; full: crashed: killed by signal SIGABRT "
                              "(shim.cpp:12: GGML_ASSERT(seq_id < n_seq_max) failed)")  # fmt: skip
    assert result.evidence["spare"]["figure"] == 3 and result.evidence["full"]["signal"] == "SIGABRT"
    # the crash at the top too, as a one-process check shows it: the triage groups the check by it
    assert result.evidence["signal"] == "SIGABRT" and result.evidence["ended_part"] == "full"
    assert "GGML_ASSERT" in result.evidence["stderr_tail"]
    assert result.seconds == 1.5 and result.build == "old"


def test_a_crash_fails_the_check_even_where_the_other_part_holds(toy: str) -> None:
    result = merge(toy, [measured("spare", True), crashed("full")])
    assert result.status == FAILED and "could not measure" not in result.message
    assert result.message.startswith("full: crashed")
    from verify.causes import CauseKind, group

    (cause,) = group([result])  # grouped by its crash, as before the parts had processes of their own
    assert cause.signature.kind == CauseKind.CRASH and "GGML_ASSERT(seq_id < n_seq_max)" in cause.id


def test_no_part_measured_says_so(toy: str) -> None:
    result = merge(toy, [crashed("spare"), crashed("full")])
    assert result.status == FAILED
    assert "could not measure the toy figure: spare: crashed: killed by signal SIGABRT (shim.cpp:12" in result.message


def test_skips_and_errors_are_never_a_pass(toy: str) -> None:
    assert merge(toy, [skipped("spare"), skipped("full")]).message == "skipped: no perf counters"
    partly = merge(toy, [measured("spare", True), skipped("full")])
    assert partly.status == SKIPPED and partly.message == "skipped: no perf counters (parts full)"
    harness = CheckResult("toy[full]", ERROR, {}, "harness error: KeyError")
    assert merge(toy, [measured("spare", True), SubcaseOutcome("full", harness, True)]).status == ERROR
    assert merge(toy, [measured("spare", True), measured("full", True)]).status == PASSED


def test_the_prefix_is_measured_with_a_sequence_to_spare_and_with_every_sequence_filled() -> None:
    assert set(SUBCASES[CHECK].keys) == set(PREFIX_PARTS)
    assert SPARE and FILLED, PREFIX_PARTS


# --- on real builds --------------------------------------------------------------------------------------------------


def prefix_result(library: Path, model: Path) -> CheckResult:
    (result,) = run_checks(Target(library, LOCALLLM_HEADER, model, "old"), Options(), [CHECK])
    return result


def test_unplanted_fixture_passes_every_part(localllm_old_build: BuildResult, tiny_model: Path) -> None:
    result = prefix_result(Path(localllm_old_build.library), tiny_model)
    assert result.status == PASSED, result.message
    assert {k: result.evidence[k]["part_status"] for k in PREFIX_PARTS} == dict.fromkeys(PREFIX_PARTS, PASSED)
    for key in PREFIX_PARTS:
        part = result.evidence[key]
        assert part["evaluated"] <= part["expected_with_sharing"] + 1 < part["without_sharing"], (key, part)


def test_redecoding_is_reported_beside_the_abort(old_tree: SourceTree, tiny_model: Path) -> None:
    built = build(variant_folder(PREFIX_REDECODED_AND_ABORT), old_tree)
    assert built.ok, [str(e) for e in built.errors] or built.log[-2000:]
    result = prefix_result(Path(built.library), tiny_model)
    assert result.status == FAILED, result.message
    for key in SPARE:  # measured where a sequence is to spare: every prompt decoded in full
        part = result.evidence[key]
        assert part["part_status"] == FAILED and part["evaluated"] >= part["without_sharing"], (key, part)
        assert f"{key}: {part['evaluated']} prompt tokens evaluated: all prompts in full" in result.message
    for key in FILLED:  # the abort where the prompts fill every sequence, with its signal and assert line
        part = result.evidence[key]
        assert part["signal"] == "SIGABRT", (key, part)
        assert f"{key}: crashed: killed by signal SIGABRT (" in result.message
    assert "GGML_ASSERT(slots[s].seq_id < n_seq_max)" in result.message
    assert "could not measure" not in result.message


def test_parts_in_one_process_merge_alike(localllm_old_build: BuildResult, tiny_model: Path) -> None:
    """Where parts get no child of their own (a traced run: its trace is one process's calls), they run one after
    the other in the check's process and merge into the same result."""
    from verify.checks import run_check
    from verify.session import Session, prepare

    target = Target(Path(localllm_old_build.library), LOCALLLM_HEADER, tiny_model, "old")
    session = Session(target, Options(), prepare(target))
    try:
        result = run_check(CHECK, session)
    finally:
        session.close()
    assert result.status == PASSED, result.message
    assert [k for k in result.evidence] == list(PREFIX_PARTS)
    assert all(result.evidence[k]["part_status"] == PASSED for k in PREFIX_PARTS)
