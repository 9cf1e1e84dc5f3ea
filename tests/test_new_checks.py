"""The blind-spot checks (state across calls, stops, result order, sampling, context parameters) and the stop model
they need: the model's recipe changes nothing of the default model, and the checks pass on the real b5415 build
(their planted faults: tests/test_verify_faults.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from migrate import model
from migrate.build import BuildResult
from tests.conftest import LOCALLLM_HEADER
from verify.checks import CHECK_ORDER, PASSED, SKIPPED, order_problems
from verify.runner import run_checks
from verify.session import Options, Target

NEW_CHECKS = ["state_across_calls", "generate_stops_at_eog", "parallel_uneven_finish", "parallel_result_order",
              "generate_context_full", "sampling_top_k_disabled", "sampling_seed", "context_params",
              "frees_release_memory"]  # fmt: skip
STOP_CHECKS = ["generate_stops_at_eog", "parallel_uneven_finish", "parallel_result_order"]
N_VOCAB, EOS = 300, 2


@pytest.fixture(scope="module")
def vocab_with_eos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vocab") / "vocab.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_string("tokenizer.ggml.model", "llama")
    writer.add_key_value("tokenizer.ggml.tokens", [f"t{i}" for i in range(N_VOCAB)], GGUFValueType.ARRAY,
                         GGUFValueType.STRING)  # fmt: skip
    writer.add_uint32("tokenizer.ggml.eos_token_id", EOS)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


def test_new_checks_are_in_the_checklist() -> None:
    assert set(NEW_CHECKS) <= set(CHECK_ORDER)


def test_stop_option_leaves_the_default_model_alone(vocab_with_eos: Path, tmp_path: Path) -> None:
    tiny = model.MODEL_SIZES["tiny"]
    assert model.model_digest(vocab_with_eos, tiny) == model.model_digest(vocab_with_eos, tiny, eog=False)
    assert model.model_digest(vocab_with_eos, tiny) != model.model_digest(vocab_with_eos, tiny, eog=True)
    assert "-eog-" in model.model_path(tmp_path, vocab_with_eos, tiny, 42, eog=True).name
    assert "-eog-" not in model.model_path(tmp_path, vocab_with_eos, tiny, 42).name
    plain = GGUFReader(model.write_model(tmp_path / "plain.gguf", vocab_with_eos, tiny, 42))
    stop = GGUFReader(model.write_model(tmp_path / "stop.gguf", vocab_with_eos, tiny, 42, eog=True))
    a = {t.name: np.asarray(t.data) for t in plain.tensors}
    b = {t.name: np.asarray(t.data) for t in stop.tensors}
    changed = {name for name in a if not np.array_equal(a[name], b[name])}
    assert changed == {"token_embd.weight", "output.weight"}
    rows = np.flatnonzero(np.any(a["output.weight"] != b["output.weight"], axis=1))
    assert rows.tolist() == [EOS]  # only the EOS row of the output matrix
    leaning = np.flatnonzero(np.any(a["token_embd.weight"] != b["token_embd.weight"], axis=1))
    assert 0 < len(leaning) < N_VOCAB * 3 * model.EOG_RECIPE.share and EOS not in leaning


def test_order_problems_tell_a_misplaced_result_from_a_wrong_one() -> None:
    assert order_problems(["a", "b"], ["a", "b"]) == []
    assert order_problems(["a-and-more", None], ["a", "b"]) == []  # wrong or missing: other checks' concern
    assert order_problems(["b", "a"], ["a", "b"]) == ["prompt 0's result is prompt 1's output ('b')",
                                                      "prompt 1's result is prompt 0's output ('a')"]  # fmt: skip
    assert order_problems(["b", None, None], [None, "b", "c"], must_fail=(0,))[0].startswith("prompt 0 cannot run")


@pytest.fixture(scope="module")
def old_target(localllm_old_build: BuildResult, tiny_model: Path) -> Target:
    return Target(Path(localllm_old_build.library), LOCALLLM_HEADER, tiny_model, "old")


def test_new_checks_pass_at_b5415_with_evidence(old_target: Target, eog_model: Path) -> None:
    results = {r.name: r for r in run_checks(old_target, Options(eog_model=str(eog_model)), NEW_CHECKS)}
    assert {n: r.status for n, r in results.items()} == dict.fromkeys(NEW_CHECKS, PASSED), {
        n: r.message[:300] for n, r in results.items() if r.status != PASSED}
    stops = results["generate_stops_at_eog"].evidence["reference"]["stopped_after"]
    assert list(stops.values()) == [0, 2, 4, 8, None]  # EOS first (empty output) ... no EOS within 12 tokens
    assert results["parallel_uneven_finish"].evidence["reference"]["source"].startswith("libllama")
    full = results["generate_context_full"].evidence
    assert full["room"] == 4 and full["generate"]["text"] in full["reference"]["allowed"]
    params = results["context_params"].evidence
    assert params["n_ctx=512,n_seq_max=3,n_threads=2"]["n_threads_batch"] == 2
    seed = results["sampling_seed"].evidence
    assert seed["seed_first"] == seed["seed_fresh_context"] != seed["greedy"]
    assert {r for r, v in seed["varied"].items() if isinstance(v, dict)} == {"temperature", "top_k", "top_p"}
    assert params["n_threads=0"]["n_threads"] >= 1
    leaks = results["frees_release_memory"].evidence
    assert leaks["heap_bytes_at_start"] > 0
    windows = [v["heap_growth_per_window"] for v in leaks.values() if isinstance(v, dict) and "failed_calls" in v]
    assert len(windows) == 4 and all(len(w) == 3 for w in windows)
    shared = results_prefix(old_target)
    assert shared["n_seq_max=2"]["evaluated"] <= shared["n_seq_max=2"]["expected_with_sharing"] + 1


def results_prefix(target: Target) -> dict:
    (result,) = run_checks(target, Options(), ["shared_prefix_effective"])
    assert result.status == PASSED, result.message
    return result.evidence


MALLOC_DEBUG = Path("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")


def test_heap_environment_for_the_leak_check() -> None:
    from verify.checks import TCACHE_OFF, with_tunable
    from verify.runner import check_env

    assert with_tunable({}, TCACHE_OFF)["GLIBC_TUNABLES"] == TCACHE_OFF
    assert with_tunable({"GLIBC_TUNABLES": "a=1"}, TCACHE_OFF)["GLIBC_TUNABLES"] == f"a=1:{TCACHE_OFF}"
    # other checks: what the caller asked, and freed memory filled (verify/perturb.py) unless MALLOC_PERTURB_ is set
    assert check_env("generate", {"X": "1", "MALLOC_PERTURB_": "7"}) == {"X": "1", "MALLOC_PERTURB_": "7"}
    other = check_env("generate", {"X": "1"}) or {}
    assert other["X"] == "1" and ("libllama-migrate-perturb.so" in other.get("LD_PRELOAD", "")
                                  or other.get("MALLOC_PERTURB_") == "165")  # fmt: skip
    env = check_env("frees_release_memory", {"LD_PRELOAD": f"/x/libother.so:{MALLOC_DEBUG}", "MALLOC_PERTURB_": "9"})
    assert env is not None and env["LD_PRELOAD"] == "/x/libother.so" and env["MALLOC_PERTURB_"] == "0"
    assert TCACHE_OFF in env["GLIBC_TUNABLES"]


@pytest.mark.skipif(not MALLOC_DEBUG.is_file(), reason="glibc's malloc debug library is not installed here")
def test_leak_check_reads_the_heap_under_the_malloc_debug_preload(old_target: Target) -> None:
    # `migrate mutate` preloads the debug allocator, whose mallinfo2 reads zero: the check must not go blind there
    env = {"LD_PRELOAD": str(MALLOC_DEBUG), "MALLOC_CHECK_": "3", "MALLOC_PERTURB_": "165"}
    (result,) = run_checks(old_target, Options(), ["frees_release_memory"], env=env)
    assert result.status == PASSED, result.message
    assert result.evidence["heap_bytes_at_start"] > 0


def test_stop_checks_skip_without_a_stop_model(old_target: Target) -> None:
    results = run_checks(old_target, Options(), STOP_CHECKS)
    assert [r.status for r in results] == [SKIPPED] * len(STOP_CHECKS)
    assert all("--eog-model" in r.message for r in results)
