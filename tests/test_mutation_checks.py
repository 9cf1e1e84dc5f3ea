"""The checks written to kill the mutation survivors of fixtures/localllm (docs/mutation.md): the model variants
they run on (verify/variants.py), their mechanisms (address space limited, graph nodes budgeted), and a real
`migrate mutate` run in which each kills its survivor (and so passes on the unmutated build first)."""

from __future__ import annotations

import fnmatch
import json
import os
import resource
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from migrate import model
from migrate.cli import main as migrate_main
from verify import mutate, variants
from verify.checks import CHECK_ORDER
from verify.checks.resources import OOM_HEADROOM, _NodeBudget, address_space_limited

REPO = Path(__file__).resolve().parents[1]
BOS, EOS = 1, 2
WORDS = [f"▁{chr(97 + i // 26)}{chr(97 + i % 26)}word" for i in range(200)]  # whole lowercase words, 4+ letters


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A llama-style vocabulary with BOS, EOS, the cycles' start words and enough other words for two cycles."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.gguf"
    tokens = ["<unk>", "<s>", "</s>", *variants.CYCLE_STARTS, *WORDS, *(f"t{i}" for i in range(95))]
    writer = GGUFWriter(path, "llama")
    writer.add_string("tokenizer.ggml.model", "llama")
    writer.add_key_value("tokenizer.ggml.tokens", tokens, GGUFValueType.ARRAY, GGUFValueType.STRING)
    writer.add_uint32("tokenizer.ggml.bos_token_id", BOS)
    writer.add_uint32("tokenizer.ggml.eos_token_id", EOS)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


def tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in GGUFReader(path).tensors}


def test_the_new_checks_are_in_the_checklist() -> None:
    assert {"generate_control_tokens", "sampling_penalty_window", "out_of_memory_calls_release_memory"} <= set(
        CHECK_ORDER)


def test_control_token_model_swaps_the_bos_and_eos_output_rows_only(vocab: Path, tmp_path: Path) -> None:
    stop = model.write_model(tmp_path / "stop.gguf", vocab, model.MODEL_SIZES["tiny"], 42, eog=True)
    variant = variants.control_token_model(stop)
    assert variant.name == "stop-bos-lean.gguf"
    a, b = tensors(stop), tensors(variant)
    assert np.array_equal(b["output.weight"][BOS], a["output.weight"][EOS])  # greedy decoding now leans to BOS
    assert np.array_equal(b["output.weight"][EOS], a["output.weight"][BOS])
    rest = [i for i in range(len(a["output.weight"])) if i not in (BOS, EOS)]
    assert np.array_equal(b["output.weight"][rest], a["output.weight"][rest])
    assert all(np.array_equal(a[name], b[name]) for name in a if name != "output.weight")
    written = variant.stat().st_mtime_ns
    assert variants.control_token_model(stop) == variant and variant.stat().st_mtime_ns == written  # made once


def test_penalty_cycle_model_chains_each_cycle_word_to_the_next(vocab: Path, tmp_path: Path) -> None:
    plain = model.write_model(tmp_path / "plain.gguf", vocab, model.MODEL_SIZES["tiny"], 42)
    variant = variants.penalty_cycle_model(plain)
    tokens = [bytes(f.parts[i]).decode() for f in [GGUFReader(plain).fields["tokenizer.ggml.tokens"]] for i in f.data]
    cycles = variants.cycles_of(tokens)
    assert [len(c) for c in cycles] == list(variants.PERIODS)
    assert [tokens[c[0]] for c in cycles] == list(variants.CYCLE_STARTS)
    assert len({t for c in cycles for t in c}) == sum(variants.PERIODS)  # no word in two cycles, none twice
    a, b = tensors(plain), tensors(variant)
    embd, out = b["token_embd.weight"], b["output.weight"]
    for cycle in cycles:
        for k, word in enumerate(cycle):
            successor = cycle[(k + 1) % len(cycle)]
            cosine = embd[word] @ out[successor] / np.linalg.norm(embd[word]) / np.linalg.norm(out[successor])
            assert cosine == pytest.approx(1.0, abs=1e-5)  # the word points at its successor's output row
    words = sorted({t for c in cycles for t in c})
    others = [i for i in range(len(tokens)) if i not in words]
    assert np.array_equal(a["output.weight"][others], out[others])
    assert np.array_equal(a["token_embd.weight"][others], embd[others])


def test_address_space_limited_fails_a_large_allocation_inside_only() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    with address_space_limited(OOM_HEADROOM), pytest.raises(MemoryError):
        bytearray(OOM_HEADROOM * 2)
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert len(bytearray(OOM_HEADROOM * 2)) == OOM_HEADROOM * 2


def test_node_budget_lets_the_first_nodes_run_then_stops_every_one() -> None:
    nodes = _NodeBudget()
    nodes.start(None)
    assert not any(nodes() for _ in range(100)) and nodes.used == 100  # counting only
    nodes.start(3)
    assert [nodes() for _ in range(5)] == [False, False, False, True, True]
    nodes.start(0)
    assert nodes()  # every decode fails at its first node


# the survivors of docs/mutation.md that the new or strengthened checks kill, each with the check meant for it
KILLS = {
    "custom_files/localllm_capi.cpp:piece_of:167:*:bool_argument:true": "generate_control_tokens",
    "custom_files/localllm_capi.cpp:localllm_generate_parallel:1041:*:cleanup_drop:*":
        "out_of_memory_calls_release_memory",
    "custom_files/localllm_capi.cpp:localllm_generate_parallel:990:*:constant:1": "failed_calls_release_memory",
    "custom_files/localllm_capi.cpp:make_sampling_params:192:*:constant:63": "sampling_penalty_window",
    "custom_files/localllm_capi.cpp:make_sampling_params:192:*:constant:65": "sampling_penalty_window",
}  # fmt: skip
if (os.cpu_count() or 0) < 4:  # the mutant's fallback is 4 threads: more than the machine has only below 4 CPUs
    KILLS["custom_files/localllm_capi.cpp:localllm_context_create:399:*:constant:(-1)"] = "context_params"


@pytest.mark.slow
def test_a_real_run_kills_each_survivor_with_its_check(tmp_path: Path) -> None:
    """Built and checked for real (b5415, the shim rebuilt per mutant): special tokens rendered into generated text,
    the result array kept when an allocation throws, slots left unfinished when a step's decode fails (an endless
    retry: a hang), the penalty window one short or one long, n_threads 0 as 4 threads."""
    out = tmp_path / "mutants.json"
    code = migrate_main(["mutate", str(REPO / "fixtures" / "localllm"), "--only", ",".join(KILLS),
                         "--checks", ",".join(sorted(set(KILLS.values()))), "--timeout", "60",
                         "--json", str(out), "--out", str(tmp_path), "--quiet"])  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())["results"]
    assert len(results) == len(KILLS), [r["mutant"]["id"] for r in results]
    for result in results:
        want = next(check for pattern, check in KILLS.items() if fnmatch.fnmatchcase(result["mutant"]["id"], pattern))
        assert (result["status"], result["check"]) == (mutate.KILLED, want), result
