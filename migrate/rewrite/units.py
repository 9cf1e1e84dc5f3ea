"""Planning at scale: translation units planned in worker processes, or taken from the per-unit cache, and merged
in order into exactly the plan a sequential run makes.

The engine plans one translation unit at a time (`Engine.plan_unit`, whose result is a value that `Engine.take`
applies), and a unit's result depends on the units before it in two ways: a consumer header already planned from an
earlier unit is not planned again ("handled"), and the API cross reference scans each file once, checks each
`#include` once and learns llama.cpp's private headers as units include them. A worker plans its unit against a
*guess* of that state (the consumer files earlier units include, read from their `#include` lines) and records what
it found instead of applying it: the plan's items, the edits, and the API events (the inclusions read, the uses in
each file, per private header it knew). The parent merges the records in unit order, replaying the API events on the
real cross reference. Where the guess was wrong for this unit (it includes a header whose handled state differs, a
file the real state has not scanned yet, or a private header the worker did not know), the parent plans that unit
itself with the true state: the merged plan is the sequential plan, and `tests/test_plan_scale.py` compares the two.

Workers are forked copies of the engine (`UnitPool`): a unit goes to them as its place in the list of units to plan,
and its record comes back over a queue; nothing is shared or swapped.

The per-unit cache (`<plan cache>/units`) keeps each unit's record under what it depends on: the engine's code,
rules, options and API target, the unit's flags, the bytes of every consumer file in the unit, and the guess. A
re-plan after editing one file plans only the units that include it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import queue
import re
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from migrate import apidiff
from migrate.rewrite.edits import InputError
from migrate.rewrite.includes import inclusions
from migrate.rewrite.plan import Plan
from migrate.rewrite.prescan import IDENTIFIER, diff_names, with_macros

if TYPE_CHECKING:
    from multiprocessing.context import ForkProcess

    from migrate.rewrite.apicheck import ApiScan
    from migrate.rewrite.engine import Engine, UnitResult

UNIT_FORMAT = 2  # bump when a record's shape changes: older records are ignored
INCLUDE = re.compile(rb'^[ \t]*#[ \t]*(?:include|import)[ \t]*([<"])([^>"\n]+)[>"]', re.MULTILINE)


# --- what a worker records ------------------------------------------------------------------------------------


@dataclass
class UnitRecord:
    """One unit planned against a guess of the earlier units' state, not yet applied."""

    path: str
    scanned_guess: frozenset[str]  # consumer files the guess said earlier units included (their uses scanned)
    handled_guess: frozenset[str]  # those of them the guess said an earlier unit planned
    own: frozenset[str] | None = None  # the unit's consumer files (None: libclang could not parse it)
    tu_files: frozenset[str] = frozenset()  # every file the unit includes (to tell if a private header is in it)
    result: UnitResult | None = None  # what the unit found (None: it stopped the plan, `error`)
    events: list[tuple[Any, ...]] = field(default_factory=list)  # API events, in order
    error: str | None = None  # an InputError (syntax errors): the sequential plan stops at this unit
    deps: dict[str, str] = field(default_factory=dict)  # consumer file in the unit -> sha256 of its bytes
    seconds: float = 0.0


class UnitApi:
    """Stands in for the engine's ApiScan while a unit is recorded: reads what the parent will replay."""

    def __init__(self, scan: ApiScan | None, skip_scan: frozenset[str]) -> None:
        self.state = scan  # this worker's own cross reference (learns private headers as its units include them)
        self.skip_scan = skip_scan  # files the guess says an earlier unit scanned
        self.events: list[tuple[Any, ...]] = []
        self.own: set[str] | None = None
        self.tu_files: frozenset[str] = frozenset()
        self.target = scan.target if scan is not None else None
        self.new_symbols: set[str] = scan.new_symbols if scan is not None else set()
        self.new_fields: set[str] = scan.new_fields if scan is not None else set()

    def includes(self, tu: Any, files: Iterable[str], flags: list[str]) -> None:
        self.own = set(files)
        self.tu_files = frozenset(i.include.name for i in tu.get_includes() if i.include is not None)
        if self.state is None:
            return
        found = inclusions(tu, set(files), self.state.target.old.path.resolve())
        self.events.append(("includes", found, list(flags)))
        self.state.include_list(found, flags)

    def scan(self, tu: Any, files: Iterable[str], walked: dict[str, list[Any]] | None = None) -> None:
        if self.state is None:
            return
        state = self.state
        names = sorted(set(files) - self.skip_scan)
        if names and not mentions_any(set(files), triggers(state)):
            # no file of the unit names anything the diffs list (nor a macro of llama.cpp's headers that does):
            # no cursor of theirs can reference it, and walking them would find nothing
            main: dict[str, list[Any]] = {name: [] for name in names}
            extra: dict[tuple[str, str], list[Any]] = {}
        else:
            nodes = {name: walked.get(name) if walked is not None else None for name in names}
            main = {name: apidiff.uses_in_file(state.diff, Path(name), tu, state.tracked, nodes[name])
                    for name in names}  # fmt: skip
            extra = {(name, header): apidiff.uses_in_file(diff, Path(name), tu, tracked, nodes[name])
                     for name in names for header, diff, tracked in state.extra}  # fmt: skip
        self.events.append(("scan", sorted(set(files)), names, main, extra, [h for h, _, _ in state.extra]))

    def skip(self, file: str, why: str) -> None:
        self.events.append(("skip", file, why))


# --- the name pre-scan: a unit that names nothing the API diff lists is not walked for uses ------------------------


def triggers(state: ApiScan) -> frozenset[bytes] | None:
    """The names whose presence makes a unit worth walking for uses: the diffs' own, and every macro of the old
    tree's compared headers whose definition spells one (to a fixed point); None: walk every unit. Kept on the
    cross reference per number of private headers it knows (it learns them as units include them)."""
    key = len(state.extra)
    if key in state.triggers:
        return state.triggers[key]
    found: set[bytes] | None = set()
    for diff in [state.diff, *(d for _, d, _ in state.extra)]:
        names = diff_names(diff)
        if names is None or found is None:
            found = None
            break
        found |= names
    if found is not None:
        root = state.target.old.path.resolve()
        headers = [Path(h) for h in state.tracked.exact.by_path] + [root / h for h, _, _ in state.extra]
        found = set(with_macros(found, headers))
    state.triggers[key] = frozenset(found) if found is not None else None
    return state.triggers[key]


def mentions_any(files: set[str], names: frozenset[bytes] | None) -> bool:
    if names is None:
        return True
    for name in files:
        try:
            if set(IDENTIFIER.findall(Path(name).read_bytes())) & names:
                return True
        except OSError:
            return True
    return False


def fresh_scan(scan: ApiScan | None) -> ApiScan | None:
    """A cross reference with the same diff and no history: a worker's own."""
    if scan is None:
        return None
    from migrate.rewrite.apicheck import ApiScan

    return ApiScan(scan.target, scan.diff, scan.covered, scan.tracked, new_symbols=scan.new_symbols,
                   new_fields=scan.new_fields)  # fmt: skip


def record_unit(engine: Engine, path: Path, consumer: set[str], scanned: frozenset[str], handled: frozenset[str],
                state: ApiScan | None) -> UnitRecord:  # fmt: skip
    """Plan one unit with the guessed state: its result as a value and the API events to replay, recorded instead of
    applied (the engine's state is not changed)."""
    started = time.monotonic()
    recorder = UnitApi(state, scanned)
    record = UnitRecord(str(path), scanned, handled)
    try:
        record.result = engine.plan_unit(path, consumer, handled, recorder)
    except InputError as exc:
        record.error = str(exc)
    record.own = frozenset(recorder.own) if recorder.own is not None else None
    record.tu_files = recorder.tu_files
    record.events = recorder.events
    record.deps = {name: digest(Path(name)) for name in sorted((record.own or set()) | {str(path)})}
    record.seconds = time.monotonic() - started
    return record


# --- merging a record into the engine's real state ------------------------------------------------------------


class Stale(Exception):
    """The record was made on a guess that does not hold for this unit: plan it again with the real state."""


def _may_be(name: str, header: str) -> bool:
    """Could `name` (a file the unit includes) be `header` (relative to a llama.cpp tree), or a copy of it?"""
    parts, wanted = Path(name).parts, Path(header).parts
    return parts[-len(wanted) :] == wanted or parts[-2:] == wanted[-2:]


def check(engine: Engine, record: UnitRecord) -> None:
    """Raise Stale unless the record's unit behaves the same under the engine's real state (before its API
    includes: see `merge` for the check that needs them)."""
    if record.own is None:
        return  # libclang could not parse it: its tree-sitter plan depends on no earlier unit
    if engine.handled & record.own != record.handled_guess & record.own:
        raise Stale("a header of the unit was handled differently")
    if engine.api is not None and (record.own & record.scanned_guess) - engine.api.scanned:
        raise Stale("a file of the unit the guess took as scanned is not scanned yet")


def merge(engine: Engine, record: UnitRecord, plan: Plan) -> None:
    """Apply a record as planning its unit here would have (Stale before changing anything that planning it would
    change again: API includes are checked once per directive, so replaying them twice is harmless)."""
    api = engine.api
    if api is not None:
        for event in record.events:
            if event[0] == "includes":
                api.include_list(event[1], event[2])
        for event in record.events:
            if event[0] == "scan":
                known = set(event[5])
                for header, _, _ in api.extra:
                    if header not in known and any(_may_be(name, header) for name in record.tu_files):
                        raise Stale(f"the unit includes {header}, a private header the worker did not know")
    if record.result is None:  # the sequential plan stops at this unit
        raise InputError(record.error or f"{record.path}: not planned")
    engine.take(record.result, plan)
    if api is None:
        return
    for event in record.events:
        if event[0] == "scan":
            _, files, _, main, extra, _ = event
            for name in sorted(set(files) - api.scanned):
                api.scanned.add(name)
                api.not_scanned.pop(name, None)
                for use in main[name]:
                    api.add_public(use, record.tu_files)
                for header, _, _ in api.extra:
                    for use in extra.get((name, header), []):
                        api.xref.add(use, api.covered)
        elif event[0] == "skip":
            api.skip(event[1], event[2])


# --- the guess: which consumer files earlier units include ------------------------------------------------------


def include_closure(unit: Path, include_dirs: list[Path], consumer: set[str],
                    cache: dict[str, set[str]]) -> set[str]:  # fmt: skip
    """Consumer files reachable from `unit` by `#include` lines (every one, taken or not), resolved as the
    preprocessor would: the includer's folder for "...", then the include folders."""
    seen: set[str] = set()
    stack = [str(unit)]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in cache:
            cache[name] = set()
            try:
                data = Path(name).read_bytes()
            except OSError:
                continue
            for quote, spelled in INCLUDE.findall(data):
                text = spelled.decode(errors="replace")
                folders = ([Path(name).parent] if quote == b'"' else []) + include_dirs
                for folder in folders:
                    candidate = folder / text
                    if candidate.is_file():
                        resolved = str(candidate.resolve())
                        if resolved in consumer:
                            cache[name].add(resolved)
                        break
        stack.extend(cache[name] - seen)
    return seen & consumer


def guesses(units: list[Path], include_dirs: dict[Path, list[Path]], consumer: set[str], relevant: set[str],
            sources: set[str]) -> dict[Path, tuple[frozenset[str], frozenset[str]]]:  # fmt: skip
    """Per unit, before it: (consumer files earlier units include — scanned; those of them a unit plans — handled)."""
    cache: dict[str, set[str]] = {}
    scanned: set[str] = set()
    handled: set[str] = set()
    out = {}
    for unit in units:
        out[unit] = (frozenset(scanned), frozenset(handled))
        reach = include_closure(unit, include_dirs[unit], consumer, cache) | {str(unit)}
        scanned |= reach & consumer
        handled |= (reach & relevant & sources) | {str(unit)}
    return out


# --- the per-unit cache -----------------------------------------------------------------------------------------


def digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


@dataclass
class UnitCache:
    folder: Path
    config: str  # digest of everything but the consumer's files (engine code, rules, options, tree, API target)

    def _file(self, path: Path, flags: list[str]) -> Path:
        key = hashlib.sha256(f"{UNIT_FORMAT}\0{self.config}\0{path}\0{chr(0).join(flags)}".encode()).hexdigest()
        return self.folder / f"{key[:32]}.pkl"

    def get(self, path: Path, flags: list[str], scanned: frozenset[str], handled: frozenset[str],
            consumer: set[str]) -> UnitRecord | None:  # fmt: skip
        file = self._file(path, flags)
        try:
            stored = pickle.loads(file.read_bytes())
            record, stored_consumer = stored["record"], stored["consumer"]
        except Exception:  # noqa: BLE001 - missing, truncated, from another version: plan the unit
            return None
        deps = frozenset(record.deps)
        if record.scanned_guess & deps != scanned & deps or record.handled_guess & deps != handled & deps:
            return None
        if stored_consumer != frozenset(consumer) & deps:
            return None
        if any(digest(Path(name)) != sha for name, sha in record.deps.items()):
            return None
        # the guesses agree on every file of the unit, which is all that a merge asks of them
        record.scanned_guess, record.handled_guess = scanned, handled
        return record

    def put(self, path: Path, flags: list[str], record: UnitRecord, consumer: set[str]) -> None:
        if record.error is not None:
            return
        file = self._file(path, flags)
        payload = {"record": record, "consumer": frozenset(consumer) & frozenset(record.deps)}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temp = file.with_suffix(f".{os.getpid()}.tmp")
            temp.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
            temp.replace(file)
        except OSError:
            pass  # a cache that cannot be written only costs time next run


# --- worker processes -------------------------------------------------------------------------------------------


class Outcome(NamedTuple):
    """What a worker sends back for a unit: its record, or the exception that stopped planning it."""

    place: int  # the unit's index in the pool's `todo`
    record: UnitRecord | None
    error: BaseException | None


class UnitPool:
    """Forked worker processes planning the units of `todo` (unit, scanned guess, handled guess), the biggest files
    first (the longest parses start first: the last one to finish comes sooner). Each worker is a copy of the engine
    as it was at the fork, with its own cross reference; a unit goes out as its index in `todo` and its record comes
    back as a value over a queue."""

    def __init__(self, engine: Engine, consumer: set[str], todo: list[tuple[Path, frozenset[str], frozenset[str]]],
                 jobs: int) -> None:  # fmt: skip
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self.todo = todo
        self.index = {unit: i for i, (unit, _, _) in enumerate(todo)}
        self.tasks: multiprocessing.Queue[int | None] = context.Queue()
        self.results: multiprocessing.Queue[bytes] = context.Queue()
        self.outcomes: dict[int, Outcome] = {}
        self.broken = False  # a worker died: the units not back yet are planned in this process
        # the engine and the units reach the workers by the fork (copied, not pickled); started before the first
        # put, so no queue thread of this process is running when they fork
        self.processes: list[ForkProcess] = [context.Process(target=self._serve, args=(engine, consumer))
                                             for _ in range(jobs)]  # fmt: skip
        for process in self.processes:
            process.start()
        for index in sorted(range(len(todo)), key=lambda i: -_size(todo[i][0])):
            self.tasks.put(index)
        for _ in self.processes:
            self.tasks.put(None)

    def __contains__(self, unit: Path) -> bool:
        return unit in self.index

    def _serve(self, engine: Engine, consumer: set[str]) -> None:
        """In a worker: plan the units it is sent until told to stop, each outcome sent back pickled (an outcome
        that cannot be pickled is sent as the error saying so, never dropped: the parent waits for every unit)."""
        state = fresh_scan(engine.api)
        while (index := self.tasks.get()) is not None:
            unit, scanned, handled = self.todo[index]
            try:
                outcome = Outcome(index, record_unit(engine, unit, consumer, scanned, handled, state), None)
            except Exception as exc:  # noqa: BLE001 - raised again in the parent, as planning it there would
                exc.add_note(f"planning {unit} in a worker process:\n{traceback.format_exc()}")
                outcome = Outcome(index, None, exc)
            try:
                payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 - said in the parent
                payload = pickle.dumps(Outcome(index, None, RuntimeError(f"{unit}: result not sendable ({exc!r})")))
            self.results.put(payload)

    def record(self, unit: Path) -> UnitRecord | None:
        """The unit's record; None when a worker died before it came back (the unit is then planned here)."""
        index = self.index[unit]
        while index not in self.outcomes and not self.broken:
            try:
                outcome: Outcome = pickle.loads(self.results.get(timeout=0.2))
                self.outcomes[outcome.place] = outcome
            except queue.Empty:
                self.broken = self._workers_gone()
        if index not in self.outcomes:
            return None
        outcome = self.outcomes.pop(index)
        if outcome.error is not None:
            raise outcome.error
        return outcome.record

    def _workers_gone(self) -> bool:
        """A worker was killed, or every worker has stopped with nothing left to read: no more records come."""
        codes = [p.exitcode for p in self.processes]
        if any(code not in (None, 0) for code in codes):
            return True
        return all(code == 0 for code in codes) and self.results.empty()

    def close(self) -> None:
        """Workers stopped (one still planning a unit nobody waits for is killed) and the queues released."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join()
        self.tasks.cancel_join_thread()  # indices nobody will read must not hold this process at exit
        self.tasks.close()
        self.results.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _build_in_worker(folder: str, group: str, directives: tuple[str, ...], flags: list[str], consumer: frozenset[str],
                     parent: Any) -> Any:  # fmt: skip
    from migrate.rewrite.parse import build_preamble

    return build_preamble(Path(folder), group.split("|")[0], directives, flags, consumer, parent)


def built_before(folder: Path, choice: Any, run: tuple[str, tuple[str, ...]]) -> bool:
    """An earlier run left this preamble (and the ones it is built on) usable: using it costs nothing to build."""
    from migrate.rewrite.parse import load_preamble

    group, _ = run
    parent = None
    parents = choice.nodes({run})
    for node in sorted(parents, key=lambda r: len(r[1])):
        parent = load_preamble(folder, group.split("|")[0], node[1], choice.flags[group], parent)
        if parent is None or not parent.ok:
            return False
    return True


def build_preambles(folder: Path, choice: Any, runs: set[tuple[str, tuple[str, ...]]], consumer: frozenset[str],
                    processes: int) -> list[tuple[str, Any]]:  # fmt: skip
    """The runs asked for and those they are built on, shortest first; the runs of one length in parallel (each
    parse is single-threaded)."""
    parents = choice.nodes(runs)
    built: dict[tuple[str, tuple[str, ...]], Any] = {}
    by_depth: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
    for run in parents:
        depth, node = 0, parents[run]
        while node is not None:
            depth, node = depth + 1, parents[node]
        by_depth.setdefault(depth, []).append(run)
    pool = None
    try:
        for depth in sorted(by_depth):
            level = sorted(by_depth[depth])
            args = [(str(folder), run[0], run[1], choice.flags[run[0]], consumer,
                     built[parents[run]] if parents[run] is not None else None) for run in level]  # fmt: skip
            if len(args) > 1 and processes > 1 and pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                pool = ProcessPoolExecutor(max_workers=min(processes, len(args)),
                                           mp_context=multiprocessing.get_context("fork"))  # fmt: skip
            results = (list(pool.map(_build_in_worker, *zip(*args, strict=True))) if pool is not None and len(args) > 1
                       else [_build_in_worker(*a) for a in args])  # fmt: skip
            built.update(zip(level, results, strict=True))
    finally:
        if pool is not None:
            pool.shutdown()
    return [(run[0], preamble) for run, preamble in built.items()]
