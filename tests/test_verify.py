"""The verification harness itself: declarations from each llama.h, crash isolation, comparisons, outputs, CLI,
and the whole checklist on the fixture built at b5415 (every check passes; its time is a benchmark:
scripts/bench_checklist.py)."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cffi
import pytest

from migrate.build import BuildResult
from migrate.cli import main as migrate_main
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM, LOCALLLM_HEADER, fixture_verify, stop_model
from verify.checks import (
    CHECK_ORDER,
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    CheckResult,
    agreement,
    common_token_prefix,
    normalise,
    read_vectors,
)
from verify.cli import header_for, run_verification
from verify.differential import BOTH_FAIL, BOTH_PASS, FIXED, LOST, REGRESSION, classify, compare_trace
from verify.observe import closure, find_llama_tree, llama_declarations, parse_declarations
from verify.prompts import grow_to_tokens
from verify.report import RunReport, junit_xml, markdown_section
from verify.runner import interpret, run_checks
from verify.session import Options, Target
from verify.zygote import DISABLE_ENV as ZYGOTE_OFF

# --- declarations -------------------------------------------------------------------------------------------------

SYNTHETIC = """
struct llama_context;
typedef int32_t llama_pos;
typedef struct llama_thing { llama_pos pos; float * data; } llama_thing;
enum llama_mode { LLAMA_MODE_A = 0, LLAMA_MODE_B = 1 << 2, };
struct llama_thing llama_get_thing(const struct llama_context * ctx, llama_pos p);
void llama_uses_ggml(enum ggml_type type);
"""


def test_closure_pulls_typedefs_and_struct_bodies_and_refuses_foreign_types() -> None:
    decls = parse_declarations(SYNTHETIC)
    chosen, missing = closure(decls, ["llama_get_thing", "llama_uses_ggml", "llama_absent"])
    names = [d.name for d in chosen]
    assert names == ["llama_pos", "llama_thing", "llama_get_thing"]  # header order, dependencies included
    assert "ggml_type" in missing["llama_uses_ggml"]
    assert missing["llama_absent"] == "not declared in this llama.h"
    ffi = cffi.FFI()
    ffi.cdef("\n".join(d.text for d in chosen))
    assert [f for f, _ in ffi.typeof("struct llama_thing").fields] == ["pos", "data"]


def _perf_fields(tree: SourceTree) -> list[str]:
    text, _ = llama_declarations(tree.path)
    ffi = cffi.FFI()
    ffi.cdef(text)
    return [name for name, _ in ffi.typeof("struct llama_perf_context_data").fields]


def test_declarations_come_from_each_trees_own_llama_h(old_tree: SourceTree, new_tree: SourceTree) -> None:
    assert "n_reused" not in _perf_fields(old_tree)
    assert _perf_fields(new_tree)[-1] == "n_reused"  # b7836 grew the struct: retyping it would misread memory
    _, old_missing = llama_declarations(old_tree.path)
    _, new_missing = llama_declarations(new_tree.path)
    assert "llama_get_memory" in old_missing and "llama_memory_seq_pos_min" not in new_missing
    assert "llama_kv_self_seq_pos_max" in new_missing and "llama_kv_self_seq_pos_max" not in old_missing


def test_tree_is_found_from_the_build(localllm_old_build: BuildResult, old_tree: SourceTree) -> None:
    assert find_llama_tree(Path(localllm_old_build.library)) == old_tree.path
    assert header_for(Path(localllm_old_build.library)) == LOCALLLM_HEADER


def test_tokenizer_vectors_read_like_llama_cpp(old_tree: SourceTree) -> None:
    vectors = read_vectors(old_tree.path)
    assert len(vectors) == 46
    assert ("Hello world", [15043, 3186]) in vectors
    assert all(text != "" or tokens == [] for text, tokens in vectors)


# --- comparison helpers -----------------------------------------------------------------------------------------


def test_comparison_helpers() -> None:
    assert agreement("abcdef", "abcxyz") == {"equal": False, "common_prefix_chars": 3, "chars": [6, 6]}
    assert agreement("same", "same")["equal"]
    assert not agreement(None, None)["equal"]  # two failures are not a match
    assert normalise("  a  b ", "strip") == "a  b" and normalise("  a  b ", "whitespace") == "a b"
    assert common_token_prefix([[1, 5, 6, 7], [1, 5, 6, 8], [1, 5, 9]]) == 2
    assert common_token_prefix([[1, 5], [1, 5, 6]]) == 1  # every prompt keeps a token of its own
    assert grow_to_tokens(lambda text: len(text.split()) + 1, 10).count(" ") == 8  # 9 words + BOS = 10


def _trace(tokens: list[int], margins: list[float]) -> dict:
    return {"prompt_tokens": [1, 2], "tokens": tokens, "margins": margins, "runner_up": [0] * len(tokens),
            "pieces": ["x"] * len(tokens), "stopped": "max_tokens"}  # fmt: skip


def test_greedy_comparison_tells_near_tie_from_divergence() -> None:
    same = compare_trace("p", _trace([5, 6, 7], [1, 1, 1]), _trace([5, 6, 7], [1, 1, 1]), 0.05)
    assert same.verdict == "identical" and same.first_difference is None
    tie = compare_trace("p", _trace([5, 6, 7], [1, 0.01, 1]), _trace([5, 9, 7], [1, 0.02, 1]), 0.05)
    assert tie.verdict == "near-tie" and tie.first_difference == 1
    assert tie.old["margin"] == 0.01 and tie.new["token"] == 9
    real = compare_trace("p", _trace([5, 6, 7], [1, 2.0, 1]), _trace([5, 9, 7], [1, 1.5, 1]), 0.05)
    assert real.verdict == "divergence"
    shorter = compare_trace("p", _trace([5, 6], [1, 1]), _trace([5, 6, 7], [1, 1, 1]), 0.05)
    assert shorter.first_difference == 2 and shorter.old["token"] is None
    retokenized = compare_trace("p", _trace([5], [1]), {**_trace([5], [1]), "prompt_tokens": [1, 3]}, 0.05)
    assert retokenized.verdict == "not comparable" and retokenized.tokenized_differently  # typed, for the gate
    assert "tokenized_differently" not in retokenized.to_json() and not real.tokenized_differently


def test_classification_across_builds() -> None:
    def r(status: str) -> CheckResult:
        return CheckResult("x", status)

    assert classify(r(PASSED), r(PASSED)) == BOTH_PASS
    assert classify(r(PASSED), r(FAILED)) == REGRESSION
    assert classify(r(FAILED), r(PASSED)) == FIXED
    assert classify(r(FAILED), r(FAILED)) == BOTH_FAIL
    # passed on the old build and not verified on the new one is a finding, not "skipped on new"
    assert classify(r(PASSED), r(SKIPPED)) == LOST
    assert classify(r(PASSED), r(ERROR)) == LOST
    assert classify(r(SKIPPED), r(SKIPPED)) == "skipped on both"
    # a harness error is never the consumer's regression nor "failing on both"
    assert classify(r(FAILED), r(ERROR)) == "harness error on new"
    assert classify(r(ERROR), r(ERROR)) == "harness error on both"
    assert classify(r(ERROR), r(FAILED)) == "harness error on old"


# --- runner: what a dead child leaves behind -------------------------------------------------------------------


def test_interpret_reports_signal_hang_and_crash_after_check(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    crashed = interpret("c", "new", -6, "a\nGGML_ASSERT(x) failed\n", missing, 0.5, 60)
    assert crashed.status == FAILED and crashed.evidence["signal"] == "SIGABRT"
    assert "GGML_ASSERT" in crashed.evidence["stderr_tail"]
    hung = interpret("c", "new", None, "", missing, 60.0, 60)
    assert hung.status == FAILED and hung.message.startswith("hang")
    written = tmp_path / "r.json"
    written.write_text(json.dumps({"result": CheckResult("c", PASSED, {"k": 1}).to_json(), "closed": False}))
    late = interpret("c", "new", -11, "boom", written, 1.0, 60)
    assert late.status == FAILED and "while freeing" in late.message and late.evidence["k"] == 1


# --- reports ------------------------------------------------------------------------------------------------------


def _fake_report() -> RunReport:
    old = Target(Path("old.so"), Path("h.h"), Path("m.gguf"), "old")
    new = Target(Path("new.so"), Path("h.h"), Path("m.gguf"), "new")
    results = {
        "old": [CheckResult("generate", PASSED, {"text": "a"}, build="old"),
                CheckResult("memory_cleared", PASSED, build="old")],
        "new": [CheckResult("generate", PASSED, {"text": "a"}, build="new"),
                CheckResult("memory_cleared", FAILED, {"seq": 0}, "sequence 0 holds 69 cells", build="new"),
                CheckResult("throughput", SKIPPED, {}, "skipped: no perf", build="new")],
    }  # fmt: skip
    return RunReport([old, new], results, Options(), 3.0)


def test_junit_has_a_suite_per_build_and_a_case_per_check() -> None:
    root = ET.fromstring(junit_xml(_fake_report()))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["verify.old", "verify.new"]
    new_cases = {c.get("name"): c for c in suites[1].findall("testcase")}
    assert set(new_cases) == {"generate", "memory_cleared", "throughput"}
    assert new_cases["memory_cleared"].find("failure").get("message") == "sequence 0 holds 69 cells"
    assert new_cases["throughput"].find("skipped") is not None
    assert suites[1].get("failures") == "1" and suites[1].get("skipped") == "1"


def test_markdown_section_lists_failures() -> None:
    text = markdown_section(_fake_report())
    assert text.startswith("## Verification")
    assert "`memory_cleared`" in text and "sequence 0 holds 69 cells" in text and "### Failures" in text


# --- on the real build (b5415) ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def old_target(localllm_old_build: BuildResult, tiny_model: Path) -> Target:
    return Target(Path(localllm_old_build.library), LOCALLLM_HEADER, tiny_model, "old")


@pytest.mark.parametrize("zygote", ["forked", "started"])
def test_runner_isolates_aborts_segfaults_hangs_and_exceptions(old_target: Target, zygote: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # the same verdicts whether each check's process is forked from a zygote (the default) or started
    monkeypatch.setenv(ZYGOTE_OFF, "1" if zygote == "started" else "0")
    names = ["selftest_abort", "selftest_segfault", "selftest_hang", "selftest_raise", "selftest_skip",
             "selftest_crash_on_free", "selftest_crash_at_exit", "selftest_pass"]  # fmt: skip
    results = {r.name: r for r in run_checks(old_target, Options(timeout=8), names)}
    at_exit = results["selftest_crash_at_exit"]  # a C exit handler ran, and its crash is the check's
    assert at_exit.status == FAILED and "SIGABRT" in at_exit.evidence["exit_after_check"], at_exit
    assert results["selftest_abort"].evidence["signal"] == "SIGABRT"
    assert "GGML_ASSERT" in results["selftest_abort"].evidence["stderr_tail"]
    assert results["selftest_segfault"].evidence["signal"] == "SIGSEGV"
    assert results["selftest_hang"].message.startswith("hang") and results["selftest_hang"].seconds < 15
    assert "RuntimeError: boom" in results["selftest_raise"].message
    assert results["selftest_raise"].status == ERROR  # an exception in harness code: not the consumer's failure
    assert results["selftest_skip"].status == SKIPPED and "no GPU" in results["selftest_skip"].message
    assert results["selftest_crash_on_free"].status == FAILED
    assert results["selftest_pass"].status == PASSED  # the run went on after every crash
    assert all(r.status == FAILED for n, r in results.items()
               if n not in ("selftest_skip", "selftest_pass", "selftest_raise"))  # fmt: skip


def test_whole_checklist_passes_at_b5415(old_target: Target) -> None:
    # bound as `migrate verify` binds the fixture: with its own [verify] table (sampling_penalty_window needs the
    # window it fixes; without it that check is skipped, saying so)
    target = dataclasses.replace(old_target, verify=fixture_verify(), config_root=LOCALLLM)
    report = run_verification([target], Options(eog_model=str(stop_model())))
    results = report.results["old"]
    assert [r.name for r in results] == list(CHECK_ORDER)
    failed = {r.name: r.message for r in results if r.status != PASSED}
    assert not failed, failed
    print(f"\nwhole checklist on the tiny model at b5415: {report.seconds:.1f} s for {len(results)} checks")
    by_name = {r.name: r for r in results}
    # the observations really came from llama.cpp: the b5415 cache view and perf counters
    memory = by_name["memory_cleared"].evidence
    assert memory["memory_api"] == "llama_kv_cache_view"
    assert memory["2_short_after_long"]["memory"]["seqs"]["0"]["pos_min"] == 0
    assert by_name["shared_prefix_effective"].evidence["n_seq_max=4"]["perf"]["n_p_eval"] < 143


def test_differential_old_against_itself(old_target: Target) -> None:
    twin = Target(old_target.library, old_target.header, old_target.model, "new")
    names = ["generate", "generate_matches_reference", "memory_cleared", "throughput"]
    report = run_verification([old_target, twin], Options(), names)
    diff = report.differential
    assert diff is not None
    assert [c.classification for c in diff.comparisons] == [BOTH_PASS] * len(names)
    assert diff.greedy and all(g.verdict == "identical" for g in diff.greedy)
    assert diff.throughput["generate"]["old"]["tokens_per_s"] > 0
    assert diff.throughput["generate_parallel"]["new_over_old"] is not None


def test_cli_outputs_and_exit_codes(old_target: Target, tmp_path: Path) -> None:
    out = {k: tmp_path / f"v.{k}" for k in ("json", "junit", "markdown")}
    args = ["verify", "--lib", str(old_target.library), "--model", str(old_target.model),
            "--checks", "generate,error_invalid_input"]  # fmt: skip
    code = migrate_main(args + [f"--{k}={p}" for k, p in out.items()])
    assert code == 0
    data = json.loads(out["json"].read_text())
    assert [r["name"] for r in data["results"]["build"]] == ["generate", "error_invalid_input"]
    assert ET.parse(out["junit"]).getroot().find("testsuite").get("tests") == "2"
    assert "`error_invalid_input` | passed" in out["markdown"].read_text()
    assert migrate_main(["verify", "--lib", str(tmp_path / "none.so"), "--model", str(old_target.model)]) == 2
    assert migrate_main(args[:-1] + ["no_such_check"]) == 2
