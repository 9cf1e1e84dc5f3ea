"""Deterministic tiny llama-architecture GGUF models, so verification never needs to download weights.

The tokenizer is real: every `tokenizer.*` key is copied, type for type, from a vocabulary file that ships in the
llama.cpp tree (`models/ggml-vocab-llama-spm.gguf`), so prompts tokenize exactly as with a real Llama model.
The weights are seeded gaussians, scaled so that greedy decoding wanders through many different tokens with clear
top-1 margins (the same tokens on every backend and llama.cpp version) instead of repeating one token or stopping.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from migrate.paths import cache_root
from verify.releases import RELEASES

# the release whose tree gives the generated models their vocabulary (verify/data/releases.yaml)
MODEL_VOCABULARY = RELEASES.model_vocabulary

if TYPE_CHECKING:  # numpy and gguf cost ~0.3 s to import: only the functions that write or read a model load them
    import numpy as np
    from gguf import GGUFValueType, GGUFWriter, LlamaFileType, ReaderField

# Part of every file name: bump it whenever the recipe below changes what bytes a (size, seed, vocab) gives.
GENERATOR_VERSION = 1
VOCAB_FILE = Path("models") / "ggml-vocab-llama-spm.gguf"
ARCH = "llama"
RMS_EPS = 1e-5
# Init scales (see tensor_specs): embedding std, and Q/K and output gains over the usual 1/sqrt(fan_in).
# They are part of the file name's digest, so changing one never reuses a model written with the old values.
EMBD_STD = 1.0
QK_GAIN = 1.0
OUTPUT_GAIN = 4.0


@dataclass(frozen=True)
class EogRecipe:
    """The stop option (`eog=True`): greedy decoding reaches end-of-generation within a few tokens on some prompts.

    The default models never emit EOS (0 in 20,352 greedy steps over 212 prompts), so a shim's stop-on-EOG,
    uneven-finish and refill paths would never run. Here one fixed direction `u` of the embedding space is the
    "stop" direction: the EOS row of the output matrix is `gain * u`, and the embeddings of a seeded `share` of the
    vocabulary lean `lean` standard deviations along `u`. The hidden state at the last position is dominated by
    the current token's embedding (the residual projections are shrunk, see tensor_specs), so after a token of that
    share greedy decoding picks EOS next; other tokens keep their (unchanged-recipe) continuations. Every other
    tensor is the default model's, so only paths through those tokens change."""

    share: float = 0.08
    lean: float = 3.0
    gain: float = 6.0

    def tag(self) -> str:
        return f"eog={self.share},{self.lean},{self.gain}"


EOG_RECIPE = EogRecipe()


@dataclass(frozen=True)
class ModelSize:
    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    context_length: int
    dtype: str  # "f32" or "f16": the type of the 2-D weights; norm vectors stay f32 as llama.cpp expects

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_embd_kv(self) -> int:
        return self.head_dim * self.n_head_kv

    @property
    def file_type(self) -> LlamaFileType:
        from gguf import LlamaFileType

        return LlamaFileType.MOSTLY_F16 if self.dtype == "f16" else LlamaFileType.ALL_F32


MODEL_SIZES: dict[str, ModelSize] = {
    # ~17 MB with the 32000-token vocabulary, almost all of it token_embd and output: loads and runs in milliseconds.
    "tiny": ModelSize("tiny", n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, context_length=2048, dtype="f32"),
    "small": ModelSize(
        "small", n_embd=256, n_layer=4, n_head=8, n_head_kv=4, n_ff=768, context_length=4096, dtype="f32"
    ),
    # TinyLlama-like shapes, f16, ~1.7 GB: enough arithmetic for GPU timings to mean something.
    "1b": ModelSize("1b", n_embd=2048, n_layer=16, n_head=32, n_head_kv=4, n_ff=5632, context_length=4096, dtype="f16"),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order: GGUF's ne[] reversed, so (rows = ne[1], cols = ne[0])
    std: float  # gaussian standard deviation; 0 means all ones (RMS-norm weights)
    dtype: type[np.floating[Any]]


def model_size(name: str) -> ModelSize:
    try:
        return MODEL_SIZES[name]
    except KeyError:
        raise ValueError(f"unknown model size {name!r}: choose one of {', '.join(MODEL_SIZES)}") from None


def tensor_specs(size: ModelSize, n_vocab: int) -> list[TensorSpec]:
    """Every tensor of the model, in file order, with the init scale that keeps greedy decoding lively and stable.

    Why these scales (measured at b5415 and b7836, CPU): unit-variance embeddings and the usual 1/sqrt(fan_in) for
    Q, K, V and the FFN inputs; the two projections that write into the residual stream (attn_output, ffn_down) are
    shrunk by 1/sqrt(2 * n_layer), so however deep the model, the context shifts the hidden state enough to change
    the continuation (stale KV memory shows) without the sum of blocks drowning the current token in rounding noise
    (f16 K/V, flash attention), which flipped greedy tokens between versions for the 16-block model. Sharper
    attention (larger Q/K) amplified that noise the same way. The output matrix is independent of the embeddings
    (tied weights would make every token predict itself) and large, so logits spread widely and the top two rarely
    sit close together.
    """
    import numpy as np

    weight = np.float16 if size.dtype == "f16" else np.float32
    embd, embd_kv, ff = size.n_embd, size.n_embd_kv, size.n_ff
    inv_sqrt = 1.0 / np.sqrt(embd)
    residual = 1.0 / np.sqrt(2 * size.n_layer)
    specs = [TensorSpec("token_embd.weight", (n_vocab, embd), EMBD_STD, weight)]
    for block in range(size.n_layer):
        prefix = f"blk.{block}."
        specs += [
            TensorSpec(prefix + "attn_norm.weight", (embd,), 0.0, np.float32),
            TensorSpec(prefix + "attn_q.weight", (embd, embd), QK_GAIN * inv_sqrt, weight),
            TensorSpec(prefix + "attn_k.weight", (embd_kv, embd), QK_GAIN * inv_sqrt, weight),
            TensorSpec(prefix + "attn_v.weight", (embd_kv, embd), inv_sqrt, weight),
            TensorSpec(prefix + "attn_output.weight", (embd, embd), residual * inv_sqrt, weight),
            TensorSpec(prefix + "ffn_norm.weight", (embd,), 0.0, np.float32),
            TensorSpec(prefix + "ffn_gate.weight", (ff, embd), inv_sqrt, weight),
            TensorSpec(prefix + "ffn_up.weight", (ff, embd), inv_sqrt, weight),
            TensorSpec(prefix + "ffn_down.weight", (embd, ff), residual / np.sqrt(ff), weight),
        ]
    specs += [
        TensorSpec("output_norm.weight", (embd,), 0.0, np.float32),
        TensorSpec("output.weight", (n_vocab, embd), OUTPUT_GAIN * inv_sqrt, weight),
    ]
    return specs


def tensor_data(spec: TensorSpec, seed: int, index: int) -> np.ndarray[Any, Any]:
    """One tensor's values; each tensor has its own stream (seed, index) so tensors can be made one at a time."""
    import numpy as np

    if spec.std == 0.0:
        return np.ones(spec.shape, dtype=np.float32)
    rng = np.random.default_rng([seed, index])
    values = rng.standard_normal(spec.shape, dtype=np.float32)
    values *= np.float32(spec.std)
    return values.astype(spec.dtype, copy=False)


def _field_value(field: ReaderField) -> Any:
    """A reader field's value in the form GGUFWriter packs back to the same bytes (strings stay raw bytes)."""
    from gguf import GGUFValueType

    main_type = field.types[0]
    if main_type == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]])
    if main_type != GGUFValueType.ARRAY:
        return field.parts[field.data[0]][0].item()
    if field.types[-1] == GGUFValueType.STRING:
        return [bytes(field.parts[index]) for index in field.data]
    return [field.parts[index][0].item() for index in field.data]


TokenizerFields: TypeAlias = "dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]]"


def tokenizer_fields(vocab_gguf: Path) -> TokenizerFields:
    """Every `tokenizer.*` key of a vocabulary GGUF: key → (value, type, array element type). Treat as read-only."""
    stat = Path(vocab_gguf).stat()
    return _tokenizer_fields(Path(vocab_gguf).resolve(), stat.st_size, stat.st_mtime_ns)


# GGUFReader takes ~2 s over a 32000-token vocabulary; remember the result while the file stays the same.
@functools.lru_cache(maxsize=4)
def _tokenizer_fields(vocab_gguf: Path, file_size: int, mtime_ns: int) -> TokenizerFields:
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(vocab_gguf)
    fields = {}
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        if field.types[0] == GGUFValueType.ARRAY and len(field.types) != 2:
            raise ValueError(f"{vocab_gguf}: {key} is a nested array, which this copier does not handle")
        sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        fields[key] = (_field_value(field), field.types[0], sub_type)
    if "tokenizer.ggml.tokens" not in fields:
        raise ValueError(f"{vocab_gguf} has no tokenizer.ggml.tokens: not a vocabulary file")
    return fields


def _add_architecture_keys(writer: GGUFWriter, size: ModelSize, seed: int, n_vocab: int) -> None:
    writer.add_name(f"llama-migrate {size.name} s{seed}")
    writer.add_context_length(size.context_length)
    writer.add_embedding_length(size.n_embd)
    writer.add_block_count(size.n_layer)
    writer.add_feed_forward_length(size.n_ff)
    writer.add_head_count(size.n_head)
    writer.add_head_count_kv(size.n_head_kv)
    writer.add_rope_dimension_count(size.head_dim)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(size.file_type)


def _tensors(specs: list[TensorSpec], seed: int, eog: EogRecipe | None = None,
             eos: int | None = None) -> Iterator[np.ndarray[Any, Any]]:  # fmt: skip
    for index, spec in enumerate(specs):
        values = tensor_data(spec, seed, index)
        if eog is not None and eos is not None:
            values = _stop_leaning(spec, values, seed, eog, eos)
        yield values


def _stop_direction(n_embd: int, seed: int) -> np.ndarray[Any, Any]:
    import numpy as np

    u = np.random.default_rng([seed, 0x0E06]).standard_normal(n_embd).astype(np.float32)
    return u / np.linalg.norm(u)


def _stop_leaning(spec: TensorSpec, values: np.ndarray[Any, Any], seed: int, eog: EogRecipe,
                  eos: int) -> np.ndarray[Any, Any]:  # fmt: skip
    """The EOG recipe applied to one tensor (see EogRecipe); any other tensor is returned as it is."""
    import numpy as np

    if spec.name not in ("token_embd.weight", "output.weight"):
        return values
    n_vocab, n_embd = spec.shape
    u = _stop_direction(n_embd, seed).astype(spec.dtype)
    values = values.copy()
    if spec.name == "output.weight":
        values[eos] = np.asarray(eog.gain * u, dtype=spec.dtype)
    else:
        chosen = np.random.default_rng([seed, 0x0E07]).random(n_vocab) < eog.share
        chosen[eos] = False
        values[chosen] += np.asarray(eog.lean * EMBD_STD * u, dtype=spec.dtype)
    return values


def write_model(path: Path, vocab_gguf: Path, size: ModelSize, seed: int, eog: bool = False) -> Path:
    """Write the model to `path` atomically (temp file in the same dir, then rename), one tensor at a time.
    `eog`: the stop option (EogRecipe): greedy decoding reaches EOS within a few tokens on some prompts."""
    import numpy as np
    from gguf import GGUFWriter

    path = Path(path)
    tokenizer = tokenizer_fields(vocab_gguf)
    n_vocab = len(tokenizer["tokenizer.ggml.tokens"][0])
    specs = tensor_specs(size, n_vocab)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = GGUFWriter(tmp, ARCH)
        _add_architecture_keys(writer, size, seed, n_vocab)
        for key, (value, value_type, sub_type) in tokenizer.items():
            writer.add_key_value(key, value, value_type, sub_type)
        eos = _eos_id(tokenizer) if eog else None
        for spec in specs:
            nbytes = int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
            writer.add_tensor_info(spec.name, spec.shape, np.dtype(spec.dtype), nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in _tensors(specs, seed, EOG_RECIPE if eog else None, eos):
            writer.write_tensor_data(tensor)
        writer.close()
        tmp.chmod(0o644)  # mkstemp makes it owner-only; a model is shared data, like the rest of the cache
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _eos_id(tokenizer: TokenizerFields) -> int:
    if "tokenizer.ggml.eos_token_id" not in tokenizer:
        raise ValueError("the vocabulary has no tokenizer.ggml.eos_token_id: no EOS row to lean toward")
    return int(tokenizer["tokenizer.ggml.eos_token_id"][0])


def model_digest(vocab_gguf: Path, size: ModelSize, eog: bool = False) -> str:
    """Eight hex digits naming what, besides size name and seed, decides the bytes: vocabulary, recipe, shapes."""
    digest = hashlib.sha256()
    digest.update(Path(vocab_gguf).read_bytes())
    digest.update(f"generator={GENERATOR_VERSION};{EMBD_STD},{QK_GAIN},{OUTPUT_GAIN};{size!r}".encode())
    if eog:  # the default models' digests stay what they were
        digest.update(EOG_RECIPE.tag().encode())
    return digest.hexdigest()[:8]


def model_path(models_dir: Path, vocab_gguf: Path, size: ModelSize, seed: int, eog: bool = False) -> Path:
    kind = f"{size.name}-eog" if eog else size.name
    return models_dir / f"llama-{kind}-s{seed}-{model_digest(vocab_gguf, size, eog)}.gguf"


def ensure_model(
    size: str = "tiny", llama: str = MODEL_VOCABULARY, seed: int = 42, cache: str | os.PathLike[str] | None = None,
    eog: bool = False,
) -> Path:
    """The cached model for (size, seed, the vocabulary in llama.cpp `llama`), written first if missing.

    `llama` is anything migrate.sources.resolve takes: a build tag, a commit or a llama.cpp directory.
    `eog`: the stop variant (EogRecipe), for the checks that need generation to end on EOS.
    """
    from migrate.sources import resolve  # deferred: model writing alone should not need git or the source cache

    chosen = model_size(size)
    vocab_gguf = resolve(llama, cache=cache).path / VOCAB_FILE
    if not vocab_gguf.is_file():
        raise FileNotFoundError(f"{vocab_gguf} is missing: the llama.cpp tree for {llama} has no llama vocabulary")
    path = model_path(cache_root(cache) / "models", vocab_gguf, chosen, seed, eog)
    if path.is_file():
        return path
    return write_model(path, vocab_gguf, chosen, seed, eog)
