"""Call traces of a consumer's llama.cpp calls, as the tracer linked into a `--traced` shim writes them.

`migrate build --traced` links `verify/tracer/tracer.c` into the shim and wraps each llama.cpp call it makes
(GNU ld `--wrap`); a check's child runs with `LLAMA_MIGRATE_TRACE=PATH` and the tracer appends two JSON lines per
call to PATH (before the call, with its arguments; after it, with the return value). This module reads such a
file (a last line cut by an abort is dropped), pairs calls with their returns, resolves each caller's address
to the consumer's file:line (`addr2line` on the library, built with -g) and turns both releases' calls into one
vocabulary of memory operations (`llama_kv_self_seq_rm(ctx, ...)` and `llama_memory_seq_rm(mem, ...)` are both
`seq_rm` on a context), which verify/contract.py replays against a release's contract.
"""

from __future__ import annotations

import json
import mmap
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verify.errors import ToolError

TRACE_ENV = "LLAMA_MIGRATE_TRACE"
TRACER_SOURCE = Path(__file__).resolve().parent / "tracer" / "tracer.c"
MARKER = b"llama-migrate-tracer/1"

# every function tracer.c can wrap, by the operation it is; the builder wraps those the tree's llama.h declares
OPERATIONS: dict[str, str] = {
    "llama_init_from_model": "context",
    "llama_new_context_with_model": "context",
    "llama_free": "free",
    "llama_decode": "decode",
    "llama_encode": "encode",
    "llama_get_memory": "get_memory",
    **{f"{prefix}{op}": op for prefix in ("llama_kv_self_", "llama_kv_cache_", "llama_memory_")
       for op in ("clear", "seq_rm", "seq_cp", "seq_keep", "seq_add", "seq_div", "seq_pos_min", "seq_pos_max")},
}  # fmt: skip
# names tracer.c has no wrapper for (never declared by a release with that name)
_NOT_WRAPPED = {"llama_kv_cache_seq_pos_min"}
TRACED_FUNCTIONS: tuple[str, ...] = tuple(n for n in OPERATIONS if n not in _NOT_WRAPPED)
MEMORY_OPS = ("clear", "seq_rm", "seq_cp", "seq_keep", "seq_add", "seq_div", "seq_pos_min", "seq_pos_max")
ADDR2LINE_BATCH = 400


class TraceError(ToolError):
    """A library that was not built traced, a trace that cannot be read, no addr2line."""


# --- building ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TracerConfig:
    """How to compile the tracer against one llama.cpp tree: the functions to wrap and the defines for its llama.h."""

    wrapped: tuple[str, ...]
    defines: tuple[str, ...]

    def link_flags(self) -> list[str]:
        return [f"-Wl,--wrap={name}" for name in self.wrapped]


def _declares(header: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\s*\(", header) is not None


def tracer_config(llama_h: Path) -> TracerConfig:
    """What the tree's own llama.h declares: the traced functions it has, and which fields/functions exist."""
    text = llama_h.read_text(encoding="utf-8", errors="replace")
    wrapped = tuple(name for name in TRACED_FUNCTIONS if _declares(text, name))
    params = re.search(r"struct llama_context_params\s*\{(.*?)\};", text, re.DOTALL)
    fields = params.group(1) if params else ""
    defines = [f"TRACE_WRAP_{name}" for name in wrapped]
    if re.search(r"\bkv_unified\s*;", fields):
        defines.append("TRACE_HAS_KV_UNIFIED")
    if re.search(r"\bflash_attn_type\s*;", fields):
        defines.append("TRACE_HAS_FLASH_ATTN_TYPE")
    if _declares(text, "llama_n_ctx_seq"):
        defines.append("TRACE_HAS_N_CTX_SEQ")
    return TracerConfig(wrapped, tuple(defines))


def is_traced(library: Path) -> bool:
    """The library was linked with the tracer (`migrate build --traced`)."""
    try:
        with library.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(MARKER) >= 0
    except (OSError, ValueError):
        return False


# --- reading ----------------------------------------------------------------------------------------------------


@dataclass
class Call:
    """One traced llama.cpp call: arguments as recorded, the return (None for void), whether it returned at all."""

    index: int
    fn: str
    args: dict[str, Any]
    offset: int | None
    returned: bool = False
    ret: Any = None
    result: dict[str, Any] = field(default_factory=dict)  # everything the "ret" line held
    obj: str | None = None  # the object holding the caller, when it is not the traced library
    where: str | None = None  # file:line of the caller

    @property
    def op(self) -> str:
        return OPERATIONS.get(self.fn, self.fn)


@dataclass
class Trace:
    library: str | None
    pid: int | None
    calls: list[Call]
    truncated: bool = False  # the last line was cut (the process died while writing it)

    @property
    def last_unreturned(self) -> Call | None:
        """The call the process died in, if it died inside one."""
        return self.calls[-1] if self.calls and not self.calls[-1].returned else None


def read_trace(path: Path) -> Trace:
    """The calls in a trace file, in call order; a missing file is an empty trace (nothing was called)."""
    if not path.is_file():
        return Trace(None, None, [])
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    truncated = bool(lines[-1])  # every record ends with a newline: a non-empty tail was cut short
    calls: dict[int, Call] = {}
    library, pid = None, None
    for line in lines[:-1]:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            truncated = True
            continue
        ev = record.pop("ev", None)
        if ev == "open":
            library, pid = library or record.get("obj"), pid or record.get("pid")
        elif ev == "call":
            index = int(record.pop("i"))
            fn = record.pop("fn")
            offset = record.pop("off", None)
            obj = record.pop("obj", None)
            calls[index] = Call(index, fn, record, offset, obj=obj)
        elif ev == "ret":
            call = calls.get(int(record.pop("i")))
            if call is not None:
                call.returned = True
                call.ret = record.get("ret")
                call.result = record
    return Trace(library, pid, [calls[i] for i in sorted(calls)], truncated)


# --- where: addr2line -----------------------------------------------------------------------------------------


def addr2line() -> str:
    found = shutil.which("addr2line")
    if found is None:
        raise TraceError("addr2line not found: install binutils (apt-get install binutils) to resolve traced calls "
                         "to file:line")  # fmt: skip
    return found


def resolve_offsets(library: Path, offsets: list[int]) -> dict[int, str]:
    """file:line of each return-address offset in `library` (the call instruction just before it). With inlining,
    the innermost location: the line in the consumer's function (or lambda) that made the call."""
    tool = addr2line()
    unique = sorted(set(offsets))
    found: dict[int, str] = {}
    for start in range(0, len(unique), ADDR2LINE_BATCH):
        chunk = unique[start : start + ADDR2LINE_BATCH]
        cmd = [tool, "-e", str(library), "-i", "-a", *(hex(max(off - 1, 0)) for off in chunk)]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            raise TraceError(f"addr2line failed on {library}: {proc.stderr.strip()[:300]}")
        current: int | None = None
        for line in proc.stdout.splitlines():
            if line.startswith("0x"):
                current = int(line, 16) + 1
                continue
            if current is not None and current not in found:
                found[current] = _strip_discriminator(line)
    return found


def _strip_discriminator(location: str) -> str:
    return re.sub(r"\s*\(discriminator \d+\)$", "", location.strip())


def resolve(trace: Trace, library: Path, root: Path | None = None) -> Trace:
    """Fill each call's `where` (file:line, relative to `root` when under it; `??:0` when unknown)."""
    offsets = [c.offset for c in trace.calls if c.offset is not None and c.obj is None]
    found = resolve_offsets(library, offsets) if offsets else {}
    for call in trace.calls:
        if call.obj is not None:
            call.where = f"{Path(call.obj).name}+{hex(call.offset or 0)}"
            continue
        call.where = relative_location(found.get(call.offset or -1, "??:0"), root)
    return trace


def relative_location(location: str, root: Path | None) -> str:
    path, sep, line = location.rpartition(":")
    if not sep or root is None:
        return location
    try:
        return f"{Path(path).resolve().relative_to(root.resolve())}:{line}"
    except (ValueError, OSError):
        return location


# --- one vocabulary for both releases --------------------------------------------------------------------------


@dataclass
class Event:
    """A call as an operation on a context: what the contract checker replays. `ctx` identifies the context
    (its pointer; memory handles are mapped back to the context they came from)."""

    op: str
    ctx: str | None
    args: dict[str, Any]
    fn: str = ""  # the llama.cpp function called
    index: int = 0
    returned: bool = True
    ret: Any = None
    where: str | None = None
    check: str | None = None  # the check whose run made the call

    def describe(self) -> str:
        """The call as written, e.g. llama_memory_seq_rm(mem, 4, 0, -1)."""
        order = {"seq_rm": ("seq", "p0", "p1"), "seq_cp": ("src", "dst", "p0", "p1"), "seq_keep": ("seq",),
                 "seq_add": ("seq", "p0", "p1", "delta"), "seq_div": ("seq", "p0", "p1", "d"),
                 "seq_pos_min": ("seq",), "seq_pos_max": ("seq",), "clear": ("data",)}  # fmt: skip
        handle = "mem" if self.fn.startswith("llama_memory_") else "ctx"
        if self.op in order:
            values = [self.args[k] for k in order[self.op] if k in self.args and self.args[k] is not None]
            shown = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
            return f"{self.fn or 'llama_memory_' + self.op}({', '.join([handle, *shown])})"
        if self.op in ("decode", "encode"):
            return f"{self.fn or 'llama_' + self.op}(ctx, batch of {self.args.get('n', 0)})"
        return f"{self.fn or self.op}(...)"


def events(trace: Trace, check: str | None = None) -> list[Event]:
    """The trace's calls as operations on contexts (old kv_self/kv_cache calls and new memory calls alike)."""
    mem_to_ctx: dict[str, str] = {}
    found: list[Event] = []
    for call in trace.calls:
        op = call.op
        args = dict(call.args)
        ctx = args.pop("ctx", None)
        if op == "get_memory":
            if call.returned and call.result.get("mem"):
                mem_to_ctx[call.result["mem"]] = ctx
            continue
        if op in MEMORY_OPS and "mem" in args:
            mem = args.pop("mem")
            ctx = mem_to_ctx.get(mem, f"mem:{mem}")
        if op == "context":
            args |= {k: v for k, v in call.result.items() if k != "ctx"}
            ctx = call.result.get("ctx")
        if op == "clear" and call.fn.startswith(("llama_kv_self_", "llama_kv_cache_")):
            args["data"] = None  # the old clear zeroed the buffers; its successor does so only with data = true
        found.append(Event(op, ctx, args, call.fn, call.index, call.returned, call.ret, call.where, check))
    return found
