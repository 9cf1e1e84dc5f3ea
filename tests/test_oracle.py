"""Beyond the checklist (issue 25): llama.cpp's primitives as the oracle, generated inputs, every exported function.

One planted defect per mechanism, each in a copy of fixtures/localllm built at b5415 (the b5421 stand-in), each
reported by the mechanism meant for it with its input: the oracle's fixed cases (parse_special ignored by tokenize,
a seed not passed to the sampler), generated inputs (a prompt list one longer than the slots loses its last result:
shrunk), every exported function old vs new (a chat template one byte short over 200 bytes). The unfaulted build
passes all of them. The Hypothesis machinery and the old-vs-new pairing are also tested on their own (no build).
"""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from migrate.build import BuildResult, build
from migrate.paths import cache_root
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM, LOCALLLM_HEADER
from verify import exported
from verify.checks import FAILED, PASSED, SKIPPED, CheckResult, checklist
from verify.differential import run_differential
from verify.driver import Sampling
from verify.faults import FAULTS, ORACLE_FAULTS, Fault, make_variant, migrate_copy
from verify.generated import Budget, run_property
from verify.reference import (
    COMMON_FIELDS,
    COMMON_ORDER,
    Reference,
    ReferenceConfig,
    ReferenceConfigError,
    common_defaults,
)
from verify.runner import run_checks
from verify.session import Options, Target

ORACLE_CHECKS = ["tokenize_detokenize", "sampling_seed", "generated_inputs", "exported_functions"]
GENERATED = 20  # inputs per operation: enough to reach a prompt list of n_seq_max prompts (found at ~10 here)
VERIFY_TABLE = tomllib.loads((LOCALLLM / "llama-migrate.toml").read_text())["verify"]


def target(library: Path, model: Path, label: str) -> Target:
    return Target(library, LOCALLLM_HEADER, model, label, verify=VERIFY_TABLE, config_root=LOCALLLM)


def run(library: Path, model: Path, names: list[str], label: str, generated: int = 0) -> dict[str, CheckResult]:
    results = run_checks(target(library, model, label), Options(timeout=120, generated=generated), names)
    return {r.name: r for r in results}


def variant_folder(fault: Fault) -> Path:
    """A variant's copy at a path named by what it contains (fixture files and the fault's edits): the shim cache is
    keyed by source paths, so a later session finds the build made here instead of compiling it again."""
    digest = hashlib.sha256(repr(fault.edits).encode())
    for path in sorted(p for p in LOCALLLM.rglob("*") if p.is_file() and "build" not in p.parts):
        digest.update(str(path.relative_to(LOCALLLM)).encode() + path.read_bytes())
    folder = cache_root() / "test-variants" / f"{fault.key}-{digest.hexdigest()[:12]}" / "localllm"
    if not (folder / "custom_files").is_dir():
        if folder.exists():
            shutil.rmtree(folder)
        make_variant(LOCALLLM, folder, fault)
    return folder


@pytest.fixture(scope="module")
def migrated_build(new_tree: SourceTree) -> Path:
    """The fixture migrated b5421 -> b7785 (default rules, no kv_unified) and built at b7836, at a path named by the
    fixture's contents (a later session reuses the shim)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in LOCALLLM.rglob("*") if p.is_file() and "build" not in p.parts):
        digest.update(str(path.relative_to(LOCALLLM)).encode() + path.read_bytes())
    folder = cache_root() / "test-variants" / f"migrated-{digest.hexdigest()[:12]}" / "localllm"
    if not (folder / "custom_files").is_dir():
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        migrate_copy(LOCALLLM, folder)
    result = build(folder, new_tree)
    assert result.ok, [str(e) for e in result.errors] or result.log[-2000:]
    return Path(result.library)


@pytest.fixture(scope="module")
def variants(old_tree: SourceTree) -> dict[str, Path]:
    built: dict[str, Path] = {}
    for key in ("tokenize_ignores_parse_special", "parallel_loses_last_result", "chat_template_one_byte_short",
                "seed_ignored"):  # fmt: skip
        result: BuildResult = build(variant_folder(ORACLE_FAULTS.get(key) or FAULTS[key]), old_tree)
        assert result.ok, [str(e) for e in result.errors] or result.log[-2000:]
        built[key] = Path(result.library)
    return built


# --- without a build -----------------------------------------------------------------------------------------------


def test_property_failure_is_shrunk_and_reported_with_its_input() -> None:
    from hypothesis import strategies as st

    def check(example: dict[str, Any]) -> Any:
        from verify.generated import Finding

        items = example["items"]
        return Finding("toy", example, len(items), items, "more than 3 items") if len(items) > 3 else None

    run = run_property("toy", st.fixed_dictionaries({"items": st.lists(st.integers(0, 1000))}), check,
                       Budget(examples=50))  # fmt: skip
    assert run.finding is not None
    assert run.finding.input == {"items": [0, 0, 0, 0]}  # the smallest failing input
    again = run_property("toy", st.fixed_dictionaries({"items": st.lists(st.integers(0, 1000))}), check,
                         Budget(examples=50))  # fmt: skip
    assert again.finding is not None and again.examples == run.examples  # derandomized: the same draws


def test_shrink_budget_keeps_the_smallest_failure_found() -> None:
    from hypothesis import strategies as st

    from verify.generated import Finding

    def check(example: dict[str, Any]) -> Any:
        return Finding("toy", example, None, None, "big") if example["n"] > 10 else None

    run = run_property("toy", st.fixed_dictionaries({"n": st.integers(0, 10**6)}), check,
                       Budget(examples=50, shrink_calls=0))  # fmt: skip
    assert run.finding is not None and run.finding.input["n"] > 10  # the first failure found, not shrunk further


def test_generated_inputs_join_the_checklist_when_asked() -> None:
    assert "generated_inputs" not in checklist(0) and "exported_functions" in checklist(0)
    assert checklist(0, 5)[-1] == "generated_inputs"


def test_reference_config_is_checked() -> None:
    assert ReferenceConfig.from_table(None).order == COMMON_ORDER
    narrowed = ReferenceConfig.from_table({"sampled": False, "fixed": {"min_p": 0}})
    assert narrowed.fixed == {"min_p": 0.0} and not narrowed.sampled
    for bad in ({"parse": True}, {"order": ["top_k", "mirostat"]}, {"fixed": {"typical": 1}}, {"sampled": "no"}):
        with pytest.raises(ReferenceConfigError):
            ReferenceConfig.from_table(bad)


def test_a_sampled_comparison_with_an_assumed_value_is_not_judged() -> None:
    """A chain role the API does not take and config does not fix (its value common's default, a guess) makes the
    sampled comparison a report, not a verdict; fixing it, or greedy sampling, makes it judged again."""
    reference = Reference.__new__(Reference)  # no library: only the config and common's defaults are read here
    reference.defaults = {role: default for role, (_, default) in COMMON_FIELDS.items()}
    taken = {"temperature", "top_k", "top_p", "repeat_penalty", "seed", "max_tokens"}
    sampled = Sampling(temperature=0.7, top_k=20, top_p=0.9, seed=1234)
    reference.config = ReferenceConfig()
    why = reference.comparable(sampled, taken)
    assert why.startswith("not judged: the API does not take min_p (llama.cpp common's default 0.05")
    assert "set [verify.reference] fixed.min_p" in why and "repeat_last_n" not in why  # penalty 1: window unread
    assert "repeat_last_n" in reference.not_judged(replace(sampled, repeat_penalty=1.5), taken)
    assert reference.comparable(replace(sampled, temperature=0.0), taken) == ""
    reference.config = ReferenceConfig(fixed={"min_p": 0.0})
    assert reference.comparable(sampled, taken) == ""


def test_common_defaults_are_read_from_the_tree(old_tree: SourceTree, new_tree: SourceTree) -> None:
    for tree in (old_tree, new_tree):
        defaults = common_defaults(tree.path)
        assert defaults["min_p"] == pytest.approx(0.05) and defaults["repeat_last_n"] == 64, defaults


def test_exported_calls_pair_by_function_and_inputs() -> None:
    def calls(result: str) -> dict[str, Any]:
        return {"calls": [{"key": "f(x=1)", "returned": 0, "outs": {"text_out": result}},
                          {"key": "g()", "returned": 1, "outs": {}}]}  # fmt: skip

    assert exported.compare(calls("abc"), calls("abc")) == []
    (difference,) = exported.compare(calls("abc"), calls("ab"))
    assert difference.call == "f(x=1)"
    assert difference.old == {"text_out": "abc"} and difference.new == {"text_out": "ab"}


# --- on real builds ------------------------------------------------------------------------------------------------


def test_unfaulted_build_passes_every_oracle(localllm_old_build: BuildResult, tiny_model: Path) -> None:
    results = run(Path(localllm_old_build.library), tiny_model, ORACLE_CHECKS, "b5415", GENERATED)
    assert {n: r.status for n, r in results.items()} == dict.fromkeys(ORACLE_CHECKS, PASSED), \
        {n: r.message[:300] for n, r in results.items()}
    properties = results["generated_inputs"].evidence["properties"]
    assert [p["prop"] for p in properties] == ["tokenize", "detokenize", "generate", "generate_parallel"]
    assert all(p["examples"] >= GENERATED for p in properties), properties
    calls = results["exported_functions"].evidence["calls"]
    assert {c["function"] for c in calls} == {"localllm_model_load_safe", "localllm_apply_chat_template",
                                              "localllm_token_is_eog"}  # fmt: skip


def test_migrated_build_passes_every_oracle_and_agrees_old_vs_new(localllm_old_build: BuildResult,
                                                                  migrated_build: Path, tiny_model: Path) -> None:
    """At b7836 too (n_ctx padded per sequence, an abort on a batch over n_batch): the reference's answers hold, and
    the exported functions' results are the original's at b5415."""
    old = target(Path(localllm_old_build.library), tiny_model, "old")
    new = target(migrated_build, tiny_model, "new")
    report = run_differential(old, new, Options(timeout=120, generated=GENERATED), ORACLE_CHECKS)
    statuses = {c.name: (c.old.status, c.new.status) for c in report.comparisons}
    assert statuses == dict.fromkeys(ORACLE_CHECKS, (PASSED, PASSED)), \
        {c.name: c.new.message[:300] for c in report.comparisons}
    exported_new = next(c.new for c in report.comparisons if c.name == "exported_functions")
    assert exported_new.evidence["compared_with"] == "old" and exported_new.evidence["differences"] == []


def test_generated_inputs_skip_unless_asked(localllm_old_build: BuildResult, tiny_model: Path) -> None:
    result = run(Path(localllm_old_build.library), tiny_model, ["generated_inputs"], "b5415")["generated_inputs"]
    assert result.status == SKIPPED and "--generated N" in result.message


def test_oracle_catches_parse_special_ignored(variants: dict[str, Path], tiny_model: Path) -> None:
    result = run(variants["tokenize_ignores_parse_special"], tiny_model, ["tokenize_detokenize"], "parse-special")
    check = result["tokenize_detokenize"]
    assert check.status == FAILED
    assert "tokenize('<s>Hello</s>', add_special=True)" in check.message  # the input
    assert "llama_tokenize (parse_special=True) gives [1, 1, 15043, 2]" in check.message  # the reference's answer


def test_oracle_catches_seed_not_passed(variants: dict[str, Path], tiny_model: Path) -> None:
    check = run(variants["seed_ignored"], tiny_model, ["sampling_seed"], "seed-ignored")["sampling_seed"]
    assert check.status == FAILED
    assert "where llama.cpp's sampler chain gives" in check.message, check.message
    assert check.evidence["reference"]["values"]["seed"] == 1234


def test_generated_inputs_catch_last_result_lost(variants: dict[str, Path], tiny_model: Path) -> None:
    results = run(variants["parallel_loses_last_result"], tiny_model, ["generated_inputs"], "last-lost", GENERATED)
    check = results["generated_inputs"]
    assert check.status == FAILED, check.message
    found = {p["prop"]: p["finding"] for p in check.evidence["properties"]}
    assert found["tokenize"] is None and found["detokenize"] is None and found["generate"] is None
    finding = found["generate_parallel"]
    # shrunk: the fewest slots (n_seq_max 2: one slot beside the prefix sequence), one prompt more than slots
    assert finding["input"]["n_seq_max"] == 2 and finding["input"]["n_prompts"] == 2, finding
    assert finding["observed"][-1] == "" and finding["reference"][-1], finding  # the last result lost
    assert "shrunk input" in check.message and "reference" in check.message


def test_exported_functions_catch_one_byte_short(localllm_old_build: BuildResult, variants: dict[str, Path],
                                                 tiny_model: Path) -> None:  # fmt: skip
    old = target(Path(localllm_old_build.library), tiny_model, "old")
    new = target(variants["chat_template_one_byte_short"], tiny_model, "new")
    report = run_differential(old, new, Options(timeout=120), ["exported_functions"])
    (comparison,) = report.comparisons
    assert comparison.old.status == PASSED, comparison.old.message
    assert comparison.new.status == FAILED, comparison.new.message
    differences = comparison.new.evidence["differences"]
    assert differences and all("localllm_apply_chat_template" in d["call"] for d in differences)
    calls = {c["key"]: c for c in comparison.old.evidence["calls"]}
    for d in differences:  # only results over 200 bytes differ, each one byte short (the chat templates end in \n)
        old_text = calls[d["call"]]["outs"]["result_out"].encode()
        new_text = next(c for c in comparison.new.evidence["calls"] if c["key"] == d["call"])["outs"]["result_out"]
        assert len(old_text) > 200 and new_text.encode() == old_text[:-1], d
    short = [c for c in calls.values() if c["function"] == "localllm_apply_chat_template" and c["returned"] == 0
             and len(c["outs"]["result_out"].encode()) <= 200]  # fmt: skip
    assert short and all(c["key"] not in {d["call"] for d in differences} for c in short)
