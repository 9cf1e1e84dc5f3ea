"""Static advisories: code that compiles at b7785 but behaves differently at run time (sequence ids, seq_cp across
sequences, decode positions, per-sequence context). Findings with file:line and the reason, never rewrites; the
opt-in rule kv-unified removes the causes of the first three (sequences then share one buffer, ids up to 256).

Heuristics, phrased as "check": a function that visibly bounds its sequence ids by n_seq_max is trusted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import clang.cindex as ci

from migrate.rewrite.collect import Collected
from migrate.rewrite.cursors import enclosing_function, span_of
from migrate.rewrite.edits import SourceFile
from migrate.rewrite.plan import Advisory, Plan

__all__ = ["Advisory", "find"]

# Argument positions of sequence ids in the old memory calls (the context is argument 0).
SEQ_ARGS = {
    "seq_rm": (1,),
    "seq_cp": (1, 2),
    "seq_keep": (1,),
    "seq_add": (1,),
    "seq_div": (1,),
    "seq_pos_max": (1,),
    "seq_pos_min": (1,),
}
INTEGER = re.compile(r"^\(?\s*(-?\d+)\s*\)?$")
BACK_ONE = re.compile(r"-\s*1\s*\)?\s*$")  # a position written as `n_past - 1`: one the sequence may hold
BOUNDS = re.compile(rb"\bn_seq_max\b|\bllama_n_seq_max\b")

SEQ_ID_WHY = (
    "at b7785, without kv_unified, sequence ids must be < n_seq_max: llama_decode rejects others (-1, "
    '"invalid seq_id") and the memory calls abort the process (GGML_ASSERT in llama-kv-cache.cpp); '
    "b5421 accepted any id"
)
PARTIAL_CP_WHY = (
    "a partial-range seq_cp between sequences aborts the process at b7785 without kv_unified "
    '(GGML_ASSERT "seq_cp() is only supported for full KV buffers"); b5421 copied ranges'
)
FULL_CP_WHY = (
    "without kv_unified each sequence has its own stream at b7785, so this seq_cp copies the whole buffer between "
    "streams (b5421 only tagged the cells); correct, but it costs a full copy — kv_unified keeps one shared buffer"
)
HELD_POSITION_WHY = (
    "decodes at position `{pos}`: if the sequence already holds that position (e.g. the last prompt token decoded "
    "again for its logits), b7785 rejects the batch — positions must continue the sequence (Y = X + 1, "
    '"inconsistent sequence positions" in llama-batch.cpp); b5421 accepted it. Remove the position first '
    "(llama_memory_seq_rm from it) or keep the logits of the first decode"
)
N_CTX_WHY = (
    "checks against llama_n_ctx(ctx), the total over all sequences; at b7785, without kv_unified and with "
    "n_seq_max > 1, each sequence gets n_ctx / n_seq_max cells (padded to 256), so a prompt that passes this check "
    "may not fit its sequence — compare with llama_n_ctx_seq(ctx)"
)
# The opt-in rule kv-unified, where it sets kv_unified: what it costs (measured: README, "kv_unified's cost").
UNIFIED_COST = "kv-unified-cost"
UNIFIED_COST_WHY = (
    "kv_unified = true has a cost at b7785 for a single sequence: each llama_decode validates the batch against "
    "LLAMA_MAX_SEQ (256) sequences instead of n_seq_max (llama_batch_allocr::init in llama-batch.cpp), a fixed cost "
    "per decode. Measured on fixtures/localllm, the migrated code with kv_unified against the same code without it "
    "(b7836, CPU, one thread, median of paired calls; scripts/bench_throughput.py): generate 0.81x the tokens/s with "
    "the tiny model and 0.96x with the small one, where a token costs more; generate_parallel 1.04x and 1.17x — "
    "faster, since the sequences share one buffer instead of a stream each and whole-stream copies. The trade-off: "
    "without kv_unified each sequence gets only n_ctx / n_seq_max cells (a 400-token generate on a 4-sequence "
    "512-token context then fails for lack of a slot), sequence ids must stay below n_seq_max and a partial seq_cp "
    "between sequences aborts. Keep it when sequences need more than n_ctx / n_seq_max each or run in parallel; "
    "else size n_ctx per sequence and leave it off. Gate tokens/s with a model whose per-token cost dominates "
    "(`migrate model --size small`, or your real GGUF)"
)


def _int(text: str) -> int | None:
    match = INTEGER.match(text.strip())
    return int(match.group(1)) if match else None


def _args(call: ci.Cursor, source: SourceFile) -> list[str]:
    texts = []
    for arg in call.get_arguments():
        span = span_of(arg)
        texts.append(source.text(span.start, span.end))
    return texts


def find(collected: Collected, sources: dict[Path, SourceFile], fresh: set[str], plan: Plan,
         options: dict[str, Any], unified: bool = False) -> list[Advisory]:  # fmt: skip
    """Advisories for the files in `fresh`; none about sequence ids, streams and per-sequence context when
    kv_unified is on (`unified`) — positions must continue either way."""
    found: list[Advisory] = []
    held = _held_positions(collected, sources, fresh, plan)
    if unified:
        return held
    flagged_functions: set[tuple[str, int]] = set()
    for site in collected.calls:
        if site.file not in fresh or site.rule.kind != "memory_call" or site.in_macro_body:
            continue
        source = sources[Path(site.file)]
        suffix = next((key for key in SEQ_ARGS if site.rule.match.name.endswith(key)), None)
        if suffix is None:
            continue
        args = _args(site.call, source)
        where = (plan.relative(site.file), source.line_of(site.name_offset))
        for index in SEQ_ARGS[suffix]:
            if index < len(args):
                found += _seq_id(args[index], site.ancestors, source, where, flagged_functions, site.rule.id)
        if suffix == "seq_cp" and len(args) == 5:
            full = _int(args[3]) in (-1, 0) and _int(args[4]) == -1
            found.append(Advisory(*where, site.rule.id, FULL_CP_WHY if full else PARTIAL_CP_WHY))
    found += _batch_seq_ids(collected, sources, fresh, plan, flagged_functions)
    found += _n_ctx_checks(collected, sources, fresh, plan)
    return found + held


def _seq_id(text: str, ancestors: tuple[ci.Cursor, ...], source: SourceFile, where: tuple[str, int],
            flagged: set[tuple[str, int]], rule: str) -> list[Advisory]:  # fmt: skip
    value = _int(text)
    if value is not None:
        if value >= 1:
            return [Advisory(*where, rule, f"sequence id {value} needs n_seq_max >= {value + 1}: {SEQ_ID_WHY}")]
        return []
    function, _ = enclosing_function(ancestors)
    if function is None:
        return []
    span = span_of(function)
    key = (str(source.path), span.start)
    if key in flagged or BOUNDS.search(source.data[span.start : span.end]):
        return []
    flagged.add(key)
    return [Advisory(*where, "sequence-ids", f"sequence id `{text}` is not bounded by n_seq_max in "
                     f"{function.spelling}(); check every caller keeps it below n_seq_max: {SEQ_ID_WHY}")]  # fmt: skip


def _batch_seq_ids(collected: Collected, sources: dict[Path, SourceFile], fresh: set[str], plan: Plan,
                   flagged: set[tuple[str, int]]) -> list[Advisory]:  # fmt: skip
    """Sequence ids handed to common_batch_add(batch, token, pos, {seq, ...}, logits)."""
    found = []
    for call, ancestors, file in _fresh_calls(collected, fresh, "common_batch_add"):
        source = sources[Path(file)]
        args = _args(call, source)
        if len(args) < 4:
            continue
        ids = [part.strip() for part in args[3].strip("{} ").split(",") if part.strip()]
        where = (plan.relative(file), source.line_of(span_of(call).start))
        for text in ids:
            found += _seq_id(text, ancestors, source, where, flagged, "sequence-ids")
    return found


ContextCall = tuple[ci.Cursor, tuple[ci.Cursor, ...], str]


def _fresh_calls(collected: Collected, fresh: set[str], name: str) -> list[ContextCall]:
    """The context calls to `name` in files this plan reads afresh: what each advisory scan starts from."""
    return [(call, ancestors, file) for call, ancestors, file in collected.context_calls
            if file in fresh and call.spelling == name]  # fmt: skip


def _held_positions(collected: Collected, sources: dict[Path, SourceFile], fresh: set[str],
                    plan: Plan) -> list[Advisory]:  # fmt: skip
    """common_batch_add at a position written `x - 1`: one the sequence may already hold."""
    found = []
    for call, _, file in _fresh_calls(collected, fresh, "common_batch_add"):
        source = sources[Path(file)]
        args = _args(call, source)
        if len(args) >= 3 and BACK_ONE.search(args[2]):
            line = source.line_of(span_of(call).start)
            position = " ".join(args[2].split())
            found.append(Advisory(plan.relative(file), line, "held-position", HELD_POSITION_WHY.format(pos=position)))
    return found


def _n_ctx_checks(collected: Collected, sources: dict[Path, SourceFile], fresh: set[str],
                  plan: Plan) -> list[Advisory]:  # fmt: skip
    """llama_n_ctx(ctx) in a function that runs several sequences (it asks llama_n_seq_max or uses ids > 0)."""
    found = []
    for call, ancestors, file in _fresh_calls(collected, fresh, "llama_n_ctx"):
        function, _ = enclosing_function(ancestors)
        if function is None:
            continue
        source = sources[Path(file)]
        span = span_of(function)
        body = source.data[span.start : span.end]
        if b"llama_n_seq_max" in body or re.search(rb"seq_id\b", body):
            line = source.line_of(span_of(call).start)
            found.append(Advisory(plan.relative(file), line, "per-sequence-context", N_CTX_WHY))
    return found
