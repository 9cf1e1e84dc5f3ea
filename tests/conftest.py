"""Shared, session-scoped real components: llama.cpp trees, the built fixture, the tiny model."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from migrate.build import BuildResult, build
from migrate.sources import SourceTree, resolve

REPO = Path(__file__).resolve().parent.parent
LOCALLLM = REPO / "fixtures" / "localllm"
LOCALLLM_HEADER = LOCALLLM / "custom_files" / "localllm_capi.h"


@pytest.fixture(scope="session")
def old_tree() -> SourceTree:
    return resolve("b5421")


@pytest.fixture(scope="session")
def new_tree() -> SourceTree:
    return resolve("b7785")


@pytest.fixture(scope="session")
def localllm_old_build(old_tree: SourceTree) -> BuildResult:
    """The fixture shim built against the source version (b5415 stand-in); llama.cpp libs from the cache."""
    result = build(LOCALLLM, old_tree)
    assert result.ok, "\n".join(map(str, result.errors)) or result.log[-3000:]
    return result


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from migrate.model import ensure_model

    return ensure_model("tiny", "b5421")


@pytest.fixture(scope="session")
def eog_model() -> Path:
    """The stop model (`migrate model --eog`): greedy decoding ends on EOS within a few tokens on some prompts."""
    return stop_model()


def fixture_verify(root: Path | None = None) -> dict[str, Any]:
    """The bundled fixture's own [verify] table (llama-migrate.toml), as `migrate verify`/`run` read it: checks that
    need a setting only the consumer gives (the oracle's fixed sampler values, such as the repeat penalty's window)
    run instead of skipping for want of it."""
    return tomllib.loads(((root or LOCALLLM) / "llama-migrate.toml").read_text())["verify"]


def stop_model() -> Path:
    from migrate.model import ensure_model

    return ensure_model("tiny", "b5421", eog=True)


def consumer(tmp_path: Path, files: dict[str, str]) -> Path:
    """A small consumer tree under tmp_path/consumer: {relative path: text}."""
    root = tmp_path / "consumer"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


# --- test tiers ----------------------------------------------------------------------------------------------------
# Every test gets one marker, decided from the fixtures it requests (their whole closure: `item.fixturenames`):
#   unit  — no llama.cpp tree; `scripts/test.sh --fast` runs these with an empty cache and no way to fetch one,
#           so a test that needs a tree and is not listed here fails there instead of passing slowly;
#   tree  — llama.cpp sources (parses, API diffs, plans), no build;
#   build — builds a shim or llama.cpp, or loads a model.
# Fixtures of test modules are named here too: a fixture's tier is what its body does, which its name cannot say.
TREE_FIXTURES = frozenset({
    "old_tree", "new_tree",  # this file
    "llama_tree",  # test_model: the cached tree's vocabulary
    "drafted",  # test_rules_draft: the API diff of two cached trees
    "migrated_localllm",  # test_rewrite: a plan and apply against the b5415 tree
    "next_migrated", "migrated_fixture",  # test_verify_consumers, test_verify_faults: migrate_copy plans
})  # fmt: skip
BUILD_FIXTURES = frozenset({
    "localllm_old_build", "tiny_model", "eog_model",  # this file
    "migrated_build", "variants",  # test_oracle: shims built at b7836 / b5415
    "textgen_old",  # test_verify_consumers
    "builds",  # test_trace: traced builds
    "gate_runs", "pipeline_runs",  # test_gate, test_triage_e2e, test_usertests: whole `migrate run`/`gate` runs
})  # fmt: skip
# Tests that reach a tree or a build without such a fixture (a command run end to end, a `resolve` in the body),
# by node id prefix (a module, or a module::test). Found by running the unit tier with an empty cache, and the tree
# tier with the cache's sources only and cmake/ninja replaced by commands that fail (docs/testing.md).
TREE_TESTS = (
    "tests/test_binding.py::test_run_on_a_tree_with_two_candidate_headers_asks_for_header_without_a_traceback",
    "tests/test_binding.py::test_verify_command_stops_before_any_check_when_the_header_cannot_be_bound",
    *(f"tests/test_hardening.py::test_{name}" for name in (
        "apply_says_which_kind_of_name_only_edit_it_refuses", "code_newer_than_from_is_reported_with_its_evidence",
        "decode_advisory_names_the_error_calls_it_saw", "decode_cases_follow_a_less_than_zero_check",
        "decode_cases_leave_out_codes_an_earlier_retry_took", "decode_check_that_already_tells_codes_apart_is_left",
        "decode_switch_goes_where_every_nonzero_code_can_arrive",
        "default_report_goes_to_the_cache_and_its_path_is_printed",
        "files_read_by_name_only_make_the_plan_incomplete", "no_command_prints_a_traceback_on_bad_input")),
    *(f"tests/test_hardening_inputs.py::test_{name}" for name in (
        "a_real_ctrl_c_is_one_line_and_130", "a_report_in_a_new_folder_is_still_written",
        "apply_failing_after_writing_says_it_wrote", "apply_writes_when_outputs_are_fine",
        "ctrl_c_during_apply_is_one_line_130_and_all_or_nothing",
        "run_and_gate_refuse_a_broken_adapter_and_a_text_model_before_building")),
    "tests/test_plan_apidiff.py",
    "tests/test_plan_completeness.py::test_plan_cli_exit_codes_and_summary",
    "tests/test_plan_today.py::test_localllm_today_next_plan_b7785_to_b10361_is_complete",
    "tests/test_plan_today.py::test_localllm_today_plan_is_complete_and_cross_references_its_internal",
    "tests/test_rewrite.py::test_empty_tree_and_missing_path", "tests/test_rewrite.py::test_non_utf8_file_is_refused",
    "tests/test_rules_draft.py::test_cli_rules_draft_writes_a_loadable_file",
    # the second step's cases parse against the b7836 tree's headers; the first step's need no tree
    *(f"tests/test_rules_steps.py::test_{name}[b7785-b10361" for name in (
        "invalid_case_is_rewritten", "valid_case_is_left_alone", "advisory_flags_its_code", "advisory_stays_quiet")),
    "tests/test_rules_steps.py::test_advisory_conditions_on_an_argument",
    "tests/test_rules_mine.py::test_mining_llama_cpp_b5421_to_b7785",  # skips, not fails, without the trees
    # plans b7836 -> b10068 with mined rules; skip, not fail, when either tree is not in the source cache
    "tests/test_mined_chain.py::test_a_bump_inside_a_carried_step_plans_with_mined_rules",
    "tests/test_mined_chain.py::test_a_gap_no_rules_file_covers_runs_as_a_mined_step",
    "tests/test_mined_chain.py::test_when_a_tree_is_missing_the_plan_says_so_and_goes_on",
    *(f"tests/test_sources.py::test_{name}" for name in (
        "cli_sources_prints_path_and_stand_in", "damaged_cache_entry_is_an_error_naming_the_fix",
        "exact_bundle_is_not_a_stand_in", "npm_stand_in_is_said_and_recorded", "stand_in_table")),
    *(f"tests/test_steps.py::test_{name}" for name in (
        "b5421_to_b10361_plans_both_steps_on_each_others_output",
        "b5421_to_b7825_plans_with_the_first_steps_rules_and_says_what_is_not_covered",
        "b5421_to_b7825_with_every_shipped_file_runs_the_next_step_partially",
        "b5500_to_b7785_plans_with_the_b5421_rules", "cli_plan_b5421_to_b7825")),
)  # fmt: skip
BUILD_TESTS = (
    "tests/test_build.py::test_unchanged_fixture_fails_at_target_only_on_old_api",
    "tests/test_build.py::test_failed_build_is_a_result_with_file_line_errors",
    *(f"tests/test_build_consumer.py::test_{name}" for name in (
        "today_fixture_builds_at_b5421_with_its_config_alone", "today_fixture_needs_its_build_flags",
        "today_next_builds_at_b7785_with_vendor_and_internals", "common_targets_usage_requirements_are_exported",
        "shim_including_common_chat_builds_at_b7836", "internals_come_after_the_consumers_own_headers",
        "includes_spelled_from_the_tree_root_still_found", "every_build_setting_applied_and_recorded",
        "each_build_setting_has_an_effect", "command_line_settings_add_to_the_config",
        "environment_cxxflags_still_honoured")),
    "tests/test_prebuilt.py::test_auto_builds_from_source_where_no_package_exists",
    "tests/test_mined_chain.py::test_run_builds_and_passes_the_checklist_with_the_mined_edit",  # a whole `migrate run`
    "tests/test_mutate.py::test_a_small_real_run_on_plain_c",
    "tests/test_mutate.py::test_a_real_run_kills_one_mutant_of_each_realistic_family",
    "tests/test_mutation_checks.py::test_a_real_run_kills_each_survivor_with_its_check",
    "tests/test_pipeline.py::test_run_on_the_bundled_fixture",
    "tests/test_prune_runs.py::test_the_small_throughput_model_only_where_a_threshold_decides",  # makes the model
    "tests/test_usertests.py::test_mutate_counts_a_mutant_killed_by_a_user_test",
    "tests/test_verify_consumers.py::test_other_api_shapes_pass_the_checklist_at_both_versions",
)
TIERS = ("unit", "tree", "build")


def tier(nodeid: str, fixturenames: set[str]) -> str:
    """The tier of one test: the heaviest of what its fixtures and the explicit lists say."""
    if fixturenames & BUILD_FIXTURES or nodeid.startswith(BUILD_TESTS):
        return "build"
    if fixturenames & TREE_FIXTURES or nodeid.startswith(TREE_TESTS):
        return "tree"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier(item.nodeid, set(getattr(item, "fixturenames", ()))))
