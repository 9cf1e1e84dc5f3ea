"""Watch llama.cpp's own state behind the consumer's handles: memory (KV cache), perf counters, logits.

The shim links libllama whole, so its `llama_*` entry points are exported from the shim library too. Their
declarations are taken from the llama.h of the very tree the library was built with (struct layouts such as
`llama_perf_context_data` differ between releases: b7836 added `n_reused`), never retyped. Whatever the header
lacks or the library does not export is recorded with the reason, and the observations that need it are skipped.

Memory queries, by release:
- b7836 (and b5421+ after the memory refactor): `llama_get_memory` + `llama_memory_seq_pos_min/max`; sequence ids
  must stay below `n_seq_max` there, or llama.cpp aborts (GGML_ASSERT), so only those are queried;
- b5415: `llama_kv_cache_view_*` gives every cell's position and sequences (the fullest picture); failing that,
  `llama_kv_self_seq_pos_max` (0 for an empty sequence, so ambiguous) with `llama_kv_self_n_tokens`.

The names (what it calls by purpose, the memory queries and clears in the order tried, the context facts) are data:
verify/data/releases.yaml (verify/releases.py), so that a release which renames one is an edit there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cffi

from verify.bindings import BindingError, Bindings, preprocess_header
from verify.manifest import is_llama_tree, read_manifest
from verify.releases import RELEASES, MemoryClear, MemoryQuery

# What the harness calls in libllama, by purpose (releases.yaml `observer.groups`); each is looked up in the header
# and in the library.
MEMORY_NEW = RELEASES.group("memory_new")
MEMORY_VIEW = RELEASES.group("memory_view")
MEMORY_OLD = RELEASES.group("memory_old")
PERF = RELEASES.group("perf")
DECODE = RELEASES.group("decode")
CONTEXT_INFO = RELEASES.group("context_info")
# the context parameters read back besides n_ctx (threads, micro-batch): declared at b5415 and b7836 alike
CONTEXT_PARAMS = RELEASES.group("context_params")
# the model facts a consumer API may report itself (BOS, EOS; n_vocab is in DECODE)
MODEL_FACTS = RELEASES.group("model_facts")
WANTED = MEMORY_NEW + MEMORY_VIEW + MEMORY_OLD + PERF + DECODE + CONTEXT_INFO + CONTEXT_PARAMS + MODEL_FACTS
CONTEXT_POINTER = f"{RELEASES.types['context']} *"
CACHE_VIEW_POINTER = f"{RELEASES.types['cache_view']} *"

IDENT = re.compile(r"\b(struct|enum|union)?\s*\b([A-Za-z_]\w*)")
SOURCE_PATH = re.compile(rb"(/[\x21-\x7e]+?)/src/llama(?:-[a-z0-9-]+)?\.cpp\x00")


class ObserveError(Exception):
    """The llama.cpp tree or header behind a library could not be found or read."""


# --- finding the llama.cpp tree a library was built from ----------------------------------------------------


def tree_from_manifest(library: Path) -> Path | None:
    """`migrate build` records the llama.cpp tree beside the library (verify/manifest.py)."""
    manifest = read_manifest(library)
    if manifest is None or not is_llama_tree(Path(manifest.llama_tree)):
        return None
    return Path(manifest.llama_tree)


def tree_from_binary(library: Path) -> Path | None:
    """GGML_ASSERT and friends embed __FILE__, so a release build still names its llama.cpp source tree."""
    data = library.read_bytes()
    for match in SOURCE_PATH.finditer(data):
        root = Path(match.group(1).decode(errors="replace"))
        if is_llama_tree(root):
            return root
    return None


def find_llama_tree(library: Path, explicit: Path | None = None) -> Path:
    if explicit is not None:
        if not is_llama_tree(explicit):
            raise ObserveError(f"{explicit}: no include/llama.h there")
        return explicit
    tree = tree_from_manifest(library) or tree_from_binary(library)
    if tree is None:
        raise ObserveError(f"cannot tell which llama.cpp tree {library} was built from; pass --llama-tree")
    return tree


# --- declarations out of llama.h ----------------------------------------------------------------------------


@dataclass
class Declaration:
    kind: str  # "function", "struct", "enum", "typedef", "forward"
    name: str
    text: str


def split_declarations(source: str) -> list[str]:
    """Top-level declarations of preprocessed C: split at ';' outside braces and parentheses."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(source):
        if ch in "{(":
            depth += 1
        elif ch in "})":
            depth -= 1
        elif ch == ";" and depth == 0:
            parts.append(source[start : i + 1].strip())
            start = i + 1
    return [p for p in parts if p and p != ";"]


def classify(text: str) -> Declaration:
    flat = " ".join(text.split())
    if flat.startswith("typedef"):
        pointer = re.search(r"\(\s*\*\s*(\w+)\s*\)", flat)
        name = pointer.group(1) if pointer else re.findall(r"(\w+)\s*(?:\[[^\]]*\])?\s*;$", flat)[-1]
        return Declaration("typedef", name, flat)
    tagged = re.match(r"(struct|enum|union)\s+(\w+)\s*(\{)?", flat)
    if tagged and "(" not in flat.split("{")[0]:
        kind = tagged.group(1) if tagged.group(3) else "forward"
        return Declaration(kind, f"{tagged.group(1)} {tagged.group(2)}", flat)
    head = flat.split("(")[0]
    return Declaration("function", head.split()[-1].lstrip("*"), flat)


def parse_declarations(source: str) -> dict[str, Declaration]:
    found: dict[str, Declaration] = {}
    for text in split_declarations(source):
        decl = classify(text)
        if decl.kind == "forward" and decl.name in found:
            continue
        found[decl.name] = decl
        # `typedef struct X {...} X;` defines the tag too: `struct X` users need this declaration
        tagged = re.match(r"typedef (struct|enum|union) (\w+) \{", decl.text)
        if tagged:
            found[f"{tagged.group(1)} {tagged.group(2)}"] = decl
    return found


def references(decl: Declaration) -> set[str]:
    """Names a declaration refers to: `struct X` / `enum X` tags and bare identifiers (typedef candidates)."""
    body = decl.text
    names: set[str] = set()
    for tag, ident in IDENT.findall(body):
        names.add(f"{tag} {ident}" if tag else ident)
    names.discard(decl.name)
    return names


C_BUILTIN = {
    "void", "char", "short", "int", "long", "float", "double", "signed", "unsigned", "const", "bool", "_Bool",
    "size_t", "int8_t", "int16_t", "int32_t", "int64_t", "uint8_t", "uint16_t", "uint32_t", "uint64_t", "typedef",
    "volatile", "restrict", "struct", "enum", "union", "uintptr_t", "intptr_t", "NULL", "true", "false",
}  # fmt: skip


def closure(decls: dict[str, Declaration], wanted: list[str]) -> tuple[list[Declaration], dict[str, str]]:
    """The wanted functions with every typedef/struct/enum of the header they need; unresolved ones as missing."""
    chosen: dict[str, Declaration] = {}
    missing: dict[str, str] = {}
    for name in wanted:
        if name not in decls:
            missing[name] = "not declared in this llama.h"
            continue
        pending = [decls[name]]
        needed: dict[str, Declaration] = {}
        unknown: set[str] = set()
        while pending:
            decl = pending.pop()
            if decl.name in needed:
                continue
            needed[decl.name] = decl
            for ref in references(decl):
                if ref in decls:
                    pending.append(decls[ref])
                elif ref.startswith(("struct ", "union ")):
                    continue  # used through a pointer: an opaque type is enough for cffi
                elif ref.startswith("enum ") or (ref.startswith(("ggml_", "gguf_")) and "(" not in ref):
                    unknown.add(ref)
        # function parameter names are identifiers too; only type-like unknowns (ggml types) block a declaration
        if unknown:
            missing[name] = "needs types from outside llama.h: " + ", ".join(sorted(unknown))
            continue
        chosen.update(needed)
    order = {name: i for i, name in enumerate(decls)}
    return sorted(chosen.values(), key=lambda d: order[d.name]), missing


def llama_declarations(tree: Path, wanted: tuple[str, ...] = WANTED) -> tuple[str, dict[str, str]]:
    """cdef text for the wanted llama.h functions of this tree, and {function: why it is unavailable}."""
    header = tree / "include" / "llama.h"
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        raise ObserveError("no C compiler to preprocess llama.h with")
    try:
        source = preprocess_header(header, [tree / "include", tree / "ggml" / "include"])
    except (BindingError, subprocess.SubprocessError) as exc:
        raise ObserveError(str(exc)) from exc
    chosen, missing = closure(parse_declarations(source), list(wanted))
    text = "\n".join(_cffi_ready(d) for d in chosen)
    return text, missing


def _cffi_ready(decl: Declaration) -> str:
    # cffi reads enums with explicit values fine; forward declarations of structs stay opaque
    return decl.text


# --- observations ----------------------------------------------------------------------------------------------


@dataclass
class SeqState:
    seq_id: int
    empty: bool
    pos_min: int | None = None
    pos_max: int | None = None
    n_cells: int | None = None  # cells holding this sequence (known from the b5415 cache view only)


@dataclass
class MemorySnapshot:
    api: str
    seqs: dict[int, SeqState]
    total_cells: int | None = None  # cell-sequence pairs in the whole cache, when the API tells
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "api": self.api,
            "total_cells": self.total_cells,
            "seqs": {str(k): asdict(v) for k, v in self.seqs.items()},
            "notes": self.notes,
        }

    def non_empty(self) -> list[int]:
        return [s for s, state in self.seqs.items() if not state.empty]


@dataclass
class TraceStep:
    token: int
    logit: float
    runner_up: int
    margin: float  # top-1 minus top-2 logit: how far this greedy choice is from a tie
    piece: str


@dataclass
class Trace:
    prompt_tokens: list[int]
    steps: list[TraceStep]
    stopped: str  # "max_tokens", "eog", "context_full"

    def tokens(self) -> list[int]:
        return [s.token for s in self.steps]


class Observer:
    """libllama calls on the handles the consumer library returns; built once per child process."""

    def __init__(self, bindings: Bindings, tree: Path, declarations: tuple[str, dict[str, str]] | None = None) -> None:
        self.bindings = bindings
        self.tree = tree
        self.ffi: cffi.FFI = bindings.ffi
        # declarations: what llama_declarations(tree) returns, when a parent process already made them
        text, missing = declarations if declarations is not None else llama_declarations(tree)
        self.missing = dict(missing)
        try:
            self.ffi.cdef(text, override=True)
        except cffi.CDefError as exc:
            raise ObserveError(f"cffi cannot read llama.h declarations of {tree}: {exc}") from exc
        self.lib = self.ffi.dlopen(str(bindings.library_path))
        self.available = {name for name in WANTED if name not in self.missing and self._exported(name)}
        # consumer handle -> llama.cpp object; the session sets the driver's accessors (identity by default)
        self.context_of: Any = lambda handle: handle
        self.model_of: Any = lambda handle: handle

    def _ctx(self, handle: Any) -> Any:
        """The llama_context behind a consumer's context handle (already one: as it is)."""
        if self.ffi.typeof(handle) is self.ffi.typeof(CONTEXT_POINTER):
            return handle
        return self.context_of(handle)

    def _exported(self, name: str) -> bool:
        try:
            getattr(self.lib, name)
        except AttributeError:
            self.missing[name] = "declared in llama.h but not exported by the library"
            return False
        return True

    def has(self, *names: str) -> bool:
        return all(n in self.available for n in names)

    def why_not(self, *names: str) -> str:
        return "; ".join(f"{n}: {self.missing.get(n, 'unavailable')}" for n in names if n not in self.available)

    # -- context facts

    def context_info(self, ctx: Any) -> dict[str, int]:
        ctx = self._ctx(ctx)
        info: dict[str, int] = {}
        for fact in RELEASES.context_info:
            if fact.fn in self.available:
                fn = getattr(self.lib, fact.fn)
                info[fact.key] = int(fn() if fact.global_ else fn(ctx))
        return info

    def per_sequence_capacity(self, ctx: Any) -> int:
        """Cells each sequence can count on when all of them are in use (b7836 streams; b5415 a fair share)."""
        info = self.context_info(ctx)
        share = info["n_ctx"] // max(1, info.get("n_seq_max", 1))
        return min(info.get("n_ctx_seq", info["n_ctx"]), share)

    # -- memory

    def memory_query(self) -> MemoryQuery | None:
        """The first way of reading the memory (releases.yaml `observer.memory_queries`) the library has."""
        return next((q for q in RELEASES.memory_queries if self.has(*q.needs)), None)

    def memory_api(self) -> str | None:
        query = self.memory_query()
        return query.label if query is not None else None

    def memory(self, ctx: Any, n_seqs: int) -> MemorySnapshot:
        ctx = self._ctx(ctx)
        query = self.memory_query()
        if query is None:  # named: every way but the last resort
            tried = [n for q in RELEASES.memory_queries[:-1] for n in q.needs]
            raise ObserveError("no memory query API: " + self.why_not(*tried))
        fns = {role: getattr(self.lib, name) for role, name in query.fns.items()}
        if query.kind == "positions":
            return self._memory_new(ctx, n_seqs, query, fns)
        if query.kind == "cell_view":
            return self._memory_view(ctx, n_seqs, query, fns)
        return self._memory_old(ctx, n_seqs, query, fns)

    def _memory_new(self, ctx: Any, n_seqs: int, query: MemoryQuery, fns: dict[str, Any]) -> MemorySnapshot:
        mem = fns["memory"](ctx)
        # ids at or above n_seq_max abort inside llama.cpp (without kv_unified): never ask for them
        limit = min(n_seqs, int(self.lib.llama_n_seq_max(ctx)))
        seqs: dict[int, SeqState] = {}
        for seq in range(limit):
            lo, hi = int(fns["pos_min"](mem, seq)), int(fns["pos_max"](mem, seq))
            seqs[seq] = SeqState(seq, empty=hi < 0, pos_min=lo if hi >= 0 else None, pos_max=hi if hi >= 0 else None)
        notes = [f"sequences >= n_seq_max ({limit}) not queried: llama.cpp asserts on them"] if limit < n_seqs else []
        return MemorySnapshot(query.label, seqs, None, notes)

    def _memory_view(self, ctx: Any, n_seqs: int, query: MemoryQuery, fns: dict[str, Any]) -> MemorySnapshot:
        per_cell = max(n_seqs, 8)
        view = self.ffi.new(CACHE_VIEW_POINTER)
        view[0] = fns["init"](ctx, per_cell)
        try:
            fns["update"](ctx, view)
            positions: dict[int, list[int]] = {}
            for i in range(view.n_cells):
                pos = int(view.cells[i].pos)
                for j in range(per_cell):
                    seq = int(view.cells_sequences[i * per_cell + j])
                    if seq >= 0:
                        positions.setdefault(seq, []).append(pos)
            total = int(view.token_count)
        finally:
            fns["free"](view)
        seqs = {s: SeqState(s, empty=True, n_cells=0) for s in range(n_seqs)}
        for seq, pos in positions.items():
            seqs[seq] = SeqState(seq, empty=False, pos_min=min(pos), pos_max=max(pos), n_cells=len(pos))
        return MemorySnapshot(query.label, dict(sorted(seqs.items())), total)

    def _memory_old(self, ctx: Any, n_seqs: int, query: MemoryQuery, fns: dict[str, Any]) -> MemorySnapshot:
        total = int(fns["n_tokens"](ctx))
        seqs = {}
        for seq in range(n_seqs):
            hi = int(fns["pos_max"](ctx, seq))
            seqs[seq] = SeqState(seq, empty=total == 0, pos_max=hi)
        return MemorySnapshot(query.label, seqs, total, [query.note] if query.note else [])

    def clear_memory(self, ctx: Any) -> None:
        ctx = self._ctx(ctx)
        way = self._memory_clear()
        if way is None:
            raise ObserveError("no way to clear memory: " + self.why_not(*(c.clear for c in RELEASES.memory_clear)))
        clear = getattr(self.lib, way.clear)
        if way.memory is not None:  # the memory module's clear, buffers zeroed as the context's clear did
            clear(getattr(self.lib, way.memory)(ctx), True)
        else:
            clear(ctx)

    def _memory_clear(self) -> MemoryClear | None:
        """The first way of clearing the memory (releases.yaml `observer.memory_clear`) the library has."""
        return next((c for c in RELEASES.memory_clear if self.has(c.clear, *([c.memory] if c.memory else []))), None)

    # -- perf counters

    def perf(self, ctx: Any) -> dict[str, float]:
        ctx = self._ctx(ctx)
        if not self.has(*PERF):
            raise ObserveError("no perf counters: " + self.why_not(*PERF))
        # counters are booked when llama.cpp synchronises (e.g. on reading logits): book the last decode too
        self.lib.llama_synchronize(ctx)
        data = self.lib.llama_perf_context(ctx)
        # every field the header declares, whatever the release added
        return {name: getattr(data, name) for name, _ in self.ffi.typeof(data).fields}

    def reset_perf(self, ctx: Any) -> None:
        ctx = self._ctx(ctx)
        if not self.has(*PERF):
            raise ObserveError("no perf counters: " + self.why_not(*PERF))
        self.lib.llama_synchronize(ctx)
        self.lib.llama_perf_context_reset(ctx)

    # -- logits and a reference greedy decode

    def piece(self, vocab: Any, token: int, special: bool = True) -> str:
        buf = self.ffi.new("char[]", 64)
        n = self.lib.llama_token_to_piece(vocab, token, buf, 64, 0, special)
        return self.ffi.unpack(buf, max(0, n)).decode("utf-8", errors="replace")

    def _decode(self, ctx: Any, tokens: list[int], start: int) -> int:
        batch = self.lib.llama_batch_init(len(tokens), 0, 1)
        try:
            for i, token in enumerate(tokens):
                batch.token[i] = token
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = i == len(tokens) - 1
            batch.n_tokens = len(tokens)
            return int(getattr(self.lib, RELEASES.calls["decode"])(ctx, batch))
        finally:
            self.lib.llama_batch_free(batch)

    def last_logits(self, ctx: Any, n_vocab: int) -> Any:
        ctx = self._ctx(ctx)
        import numpy as np  # here, not at the top: most checks never decode, and numpy costs a child 0.2 s

        ptr = getattr(self.lib, RELEASES.calls["logits"])(ctx, -1)
        if ptr == self.ffi.NULL:
            raise ObserveError(f"{RELEASES.calls['logits']} returned NULL")
        return np.frombuffer(self.ffi.buffer(ptr, n_vocab * 4), dtype=np.float32).copy()

    def greedy_trace(self, ctx: Any, prompt_tokens: list[int], max_tokens: int) -> Trace:
        """Decode the prompt in sequence 0 and take the argmax token step by step, as a greedy sampler would,
        recording the top-2 margin at every step (the number that tells a near-tie from a real divergence)."""
        ctx = self._ctx(ctx)
        if not self.has(*DECODE):
            raise ObserveError("cannot decode through libllama: " + self.why_not(*DECODE))
        vocab = self.lib.llama_model_get_vocab(self.lib.llama_get_model(ctx))
        n_vocab = int(self.lib.llama_vocab_n_tokens(vocab))
        n_ctx = int(self.lib.llama_n_ctx(ctx))
        self.clear_memory(ctx)
        ret = self._decode(ctx, prompt_tokens, 0)
        if ret != 0:
            raise ObserveError(f"{RELEASES.calls['decode']} of the prompt returned {ret}")
        steps: list[TraceStep] = []
        pos, stopped = len(prompt_tokens), "max_tokens"
        while len(steps) < max_tokens:
            logits = self.last_logits(ctx, n_vocab)
            top2 = (-logits).argpartition(1)[:2]
            first, second = sorted(top2.tolist(), key=lambda t: (-logits[t], t))
            token = int(first)
            steps.append(TraceStep(token, float(logits[first]), int(second), float(logits[first] - logits[second]),
                                   self.piece(vocab, token)))  # fmt: skip
            if self.lib.llama_vocab_is_eog(vocab, token):
                stopped = "eog"
                break
            if pos >= n_ctx:
                stopped = "context_full"
                break
            ret = self._decode(ctx, [token], pos)
            if ret != 0:
                raise ObserveError(f"{RELEASES.calls['decode']} of generated token at position {pos} returned {ret}")
            pos += 1
        self.clear_memory(ctx)
        return Trace(list(prompt_tokens), steps, stopped)
