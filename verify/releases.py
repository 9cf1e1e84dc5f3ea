"""llama.cpp's release facts the harness needs, as data: verify/data/releases.yaml loaded into a typed, checked model.

The observer (verify/observe.py), the trace reader and the tracer's generated wrappers (verify/trace.py), and the
contract replay's synthetic calls (verify/contract.py) take the llama.cpp names they use from here, so that a release
which renames one is an edit of the data file. `RELEASES` is the shipped table, loaded once on import; a table that
breaks a rule below is a `ReleaseDataError` naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

DATA_FILE = Path(__file__).resolve().parent / "data" / "releases.yaml"
TAG = re.compile(r"^b(\d+)$")
FUNCTION = re.compile(r"^llama_\w+$")
# the operations of a trace (verify/trace.py) and, for each, the C wrapper family tracer.c has for it
OPS = ("context", "free", "decode", "encode", "get_memory", "clear", "seq_rm", "seq_cp", "seq_keep", "seq_add",
       "seq_div", "seq_pos_min", "seq_pos_max")  # fmt: skip
MEMORY_OPS = ("clear", "seq_rm", "seq_cp", "seq_keep", "seq_add", "seq_div", "seq_pos_min", "seq_pos_max")
GROUPS = ("memory_new", "memory_view", "memory_old", "perf", "decode", "context_info", "context_params", "model_facts")
# the functions each way of reading the memory calls, by role (verify/observe.py Observer.memory)
# the observer's own greedy decode, by role
CALL_ROLES = ("decode", "logits")
QUERY_ROLES = {"positions": ("memory", "pos_min", "pos_max"), "cell_view": ("init", "update", "free"),
               "pos_max": ("pos_max", "n_tokens")}  # fmt: skip


class ReleaseDataError(ValueError):
    """The release table breaks one of its rules (the message names the key)."""


class Handle(StrEnum):
    """What a memory call takes: the context, or the context's memory module."""

    CONTEXT = "context"
    MEMORY = "memory"


def release_number(tag: str) -> int:
    """b7785 -> 7785 (releases compare by build number)."""
    found = TAG.match(tag)
    if found is None:
        raise ReleaseDataError(f"{tag!r} is no llama.cpp build tag (bNNNN)")
    return int(found.group(1))


@dataclass(frozen=True)
class Range:
    """The known releases that declare `names`: `since` through `until` (inclusive, None: open); `unseen`: none of
    them does, and why the names are listed all the same."""

    names: tuple[str, ...]
    since: str | None = None
    until: str | None = None
    unseen: str = ""

    def declared_at(self, tag: str) -> bool:
        if self.unseen:
            return False
        number = release_number(tag)
        return (self.since is None or release_number(self.since) <= number) and \
            (self.until is None or number <= release_number(self.until))  # fmt: skip


@dataclass(frozen=True)
class ContextFact:
    key: str  # as the evidence shows it
    fn: str
    global_: bool = False  # called without the context


@dataclass(frozen=True)
class MemoryQuery:
    """One way of reading the positions each sequence holds: its functions by role (QUERY_ROLES[kind])."""

    kind: str
    label: str
    fns: dict[str, str]
    note: str = ""

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(self.fns.values())


@dataclass(frozen=True)
class MemoryClear:
    clear: str
    memory: str | None = None  # the call that yields the memory module the clear takes (None: it takes the context)


@dataclass(frozen=True)
class TracedFunction:
    name: str
    op: str
    handle: Handle | None = None  # memory calls only
    wrap: bool = True


@dataclass(frozen=True)
class Releases:
    releases: tuple[str, ...]
    model_vocabulary: str
    ranges: tuple[Range, ...]
    types: dict[str, str]
    groups: dict[str, tuple[str, ...]]
    calls: dict[str, str]
    context_info: tuple[ContextFact, ...]
    memory_queries: tuple[MemoryQuery, ...]
    memory_clear: tuple[MemoryClear, ...]
    traced: tuple[TracedFunction, ...]
    # tracer.c's defines for what a tree's llama.h has: {define: field of the context parameters}, {define: function}
    tracer_fields: dict[str, str]
    tracer_functions: dict[str, str]

    @property
    def newest(self) -> str:
        return self.releases[-1]

    def range_of(self, name: str) -> Range:
        return next(r for r in self.ranges if name in r.names)

    def traced_function(self, name: str) -> TracedFunction | None:
        return next((t for t in self.traced if t.name == name), None)

    def default_function(self, op: str) -> str:
        """The function a synthetic call of `op` names: the first traced one the newest release declares."""
        for item in self.traced:
            if item.op == op and self.range_of(item.name).declared_at(self.newest):
                return item.name
        raise ReleaseDataError(f"traced: no function for {op!r} declared at {self.newest}")

    def group(self, key: str) -> tuple[str, ...]:
        return self.groups[key]

    def named(self) -> set[str]:
        """Every function the table names outside `ranges`."""
        names = {n for g in self.groups.values() for n in g} | {f.fn for f in self.context_info}
        names |= set(self.calls.values()) | set(self.tracer_functions.values())
        names |= {n for q in self.memory_queries for n in q.needs}
        names |= {n for c in self.memory_clear for n in (c.clear, c.memory) if n}
        return names | {t.name for t in self.traced}


# --- loading and checking -----------------------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReleaseDataError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ReleaseDataError(f"{where}: expected a non-empty list of function names")
    for name in value:
        _function(name, where)
    return tuple(value)


def _function(name: Any, where: str) -> str:
    if not isinstance(name, str) or not FUNCTION.match(name):
        raise ReleaseDataError(f"{where}: {name!r} is no llama.cpp function name (llama_...)")
    return name


def _only(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(table) - known
    if unknown:
        raise ReleaseDataError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(sorted(known))}")


def _release(tag: Any, known: tuple[str, ...], where: str) -> str:
    if tag not in known:
        raise ReleaseDataError(f"{where}: {tag!r} is not a known release ({', '.join(known)})")
    return str(tag)


def _ranges(items: Any, known: tuple[str, ...]) -> tuple[Range, ...]:
    if not isinstance(items, list):
        raise ReleaseDataError("ranges: expected a list")
    found = []
    for i, item in enumerate(items):
        where = f"ranges[{i}]"
        _only(_mapping(item, where), {"names", "since", "until", "unseen"}, where)
        since = _release(item["since"], known, f"{where}.since") if "since" in item else None
        until = _release(item["until"], known, f"{where}.until") if "until" in item else None
        if since and until and release_number(since) > release_number(until):
            raise ReleaseDataError(f"{where}: since {since} is after until {until}")
        unseen = str(item.get("unseen") or "")
        if unseen and (since or until):
            raise ReleaseDataError(f"{where}: `unseen` names no release: drop since/until")
        found.append(Range(_names(item.get("names"), f"{where}.names"), since, until, unseen))
    return tuple(found)


def _context_info(table: Any) -> tuple[ContextFact, ...]:
    facts = []
    for key, entry in _mapping(table, "observer.context_info").items():
        where = f"observer.context_info.{key}"
        _only(_mapping(entry, where), {"fn", "global"}, where)
        facts.append(ContextFact(key, _function(entry.get("fn"), where), bool(entry.get("global", False))))
    return tuple(facts)


def _memory_queries(items: Any) -> tuple[MemoryQuery, ...]:
    if not isinstance(items, list) or not items:
        raise ReleaseDataError("observer.memory_queries: expected a non-empty list")
    found = []
    for i, item in enumerate(items):
        where = f"observer.memory_queries[{i}]"
        _only(_mapping(item, where), {"kind", "label", "fns", "note"}, where)
        kind = item.get("kind")
        if kind not in QUERY_ROLES:
            raise ReleaseDataError(f"{where}.kind: {kind!r}; known: {', '.join(QUERY_ROLES)}")
        fns = _mapping(item.get("fns"), f"{where}.fns")
        if tuple(fns) != QUERY_ROLES[kind]:
            raise ReleaseDataError(f"{where}.fns: a {kind} query names {', '.join(QUERY_ROLES[kind])}, in that order")
        for fn in fns.values():
            _function(fn, f"{where}.fns")
        found.append(MemoryQuery(kind, str(item.get("label") or ""), dict(fns), str(item.get("note") or "")))
    return tuple(found)


def _memory_clear(items: Any) -> tuple[MemoryClear, ...]:
    if not isinstance(items, list) or not items:
        raise ReleaseDataError("observer.memory_clear: expected a non-empty list")
    found = []
    for i, item in enumerate(items):
        where = f"observer.memory_clear[{i}]"
        _only(_mapping(item, where), {"clear", "memory"}, where)
        memory = _function(item["memory"], where) if "memory" in item else None
        found.append(MemoryClear(_function(item.get("clear"), where), memory))
    return tuple(found)


def _traced(table: Any) -> tuple[TracedFunction, ...]:
    found = []
    for name, entry in _mapping(table, "traced").items():
        where = f"traced.{name}"
        _function(name, "traced")
        _only(_mapping(entry, where), {"op", "handle", "wrap"}, where)
        op = entry.get("op")
        if op not in OPS:
            raise ReleaseDataError(f"{where}.op: {op!r}; known: {', '.join(OPS)}")
        if (op in MEMORY_OPS) != ("handle" in entry):
            raise ReleaseDataError(f"{where}: a memory call ({', '.join(MEMORY_OPS)}) names its handle, no other does")
        try:
            handle = Handle(entry["handle"]) if "handle" in entry else None
        except ValueError as exc:
            raise ReleaseDataError(f"{where}.handle: {entry['handle']!r}; known: context, memory") from exc
        found.append(TracedFunction(name, op, handle, bool(entry.get("wrap", True))))
    return tuple(found)


def parse(data: Any) -> Releases:
    """The table from its YAML data (ReleaseDataError naming the key where a rule is broken)."""
    top = _mapping(data, "releases.yaml")
    _only(top, {"releases", "model_vocabulary", "ranges", "types", "observer", "traced", "tracer_features"},
          "releases.yaml")
    known = tuple(top.get("releases") or ())
    numbers = [release_number(t) for t in known]
    if not known or numbers != sorted(set(numbers)):
        raise ReleaseDataError("releases: a non-empty list of build tags, oldest first, each once")
    observer = _mapping(top.get("observer"), "observer")
    _only(observer, {"groups", "calls", "context_info", "memory_queries", "memory_clear"}, "observer")
    calls = _mapping(observer.get("calls"), "observer.calls")
    if tuple(calls) != CALL_ROLES:
        raise ReleaseDataError(f"observer.calls: names {', '.join(CALL_ROLES)}, in that order")
    groups = _mapping(observer.get("groups"), "observer.groups")
    _only(groups, set(GROUPS), "observer.groups")
    missing_groups = [g for g in GROUPS if g not in groups]
    if missing_groups:
        raise ReleaseDataError(f"observer.groups: missing {', '.join(missing_groups)}")
    types = {str(k): str(v) for k, v in _mapping(top.get("types"), "types").items()}
    _only(types, {"context", "cache_view", "context_params"}, "types")
    features = _mapping(top.get("tracer_features"), "tracer_features")
    _only(features, {"fields", "functions"}, "tracer_features")
    fields = {str(k): str(v) for k, v in _mapping(features.get("fields"), "tracer_features.fields").items()}
    functions = {str(k): _function(v, "tracer_features.functions")
                 for k, v in _mapping(features.get("functions"), "tracer_features.functions").items()}  # fmt: skip
    table = Releases(
        releases=known,
        model_vocabulary=_release(top.get("model_vocabulary"), known, "model_vocabulary"),
        ranges=_ranges(top.get("ranges"), known),
        types=types,
        groups={g: _names(groups[g], f"observer.groups.{g}") for g in GROUPS},
        calls={role: _function(fn, f"observer.calls.{role}") for role, fn in calls.items()},
        context_info=_context_info(observer.get("context_info")),
        memory_queries=_memory_queries(observer.get("memory_queries")),
        memory_clear=_memory_clear(observer.get("memory_clear")),
        traced=_traced(top.get("traced")),
        tracer_fields=fields,
        tracer_functions=functions,
    )  # fmt: skip
    _check_names(table)
    return table


def _check_names(table: Releases) -> None:
    """Every name in one range exactly; every function the observer calls among its groups (they are what it binds)."""
    in_ranges = [n for r in table.ranges for n in r.names]
    twice = sorted({n for n in in_ranges if in_ranges.count(n) > 1})
    if twice:
        raise ReleaseDataError(f"ranges: named more than once: {', '.join(twice)}")
    unranged = sorted(table.named() - set(in_ranges))
    if unranged:
        raise ReleaseDataError(f"ranges: no range for {', '.join(unranged)}")
    bound = {n for g in table.groups.values() for n in g}
    calls = {f.fn for f in table.context_info} | {n for q in table.memory_queries for n in q.needs}
    calls |= set(table.calls.values())
    calls |= {n for c in table.memory_clear for n in (c.clear, c.memory) if n}
    unbound = sorted(calls - bound)
    if unbound:
        raise ReleaseDataError(f"observer: called but in no group (so never bound): {', '.join(unbound)}")
    for op in OPS:
        table.default_function(op)


def load(path: Path = DATA_FILE) -> Releases:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ReleaseDataError(f"{path}: {exc}") from exc
    return parse(data)


RELEASES = load()
