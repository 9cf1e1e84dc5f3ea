"""Deterministic test models: bytes, names, GGUF contents. No llama.cpp build needed; the real-vocabulary tests use a
llama.cpp tree already in the cache and are skipped where there is none."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from migrate import model
from migrate.cli import build_parser
from migrate.model import MODEL_SIZES, VOCAB_FILE, ensure_model, model_size, tensor_specs, write_model
from migrate.sources import SourceCache, SourceError, npm_stand_in

TINY = MODEL_SIZES["tiny"]
SYNTHETIC_VOCAB = 300


@pytest.fixture(scope="module")
def synthetic_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small vocabulary GGUF with the same key kinds as llama.cpp's (strings, arrays, ints, bools)."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_string("tokenizer.ggml.model", "llama")
    writer.add_key_value(
        "tokenizer.ggml.tokens", [f"tok{i}" for i in range(SYNTHETIC_VOCAB)], GGUFValueType.ARRAY, GGUFValueType.STRING
    )
    writer.add_key_value(
        "tokenizer.ggml.scores",
        [-float(i) / 7 for i in range(SYNTHETIC_VOCAB)],
        GGUFValueType.ARRAY,
        GGUFValueType.FLOAT32,
    )
    writer.add_key_value("tokenizer.ggml.token_type", [1] * SYNTHETIC_VOCAB, GGUFValueType.ARRAY, GGUFValueType.INT32)
    writer.add_uint32("tokenizer.ggml.bos_token_id", 1)
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    writer.add_uint32("unrelated.key", 7)  # must not be copied
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def llama_tree() -> Path:
    """The cached llama.cpp tree for b5421 (or its stand-in); never downloads."""
    try:
        tree = SourceCache().lookup(npm_stand_in("b5421") or "b5421")
    except SourceError as exc:
        pytest.skip(f"cached llama.cpp tree unusable: {exc}")
    if tree is None or not (tree.path / VOCAB_FILE).is_file():
        pytest.skip("no cached llama.cpp tree with a vocabulary (run `migrate sources b5421` first)")
    return tree.path


@pytest.fixture(scope="module")
def tiny_model(llama_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_model("tiny", llama=str(llama_tree), seed=42, cache=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tiny_reader(tiny_model: Path) -> GGUFReader:
    return GGUFReader(tiny_model)


def _scalar(reader: GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


def test_unknown_size_names_the_choices() -> None:
    with pytest.raises(ValueError, match="tiny, small, 1b"):
        model_size("huge")
    with pytest.raises(ValueError, match="unknown model size"):
        ensure_model("huge", llama="/nonexistent")  # rejected before any source tree is looked for


def test_writes_are_byte_identical(synthetic_vocab: Path, tmp_path: Path) -> None:
    first = write_model(tmp_path / "a.gguf", synthetic_vocab, TINY, seed=42)
    second = write_model(tmp_path / "b.gguf", synthetic_vocab, TINY, seed=42)
    other_seed = write_model(tmp_path / "c.gguf", synthetic_vocab, TINY, seed=43)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other_seed.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]  # no temp files left


def test_only_tokenizer_keys_are_copied(synthetic_vocab: Path, tmp_path: Path) -> None:
    reader = GGUFReader(write_model(tmp_path / "m.gguf", synthetic_vocab, TINY, seed=1))
    assert "unrelated.key" not in reader.fields
    assert _scalar(reader, "llama.vocab_size") == SYNTHETIC_VOCAB
    assert reader.fields["tokenizer.ggml.add_bos_token"].types == [GGUFValueType.BOOL]
    assert list(reader.fields["tokenizer.ggml.tokens"].contents()[:2]) == ["tok0", "tok1"]
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert [int(n) for n in embd.shape] == [TINY.n_embd, SYNTHETIC_VOCAB]


def test_name_has_size_seed_and_digest(tiny_model: Path, llama_tree: Path) -> None:
    assert re.fullmatch(r"llama-tiny-s42-[0-9a-f]{8}\.gguf", tiny_model.name)
    assert tiny_model.parent.name == "models"
    other_seed = model.model_path(tiny_model.parent, llama_tree / VOCAB_FILE, TINY, 7)
    assert other_seed.name.startswith("llama-tiny-s7-")


def test_existing_model_is_reused(tiny_model: Path, llama_tree: Path) -> None:
    before = tiny_model.stat().st_mtime_ns
    again = ensure_model("tiny", llama=str(llama_tree), seed=42, cache=tiny_model.parent.parent)
    assert again == tiny_model
    assert again.stat().st_mtime_ns == before


def test_generator_version_changes_the_name(
    tiny_model: Path, llama_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "GENERATOR_VERSION", model.GENERATOR_VERSION + 1)
    assert model.model_path(tiny_model.parent, llama_tree / VOCAB_FILE, TINY, 42) != tiny_model


def test_tiny_is_under_20_mb(tiny_model: Path) -> None:
    assert tiny_model.stat().st_size < 20 * 1024 * 1024


def test_architecture_keys(tiny_reader: GGUFReader) -> None:
    expected = {
        "general.architecture": "llama",
        "llama.context_length": 2048,
        "llama.embedding_length": 64,
        "llama.block_count": 2,
        "llama.feed_forward_length": 128,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 16,
        "llama.vocab_size": 32000,
        "general.file_type": 0,
    }
    assert {key: _scalar(tiny_reader, key) for key in expected} == expected
    assert _scalar(tiny_reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert "tiny" in _scalar(tiny_reader, "general.name")


def test_tensor_shapes(tiny_reader: GGUFReader) -> None:
    # GGUF shapes are ggml ne[]: the row length first.
    shapes = {t.name: [int(n) for n in t.shape] for t in tiny_reader.tensors}
    embd, kv, ff, vocab = 64, 32, 128, 32000
    expected = {"token_embd.weight": [embd, vocab], "output_norm.weight": [embd], "output.weight": [embd, vocab]}
    for block in range(2):
        expected |= {
            f"blk.{block}.attn_norm.weight": [embd],
            f"blk.{block}.attn_q.weight": [embd, embd],
            f"blk.{block}.attn_k.weight": [embd, kv],
            f"blk.{block}.attn_v.weight": [embd, kv],
            f"blk.{block}.attn_output.weight": [embd, embd],
            f"blk.{block}.ffn_norm.weight": [embd],
            f"blk.{block}.ffn_gate.weight": [embd, ff],
            f"blk.{block}.ffn_up.weight": [embd, ff],
            f"blk.{block}.ffn_down.weight": [ff, embd],
        }
    assert shapes == expected


def test_weights_are_sane(tiny_reader: GGUFReader) -> None:
    tensors = {t.name: np.asarray(t.data) for t in tiny_reader.tensors}
    assert np.all(tensors["output_norm.weight"] == 1.0)
    assert np.all(tensors["blk.0.attn_norm.weight"] == 1.0)
    for name, values in tensors.items():
        assert np.all(np.isfinite(values)), name
    # Output rows are not the embeddings: tied weights would make every token predict itself.
    assert not np.allclose(tensors["output.weight"], tensors["token_embd.weight"])


def _tokenizer_bytes(reader: GGUFReader, path: Path) -> bytes:
    """The encoded tokenizer keys (names, types, values) as one span; they are written one after another."""
    fields = [field for key, field in reader.fields.items() if key.startswith("tokenizer.")]
    last = fields[-1]
    start, end = fields[0].offset, last.offset + sum(part.nbytes for part in last.parts)
    assert sum(sum(part.nbytes for part in field.parts) for field in fields) == end - start  # contiguous
    with open(path, "rb") as stream:
        stream.seek(start)
        return stream.read(end - start)


def test_tokenizer_keys_copied_exactly(tiny_reader: GGUFReader, tiny_model: Path, llama_tree: Path) -> None:
    vocab_path = llama_tree / VOCAB_FILE
    vocab = GGUFReader(vocab_path)
    source_keys = [key for key in vocab.fields if key.startswith("tokenizer.")]
    assert [key for key in tiny_reader.fields if key.startswith("tokenizer.")] == source_keys
    for key in source_keys:
        assert tiny_reader.fields[key].types == vocab.fields[key].types, key
    # Byte for byte: the same values with the same GGUF types, arrays included.
    assert _tokenizer_bytes(tiny_reader, tiny_model) == _tokenizer_bytes(vocab, vocab_path)


def test_large_sizes_are_f16_with_f32_norms() -> None:
    specs = tensor_specs(MODEL_SIZES["1b"], 32000)
    dtypes = {spec.name: spec.dtype for spec in specs}
    assert dtypes["blk.0.ffn_down.weight"] is np.float16
    assert dtypes["blk.0.attn_norm.weight"] is np.float32
    assert MODEL_SIZES["1b"].file_type == 1
    n_bytes = sum(int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize for spec in specs)
    assert 1.5e9 < n_bytes < 1.8e9


def test_cli_prints_the_path(tiny_model: Path, llama_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["--cache", str(tiny_model.parent.parent), "model", "--llama", str(llama_tree)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tiny_model)


def test_cli_rejects_unknown_size() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["model", "--size", "huge"])
