"""A llama.cpp release's run-time contract as data (`contracts/<version>.yaml`), and a checker that replays a call
trace (verify/trace.py) against it.

A clause says what one rule of the release constrains (sequence ids, seq_cp ranges, batch positions, per-sequence
capacity, clear semantics), the condition under which a call breaks it, the consequence at that release (the
process aborts, llama_decode returns -1 or 1, or the call runs with a different result), why, and the remedy. The
condition is evaluated by a named predicate of this module (`check`), parametrised by the contract's constants;
each clause carries synthetic traces that must (`violates`) and must not (`holds`) break it, tested like the
rules' valid/invalid cases.

The checker replays a trace of either release: the calls are already one vocabulary (`seq_rm` on a context,
whether the code called llama_kv_self_seq_rm or llama_memory_seq_rm), and the replay keeps each context's
sequences (the positions each holds) as the traced run left them, checking every call against the target's
rules before applying it. Replaying the old build's trace against the new release's contract predicts which
calls will abort or be rejected there, before any migration.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from verify.errors import ToolError
from verify.outcomes import CheckStatus
from verify.releases import RELEASES
from verify.trace import MEMORY_OPS, Event, Trace, events, read_trace, resolve

if TYPE_CHECKING:
    from verify.checks import CheckResult

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# a checkout keeps contracts/ beside the packages; the wheel ships them under migrate/_data (pyproject)
CONTRACT_DIRS = (_PACKAGE_ROOT / "contracts", _PACKAGE_ROOT / "migrate" / "_data" / "contracts")

ABORT, REJECTED, NO_SLOT, DIFFERENT = "abort", "decode_rejected", "decode_no_slot", "silently_different"
CONSEQUENCES: dict[str, str] = {
    ABORT: "the process aborts (GGML_ASSERT)",
    REJECTED: "llama_decode returns -1 (invalid input batch); nothing is decoded",
    NO_SLOT: "llama_decode returns 1 (no memory slot for the batch)",
    DIFFERENT: "runs, with a different result",
}
# consequences that stop the consumer at the target: a predicted run-time break
BREAKS = (ABORT, REJECTED, NO_SLOT)
BATCH_OPS = ("decode", "encode")
OPS = ("context", "free", *MEMORY_OPS, *BATCH_OPS)


class ContractError(ToolError):
    """A contract file that does not parse or does not validate (the message names the file and the clause)."""


# --- the model --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A synthetic trace beside a clause: it must break the clause (`violates`, with at least `values` in one
    violation) or not (`holds`); `assume` as the checker's assumptions."""

    clause: str
    name: str
    violates: bool
    trace: tuple[Event, ...]
    values: dict[str, Any] = field(default_factory=dict)
    assume: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Clause:
    id: str
    constrains: str
    check: str  # the predicate (PREDICATES) that decides a call
    calls: tuple[str, ...]  # operations the predicate looks at
    condition: str
    consequence: str  # one of CONSEQUENCES
    why: str
    source: str  # where in the release's sources the rule lives
    remedy: str = ""
    remedy_rule: str | None = None  # a migration rule that removes the cause, when one exists
    cases: tuple[Case, ...] = ()

    @property
    def breaks(self) -> bool:
        return self.consequence in BREAKS


@dataclass(frozen=True)
class Contract:
    version: str
    stand_ins: tuple[str, ...]
    description: str
    constants: dict[str, int]
    clauses: tuple[Clause, ...]
    path: Path | None = None

    def clause(self, clause_id: str) -> Clause:
        for clause in self.clauses:
            if clause.id == clause_id:
                return clause
        raise KeyError(clause_id)

    def names(self, version: str) -> bool:
        return version == self.version or version in self.stand_ins


def _keys(data: Any, where: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ContractError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        raise ContractError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(required | optional))}")  # fmt: skip
    missing = sorted(required - set(data))
    if missing:
        raise ContractError(f"{where}: missing key(s) {', '.join(missing)}")
    return data


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ContractError(f"{where}: expected non-empty text, got {value!r}")
    return " ".join(value.split())


# arguments each operation takes in a synthetic trace (as the tracer records them), beside op/ctx/fn/ret
EVENT_ARGS: dict[str, set[str]] = {
    "context": {"n_ctx", "n_batch", "n_ubatch", "n_seq_max", "kv_unified", "flash_attn", "flash_attn_type",
                "n_ctx_actual", "n_seq_max_actual", "n_ctx_seq"},
    "free": set(),
    "clear": {"data"},
    "seq_rm": {"seq", "p0", "p1"},
    "seq_cp": {"src", "dst", "p0", "p1"},
    "seq_keep": {"seq"},
    "seq_add": {"seq", "p0", "p1", "delta"},
    "seq_div": {"seq", "p0", "p1", "d"},
    "seq_pos_min": {"seq"},
    "seq_pos_max": {"seq"},
    "decode": {"seq", "pos", "batch"},
    "encode": {"seq", "pos", "batch"},
}  # fmt: skip
# the function a synthetic call names when its case gives none: the newest release's (verify/data/releases.yaml)
DEFAULT_FN = {op: RELEASES.default_function(op) for op in ("context", "free", "decode", "encode", *MEMORY_OPS)}
RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def _positions(value: Any, where: str) -> list[int]:
    if isinstance(value, str) and RANGE.match(value):
        lo, hi = (int(x) for x in RANGE.match(value).groups())
        return list(range(lo, hi + 1))
    if isinstance(value, int):
        return [value]
    if isinstance(value, list) and all(isinstance(x, int) for x in value):
        return list(value)
    raise ContractError(f"{where}: pos must be an integer, a list of integers or 'a..b', got {value!r}")


def _event(data: Any, where: str, index: int) -> Event:
    """One synthetic call: {op, ctx?, fn?, ret?, ...the operation's arguments}."""
    if not isinstance(data, dict) or data.get("op") not in EVENT_ARGS:
        raise ContractError(f"{where}: each call needs op, one of {', '.join(EVENT_ARGS)}; got {data!r}")
    op = data["op"]
    _keys(data, where, {"op"}, {"ctx", "fn", "ret"} | EVENT_ARGS[op])
    args = {k: v for k, v in data.items() if k not in ("op", "ctx", "fn", "ret")}
    ctx = str(data.get("ctx", "c0"))
    ret = data.get("ret", 0 if op in BATCH_OPS else (True if op == "seq_rm" else None))
    if op in BATCH_OPS:
        if "batch" in args:
            if "seq" in args or "pos" in args:
                raise ContractError(f"{where}: give either batch or seq + pos")
            tokens = args.pop("batch")
            if not isinstance(tokens, list):
                raise ContractError(f"{where}: batch must be a list of {{pos, seq}}")
            pos, seqs = [], []
            for k, token in enumerate(tokens):
                _keys(token, f"{where} batch[{k}]", {"pos", "seq"}, set())
                pos.append(int(token["pos"]))
                seqs.append([int(s) for s in (token["seq"] if isinstance(token["seq"], list) else [token["seq"]])])
        else:
            _keys(args, where, {"pos"}, {"seq"})
            pos = _positions(args.pop("pos"), where)
            seq = int(args.pop("seq", 0))
            seqs = [[seq] for _ in pos]
        args = {"n": len(pos), "pos": pos, "seq": seqs, "embd": False}
    if op == "context":
        args.setdefault("n_seq_max", 1)
        args.setdefault("n_ctx", 512)
    return Event(op, ctx, args, str(data.get("fn") or DEFAULT_FN.get(op, op)), index, True, ret, f"case:{index + 1}")


def _case(data: Any, clause: str, violates: bool, where: str) -> Case:
    _keys(data, where, {"name", "trace"}, {"values", "assume"} if violates else {"assume"})
    name = _text(data["name"], f"{where} name")
    if not isinstance(data["trace"], list) or not data["trace"]:
        raise ContractError(f"{where} ({name}): trace must be a non-empty list of calls")
    trace = tuple(_event(e, f"{where} ({name}) call {i + 1}", i) for i, e in enumerate(data["trace"]))
    assume = data.get("assume") or {}
    _keys(assume, f"{where} ({name}) assume", set(), set(ASSUMPTIONS))
    values = data.get("values") or {}
    if not isinstance(values, dict):
        raise ContractError(f"{where} ({name}): values must be a mapping")
    return Case(clause, name, violates, trace, dict(values), dict(assume))


CLAUSE_KEYS = {"id", "constrains", "check", "calls", "condition", "consequence", "why", "source"}


def _clause(data: Any, where: str) -> Clause:
    _keys(data, where, CLAUSE_KEYS | {"cases"}, {"remedy", "remedy_rule"})
    clause_id = data["id"]
    if not isinstance(clause_id, str) or not re.fullmatch(r"[a-z][a-z0-9-]*", clause_id):
        raise ContractError(f"{where}: id must be lower-case words joined by '-', got {clause_id!r}")
    where = f"{where} ({clause_id})"
    if data["check"] not in PREDICATES:
        raise ContractError(f"{where}: check {data['check']!r} is not a predicate of verify/contract.py; known: "
                            f"{', '.join(sorted(PREDICATES))}")  # fmt: skip
    if data["consequence"] not in CONSEQUENCES:
        raise ContractError(f"{where}: consequence must be one of {', '.join(CONSEQUENCES)}, got "
                            f"{data['consequence']!r}")  # fmt: skip
    calls = data["calls"]
    if not isinstance(calls, list) or not calls or any(c not in OPS for c in calls):
        raise ContractError(f"{where}: calls must be a non-empty list of {', '.join(OPS)}; got {calls!r}")
    cases_data = _keys(data["cases"], f"{where} cases", {"violates", "holds"}, set())
    cases: list[Case] = []
    for kind in ("violates", "holds"):
        items = cases_data[kind]
        if not isinstance(items, list) or not items:
            raise ContractError(f"{where} cases.{kind}: at least one case")
        cases += [_case(c, clause_id, kind == "violates", f"{where} cases.{kind}[{i}]") for i, c in enumerate(items)]
    remedy_rule = data.get("remedy_rule")
    if remedy_rule is not None and not isinstance(remedy_rule, str):
        raise ContractError(f"{where}: remedy_rule must be a rule id")
    return Clause(
        id=clause_id, constrains=_text(data["constrains"], f"{where} constrains"), check=data["check"],
        calls=tuple(calls), condition=_text(data["condition"], f"{where} condition"),
        consequence=data["consequence"], why=_text(data["why"], f"{where} why"),
        source=_text(data["source"], f"{where} source"),
        remedy=_text(data["remedy"], f"{where} remedy") if data.get("remedy") else "", remedy_rule=remedy_rule,
        cases=tuple(cases),
    )  # fmt: skip


DEFAULT_CONSTANTS = {"max_seq": 256, "ctx_pad": 256}


def load_contract(path: Path) -> Contract:
    """Read and validate a contract file; every problem is a ContractError naming the file and where."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"{path}: cannot read: {exc}") from exc
    where = str(path)
    _keys(data, where, {"contract", "clauses"}, {"constants"})
    head = _keys(data["contract"], f"{where} contract", {"version", "description"}, {"stand_ins"})
    stand_ins = head.get("stand_ins") or []
    if not isinstance(stand_ins, list) or not all(isinstance(s, str) for s in stand_ins):
        raise ContractError(f"{where} contract.stand_ins: a list of versions")
    constants = dict(DEFAULT_CONSTANTS)
    given = _keys(data.get("constants") or {}, f"{where} constants", set(), set(DEFAULT_CONSTANTS))
    for key, value in given.items():
        if not isinstance(value, int) or value <= 0:
            raise ContractError(f"{where} constants.{key}: a positive integer, got {value!r}")
        constants[key] = value
    if not isinstance(data["clauses"], list) or not data["clauses"]:
        raise ContractError(f"{where}: clauses must be a non-empty list")
    clauses = tuple(_clause(c, f"{where} clauses[{i}]") for i, c in enumerate(data["clauses"]))
    seen: set[str] = set()
    for clause in clauses:
        if clause.id in seen:
            raise ContractError(f"{where}: clause id {clause.id!r} given twice")
        seen.add(clause.id)
    return Contract(str(head["version"]), tuple(stand_ins), _text(head["description"], f"{where} description"),
                    constants, clauses, path)  # fmt: skip


def contract_files() -> list[Path]:
    for folder in CONTRACT_DIRS:
        if folder.is_dir():
            return sorted(folder.glob("*.yaml"))
    return []


@functools.lru_cache(maxsize=16)
def find_contract(version: str) -> Contract | None:
    """The contract of a release (by its version or a stand-in's), None when there is none."""
    for path in contract_files():
        if path.stem == version:
            return load_contract(path)
    for path in contract_files():
        contract = load_contract(path)
        if contract.names(version):
            return contract
    return None


def require_contract(version: str) -> Contract:
    contract = find_contract(version)
    if contract is None:
        known = ", ".join(p.stem for p in contract_files()) or "none"
        raise ContractError(f"no run-time contract for llama.cpp {version} (contracts/<version>.yaml; known: {known})")
    return contract


# --- replay -----------------------------------------------------------------------------------------------------

ASSUMPTIONS = {"kv_unified": "contexts get kv_unified = (n_seq_max > 1), as the opt-in rule kv-unified writes"}


@dataclass(frozen=True)
class Assume:
    """What the replay assumes beyond the trace: `kv_unified` True as if the rule kv-unified had been applied
    (None: what the trace recorded; a release without the field runs with the target's default, false)."""

    kv_unified: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("kv_unified", self.kv_unified),) if v is not None}


@dataclass
class ContextState:
    """One context as the target would set it up, and the positions each sequence holds in the traced run."""

    n_ctx: int | None
    n_seq_max: int | None
    kv_unified: bool
    n_ctx_seq: int | None
    seqs: dict[int, set[int]] = field(default_factory=dict)

    def positions(self, seq: int) -> set[int]:
        return self.seqs.setdefault(seq, set())

    def last(self, seq: int) -> int:
        held = self.seqs.get(seq)
        return max(held) if held else -1

    def seq_bound(self, constants: dict[str, int]) -> int | None:
        """Sequence ids must be below this at the target (seq_to_stream.size() / the batch allocator's bound)."""
        if self.kv_unified:
            return constants["max_seq"]
        return self.n_seq_max


def _pad(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def context_state(event: Event, constants: dict[str, int], assume: Assume) -> ContextState:
    """The target's view of a context creation: n_ctx padded to ctx_pad, each sequence n_ctx / n_seq_max cells
    (padded) without kv_unified (src/llama-context.cpp at the target)."""
    args = event.args
    n_seq_max = max(1, int(args.get("n_seq_max") or 1))
    requested = int(args.get("n_ctx") or 0) or int(args.get("n_ctx_actual") or 0)
    recorded = args.get("kv_unified")
    unified = bool(recorded) if assume.kv_unified is None else (assume.kv_unified and n_seq_max > 1)
    if not requested:
        return ContextState(None, n_seq_max, unified, None)
    pad = constants["ctx_pad"]
    n_ctx = _pad(requested, pad)
    if "n_ctx_seq" in args and (assume.kv_unified is None or bool(recorded) == unified):
        n_ctx_seq = int(args["n_ctx_seq"])  # recorded by the target itself
    else:
        n_ctx_seq = n_ctx if unified else _pad(n_ctx // n_seq_max, pad)
    return ContextState(n_ctx, n_seq_max, unified, n_ctx_seq)


@dataclass
class Violation:
    clause: str
    consequence: str
    call: str  # the call as written, e.g. llama_kv_self_seq_rm(ctx, 4, 0, -1)
    fn: str
    values: dict[str, Any]
    where: str | None
    check: str | None
    index: int
    # an earlier call of the same check run already broke the contract: at the target the run would have stopped
    # or gone another way before this call, which the trace (of a release that accepted it) shows anyway
    after_break: bool = False

    def line(self) -> str:
        values = ", ".join(f"{k} {v}" for k, v in self.values.items())
        return f"{self.where or '?'}: ({self.clause}) {self.call}: {values}"

    def to_json(self) -> dict[str, Any]:
        return {"clause": self.clause, "consequence": self.consequence, "call": self.call, "fn": self.fn,
                "values": self.values, "where": self.where, "check": self.check, "index": self.index,
                "after_break": self.after_break}  # fmt: skip


Predicate = Callable[[ContextState, Event, dict[str, int]], list[dict[str, Any]]]


def _seq_args(event: Event) -> list[tuple[str, int]]:
    if event.op == "seq_cp":
        return [("src", int(event.args["src"])), ("dst", int(event.args["dst"]))]
    return [("seq", int(event.args["seq"]))] if "seq" in event.args else []


def _memory_seq_id_range(state: ContextState, event: Event, constants: dict[str, int]) -> list[dict[str, Any]]:
    bound = state.seq_bound(constants)
    if bound is None:
        return []
    found = []
    for name, seq in _seq_args(event):
        if event.op == "seq_rm" and seq == -1:  # any sequence
            continue
        if seq < 0 or seq >= bound:
            found.append({"argument": name, "seq_id": seq, "n_seq_max": state.n_seq_max,
                          "kv_unified": state.kv_unified, "bound": bound})  # fmt: skip
    return found


def _batch_tokens(event: Event, state: ContextState) -> list[tuple[int, int, list[int]]]:
    """(index, position, sequence ids) per token; positions the batch leaves out are assigned as the library
    does (each sequence continues from its last position)."""
    seqs = event.args.get("seq") or [[0]] * int(event.args.get("n", 0))
    positions = event.args.get("pos")
    tokens = []
    next_pos: dict[int, int] = {}
    for i, ids in enumerate(seqs):
        if positions is not None:
            pos = int(positions[i])
        else:
            first = ids[0] if ids else 0
            pos = next_pos.get(first, state.last(first) + 1)
        for s in ids:
            next_pos[s] = pos + 1
        tokens.append((i, pos, list(ids)))
    return tokens


def _batch_seq_id_range(state: ContextState, event: Event, constants: dict[str, int]) -> list[dict[str, Any]]:
    bound = state.seq_bound(constants)
    if bound is None:
        return []
    for i, _pos, ids in _batch_tokens(event, state):
        for seq in ids:
            if seq < 0 or seq >= bound:
                return [{"token": i, "seq_id": seq, "n_seq_max": state.n_seq_max, "kv_unified": state.kv_unified,
                         "bound": bound}]  # fmt: skip
    return []


def _in_range(state: ContextState, constants: dict[str, int], seq: int) -> bool:
    bound = state.seq_bound(constants)
    return seq >= 0 and (bound is None or seq < bound)


def _seq_cp_partial(state: ContextState, event: Event, constants: dict[str, int]) -> list[dict[str, Any]]:
    src, dst = int(event.args["src"]), int(event.args["dst"])
    if src == dst or state.kv_unified or state.n_ctx_seq is None:
        return []
    if not (_in_range(state, constants, src) and _in_range(state, constants, dst)):
        return []  # an id out of range aborts first (seq-id-range)
    size = state.n_ctx_seq
    p0, p1 = int(event.args.get("p0", -1)), int(event.args.get("p1", -1))
    partial = (p0 > 0 and p0 + 1 < size) or (p1 > 0 and p1 + 1 < size)
    if not partial:
        return []
    return [{"src": src, "dst": dst, "p0": p0, "p1": p1, "stream_cells": size, "kv_unified": False}]


def _by_sequence(event: Event, state: ContextState, constants: dict[str, int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for _i, pos, ids in _batch_tokens(event, state):
        for seq in ids:
            if _in_range(state, constants, seq):
                found.setdefault(seq, []).append(pos)
    return found


def _positions_continue(state: ContextState, event: Event, constants: dict[str, int]) -> list[dict[str, Any]]:
    if event.args.get("embd") or event.args.get("pos") is None:
        return []  # positions the library assigns continue by construction
    found = []
    for seq, positions in _by_sequence(event, state, constants).items():
        last, first = state.last(seq), min(positions)
        if last >= 0 and first != last + 1:
            found.append({"seq_id": seq, "last_pos": last, "batch_first_pos": first, "required_pos": last + 1})
        elif max(positions) - first + 1 > len(positions):
            found.append({"seq_id": seq, "batch_positions": sorted(positions), "problem": "not consecutive"})
    return found


def _per_sequence_capacity(state: ContextState, event: Event, constants: dict[str, int]) -> list[dict[str, Any]]:
    if state.kv_unified or state.n_ctx_seq is None or (state.n_seq_max or 1) <= 1:
        return []
    found = []
    for seq, positions in _by_sequence(event, state, constants).items():
        cells = len(state.seqs.get(seq, set()) | set(positions))
        if cells > state.n_ctx_seq:
            found.append({"seq_id": seq, "cells": cells, "n_ctx_seq": state.n_ctx_seq, "n_ctx": state.n_ctx,
                          "n_seq_max": state.n_seq_max})  # fmt: skip
    return found


def _memory_clear_data(state: ContextState, event: Event, constants: dict[str, int]) -> list[dict[str, Any]]:
    data = event.args.get("data")
    if data is True:
        return []
    if data is None:
        return [{"data": "true (implied by llama_kv_self_clear)", "successor": "llama_memory_clear(mem, data)"}]
    return [{"data": False}]


PREDICATES: dict[str, Predicate] = {
    "memory_seq_id_range": _memory_seq_id_range,
    "batch_seq_id_range": _batch_seq_id_range,
    "seq_cp_partial": _seq_cp_partial,
    "positions_continue": _positions_continue,
    "per_sequence_capacity": _per_sequence_capacity,
    "memory_clear_data": _memory_clear_data,
}


def _apply(state: ContextState, event: Event, constants: dict[str, int]) -> None:
    """The traced run's effect of a call that returned, on the positions each sequence holds."""
    a = event.args
    op = event.op

    def span(p0: int, p1: int) -> tuple[int, float]:
        return (0 if p0 < 0 else p0), (float("inf") if p1 < 0 else p1)

    if op == "clear":
        state.seqs.clear()
    elif op == "seq_rm" and event.ret not in (False, 0):
        lo, hi = span(int(a["p0"]), int(a["p1"]))
        targets = list(state.seqs) if int(a["seq"]) < 0 else [int(a["seq"])]
        for seq in targets:
            state.seqs[seq] = {p for p in state.seqs.get(seq, set()) if not lo <= p < hi}
    elif op == "seq_cp":
        lo, hi = span(int(a["p0"]), int(a["p1"]))
        src, dst = int(a["src"]), int(a["dst"])
        if src != dst:
            state.positions(dst).update(p for p in state.seqs.get(src, set()) if lo <= p < hi)
    elif op == "seq_keep":
        keep = int(a["seq"])
        state.seqs = {keep: state.seqs.get(keep, set())}
    elif op in ("seq_add", "seq_div"):
        lo, hi = span(int(a["p0"]), int(a["p1"]))
        seq = int(a["seq"])

        def moved(p: int) -> int:
            return p + int(a["delta"]) if op == "seq_add" else p // max(1, int(a["d"]))

        held = state.seqs.get(seq, set())
        state.seqs[seq] = {moved(p) if lo <= p < hi else p for p in held if not (lo <= p < hi and moved(p) < 0)}
    elif op == "decode" and event.ret == 0:
        for _i, pos, ids in _batch_tokens(event, state):
            for seq in ids:
                state.positions(seq).add(pos)


def check_events(contract: Contract, events: Iterable[Event], assume: Assume = Assume()) -> list[Violation]:  # noqa: B008
    """Every call that breaks a clause of the contract, in call order (a call may break several). Contexts are
    keyed by the events' `ctx`; the check a call came from is kept (`check`), and each check's run starts with
    no context (the checks run in separate processes)."""
    states: dict[tuple[str | None, str | None], ContextState] = {}
    constants = contract.constants
    found: list[Violation] = []
    broken: dict[str | None, int] = {}  # check -> index of its first call that breaks the contract
    for event in events:
        key = (event.check, event.ctx)
        if event.op == "context":
            if event.returned and event.ctx:
                states[key] = context_state(event, constants, assume)
            continue
        if event.op == "free":
            states.pop(key, None)
            continue
        state = states.get(key)
        if state is None:  # a context created before tracing began, or a handle the trace cannot map
            state = states[key] = ContextState(None, None, bool(assume.kv_unified), None)
        for clause in contract.clauses:
            if event.op not in clause.calls:
                continue
            for values in PREDICATES[clause.check](state, event, constants):
                after = broken.get(event.check, event.index) < event.index
                if clause.breaks:
                    broken.setdefault(event.check, event.index)
                found.append(Violation(clause.id, clause.consequence, event.describe(), event.fn, values, event.where,
                                       event.check, event.index, after))  # fmt: skip
        if event.returned:
            _apply(state, event, constants)
    return found


# --- summaries ----------------------------------------------------------------------------------------------------


@dataclass
class ViolationGroup:
    """One clause broken at one place: how many times, in which checks, and the first call's values (the first
    call that was its check's first break, when one was)."""

    clause: str
    consequence: str
    where: str | None
    count: int
    checks: list[str]
    first: Violation
    leading: int = 0  # calls that were the first break of their check run (the rest came after one)

    @property
    def only_after_break(self) -> bool:
        """Every call here came after an earlier break of the same check: at the target it may never be reached."""
        return self.leading == 0

    def line(self) -> str:
        values = ", ".join(f"{k} {v}" for k, v in self.first.values.items())
        times = f" ({self.count} calls)" if self.count > 1 else ""
        return f"{self.where or '?'}: ({self.clause}) {self.first.call}: {values}{times}"

    def to_json(self) -> dict[str, Any]:
        return {"clause": self.clause, "consequence": self.consequence, "where": self.where, "count": self.count,
                "leading": self.leading, "checks": self.checks, "first": self.first.to_json()}  # fmt: skip


def group(violations: list[Violation]) -> list[ViolationGroup]:
    groups: dict[tuple[str, str | None], ViolationGroup] = {}
    for v in violations:
        key = (v.clause, v.where)
        if key not in groups:
            groups[key] = ViolationGroup(v.clause, v.consequence, v.where, 0, [], v)
        g = groups[key]
        g.count += 1
        if not v.after_break:
            if g.leading == 0:
                g.first = v
            g.leading += 1
        if v.check and v.check not in g.checks:
            g.checks.append(v.check)
    return list(groups.values())


def check_case(contract: Contract, case: Case) -> tuple[bool, list[Violation]]:
    """Whether a clause's own case comes out as it says: (as expected, the violations of its clause)."""
    assume = Assume(**case.assume)
    mine = [v for v in check_events(contract, case.trace, assume) if v.clause == case.clause]
    if not case.violates:
        return not mine, mine
    if not mine:
        return False, mine
    return any(all(v.values.get(k) == want for k, want in case.values.items()) for v in mine), mine


# --- traced checks ------------------------------------------------------------------------------------------------

TRACE_SUFFIX = ".trace"
FIRST_LIMIT = 20  # violation groups kept in a check's evidence


def trace_file(trace_dir: Path, label: str, check: str) -> Path:
    # a user test's name is a pytest node id (`dir/file.py::test[param]`): one flat file name all the same
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in check)
    return trace_dir / f"{label}-{safe}{TRACE_SUFFIX}"


def consumer_root(library: Path) -> Path | None:
    """The consumer tree a library was built from (its build manifest), to show callers relative to it."""
    from verify.manifest import read_manifest

    manifest = read_manifest(library)
    return Path(manifest.consumer_root) if manifest and manifest.consumer_root else None


def check_trace(path: Path, library: Path, check: str) -> tuple[Trace, list[Event]]:
    trace = resolve(read_trace(path), library, consumer_root(library))
    return trace, events(trace, check)


def first_break(violations: list[Violation]) -> Violation | None:
    return next((v for v in violations if v.consequence in BREAKS), None)


def annotate(result: CheckResult, path: Path, library: Path, contract: Contract | None) -> None:
    """A traced check's result gets what its trace showed: calls made (and the one the process died in), and,
    against `contract`, the violations; a failed check's message names the first break seen before the failure
    (JSON evidence, JUnit message and report all carry it)."""
    try:
        trace, found_events = check_trace(path, library, result.name)
    except ToolError as exc:
        result.evidence["trace"] = {"file": str(path), "error": str(exc)}
        return
    died = trace.last_unreturned
    info: dict[str, Any] = {"file": str(path), "calls": len(trace.calls)}
    if died is not None and result.status == CheckStatus.FAILED:
        info["died_in"] = {"call": died.fn, "where": died.where, "args": died.args}
    result.evidence["trace"] = info
    if contract is None:
        return
    violations = check_events(contract, found_events)
    if not violations:
        return
    first = first_break(violations)
    result.evidence["contract"] = {
        "contract": contract.version,
        "first_break": first.to_json() if first else None,
        "violations": [g.to_json() for g in group(violations)[:FIRST_LIMIT]],
    }
    if first is not None and result.status == CheckStatus.FAILED:
        result.message = f"{result.message} {break_note(contract.version, first)}".strip()


def break_note(version: str, violation: Violation) -> str:
    """How a failed check's message names the first contract break before the failure."""
    return f"[contract {version}: {violation.line()}: {CONSEQUENCES[violation.consequence]}]"


# --- prediction: an old build's calls against the target's contract -------------------------------------------


@dataclass
class Prediction:
    """What the traced checks of one build predict at a release: the clauses broken (grouped by place), those an
    assumption (e.g. the kv-unified rule applied) removes, and the call sites the checklist exercised."""

    contract: str
    build: str
    library: str
    assume: dict[str, Any]
    groups: list[ViolationGroup]
    remedied: list[ViolationGroup] = field(default_factory=list)
    calls: int = 0
    checks: list[str] = field(default_factory=list)
    call_sites: dict[str, int] = field(default_factory=dict)  # file:line -> calls traced there
    errors: list[str] = field(default_factory=list)  # traces that could not be read or resolved

    def breaks(self) -> list[ViolationGroup]:
        """Places where a check's run first breaks the contract: what the target will stop at."""
        return [g for g in self.groups if g.consequence in BREAKS and not g.only_after_break]

    def consequential(self) -> list[ViolationGroup]:
        """Breaks only seen after an earlier one in the same check: the traced release went on where the target
        would have stopped; fix the first ones and run again."""
        return [g for g in self.groups if g.consequence in BREAKS and g.only_after_break]

    def notes(self) -> list[ViolationGroup]:
        return [g for g in self.groups if g.consequence not in BREAKS]

    def to_json(self) -> dict[str, Any]:
        return {"contract": self.contract, "build": self.build, "library": self.library, "assume": self.assume,
                "breaks": [g.to_json() for g in self.breaks()],
                "after_break": [g.to_json() for g in self.consequential()],
                "notes": [g.to_json() for g in self.notes()],
                "remedied": [g.to_json() for g in self.remedied], "calls": self.calls, "checks": self.checks,
                "call_sites": self.call_sites, "errors": self.errors}  # fmt: skip


def predict(contract: Contract, traces: list[tuple[str, Path]], library: Path, build: str = "old",
            assume: Assume = Assume()) -> Prediction:  # noqa: B008  # fmt: skip
    """Replay each check's trace (check name, trace file) of one build against `contract`. With an assumption,
    the breaks it removes are listed as remedied, not as breaks."""
    all_events: list[Event] = []
    prediction = Prediction(contract.version, build, str(library), assume.to_json(), [])
    for check, path in traces:
        if not path.is_file():
            continue
        try:
            trace, found = check_trace(path, library, check)
        except ToolError as exc:
            prediction.errors.append(f"{check}: {exc}")
            continue
        prediction.calls += len(trace.calls)
        prediction.checks.append(check)
        all_events += found
        for call in trace.calls:
            if call.where:
                prediction.call_sites[call.where] = prediction.call_sites.get(call.where, 0) + 1
    prediction.groups = group(check_events(contract, all_events, assume))
    if assume != Assume():
        kept = {(g.clause, g.where) for g in prediction.groups}
        plain = group(check_events(contract, all_events))
        prediction.remedied = [g for g in plain if g.consequence in BREAKS and not g.only_after_break
                               and (g.clause, g.where) not in kept]  # fmt: skip
    return prediction
