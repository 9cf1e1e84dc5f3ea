"""Model variants derived from the generated test models (`migrate model`, `--eog`) for checks that need generation
to reach what the default models never do: a control token, a word coming back a fixed number of tokens later.

The control-token model: the stop model's output rows of EOS and BOS swapped. The stop model's recipe makes greedy
decoding pick the row `gain * u` after a seeded share of tokens (migrate/model.py, EogRecipe); with that row on BOS,
greedy decoding emits BOS there — a control token that is no end of generation — and goes on. Text returned to the
caller then shows whether the consumer renders special tokens (`<s>`) into its output or leaves them out, as its
`[verify.reference] render_special` says (default: left out)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

BOS_KEY, EOS_KEY = "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"
OUTPUT_TENSOR = "output.weight"
TOKENS_KEY = "tokenizer.ggml.tokens"


class VariantError(Exception):
    """The model cannot be turned into the variant (no BOS/EOS id, output matrix or the words a cycle starts at)."""


def control_token_model(stop_model: str | os.PathLike[str]) -> Path:
    """The control-token variant of `stop_model`, written once beside it (atomically: a temporary file renamed), its
    name derived from the stop model's so that a new stop model gets a new variant."""
    return _derived(Path(stop_model), "-bos-lean", _swap_output_rows)


def _token_id(reader: Any, key: str) -> int:
    field = reader.fields.get(key)
    if field is None:
        raise VariantError(f"the model has no {key}")
    return int(field.parts[field.data[0]][0])


def _swap_output_rows(path: Path) -> None:
    """Swap the BOS and EOS rows of the output matrix in place (the file mapped read-write)."""
    from gguf import GGUFReader

    reader = GGUFReader(path, "r+")
    bos, eos = _token_id(reader, BOS_KEY), _token_id(reader, EOS_KEY)
    rows = _tensor(reader, OUTPUT_TENSOR)  # (n_vocab, n_embd), mapped onto the file
    rows[[bos, eos]] = rows[[eos, bos]]
    reader.data.flush()


# The penalty-window model: greedy decoding that comes back to a token exactly PERIODS apart. Two cycles of words,
# one per period, each entered from a prompt ending in its first word; after the cycle's k-th word the (k+1)-th is
# next, by far (the EogRecipe's device with one direction per step: the k-th word's embedding is u_k, the output
# row of the (k+1)-th is CYCLE_GAIN * u_k). With a strong repeat penalty, the word due after PERIOD steps is
# penalised exactly when the penalty window reaches PERIOD tokens back: a cycle of 64 turns away at step 65 with a
# window of 64 and goes on with 63; a cycle of 65 turns away at step 66 with a window of 65 and goes on with 64.
PERIODS = (64, 65)
CYCLE_STARTS = ("▁water", "▁stone")  # the first word of each cycle: a prompt ending in it enters the cycle
CYCLE_GAIN, CYCLE_SEED = 12.0, 0x0C7C
WORD = re.compile(r"▁[a-z]{4,}")


def penalty_cycle_model(model: str | os.PathLike[str]) -> Path:
    """The penalty-window variant of `model` (the default tiny model), written once beside it."""
    return _derived(Path(model), f"-cycles-{'-'.join(map(str, PERIODS))}", _plant_cycles)


def cycles_of(tokens: list[str]) -> list[list[int]]:
    """The token ids of each cycle (PERIODS long, CYCLE_STARTS first): seeded draws from the vocabulary's whole
    lowercase words, no id in two cycles."""
    import numpy as np

    starts = [tokens.index(word) for word in CYCLE_STARTS]
    words = [i for i, text in enumerate(tokens) if WORD.fullmatch(text) and i not in starts]
    drawn = np.random.default_rng(CYCLE_SEED).choice(len(words), size=sum(PERIODS) - len(PERIODS), replace=False)
    rest = iter(words[int(i)] for i in drawn)
    return [[start, *(next(rest) for _ in range(period - 1))] for start, period in zip(starts, PERIODS, strict=True)]


def _derived(source: Path, suffix: str, change: Callable[[Path], None]) -> Path:
    target = source.with_name(f"{source.stem}{suffix}.gguf")
    if target.is_file():
        return target
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(source, tmp)
        change(tmp)
        tmp.chmod(0o644)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _tensor(reader: Any, name: str) -> Any:
    tensors = [t for t in reader.tensors if t.name == name]
    if not tensors or tensors[0].data.ndim != 2:
        raise VariantError(f"the model has no 2-D {name}")
    return tensors[0].data


def _directions(rng: Any, n: int, n_embd: int) -> Any:
    """`n` unit vectors, orthogonal to each other as far as `n_embd` dimensions allow (a cycle's words must not
    point at each other's successors): an orthonormal basis, then seeded random directions beyond it."""
    import numpy as np

    basis, _ = np.linalg.qr(rng.standard_normal((n_embd, n_embd)))
    extra = rng.standard_normal((max(0, n - n_embd), n_embd))
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.concatenate([basis.T, extra])[:n].astype(np.float32)


def _plant_cycles(path: Path) -> None:
    import numpy as np
    from gguf import GGUFReader

    reader = GGUFReader(path, "r+")
    field = reader.fields.get(TOKENS_KEY)
    if field is None:
        raise VariantError(f"the model has no {TOKENS_KEY}")
    tokens = [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
    missing = [w for w in CYCLE_STARTS if w not in tokens]
    if missing:
        raise VariantError(f"the vocabulary has no token {', '.join(missing)}: not llama-spm's")
    embd, output = _tensor(reader, "token_embd.weight"), _tensor(reader, OUTPUT_TENSOR)
    n_embd = embd.shape[1]
    rng = np.random.default_rng(CYCLE_SEED + 1)
    for cycle in cycles_of(tokens):
        directions = _directions(rng, len(cycle), n_embd)
        for k, token in enumerate(cycle):
            # the word itself is its direction, at a default embedding's length (sqrt(n_embd) standard deviations)
            embd[token] = (np.sqrt(n_embd) * directions[k]).astype(embd.dtype)
            output[cycle[(k + 1) % len(cycle)]] = (CYCLE_GAIN * directions[k]).astype(output.dtype)
    reader.data.flush()
