"""Every exported function, old build against new: the consumer's functions that are no operation of the checklist.

Each such function of the consumer's header is called with arguments generated from its parameter types and from
the handles the operations yield (the session's model and context), on each build in its own child; the calls'
results (return value, success, out-parameter strings, whether a handle came back, the error message) are recorded
in the check's evidence, and `compare` pairs the two builds' records call by call: a difference is a finding with
the inputs.

Arguments, by parameter type (config wins: `[verify.functions.NAME]` maps a parameter to its list of values, and
`skip = true` leaves the function to the consumer's own check; a NAME the header lacks is listed as not called):
- the consumer's model / context handle: the session's (loaded and created through the operations);
- `const char *`: a length ladder (empty to 2000 bytes) with markup and Unicode; a `path` the model file;
- `const char **` arrays sharing a count parameter: lists of strings of growing length (the arrays zipped: e.g.
  roles and contents of chat messages, roles from config);
- integers 0, 1, 2, 7 (a `token`: 0, 1, 2 and the last id), floats 0, 0.5, 1, bools both ways;
- out-parameters (`T **`, `T *` named *out* / *result*, `const char **` named *error*) made by the harness: the
  string read and freed with the consumer's own free function, a handle freed with its free operation.
Out-of-range values (negative ids, NULL) only where config lists them: a call that aborts ends the check. Functions
that only release memory (free / destroy / release in the name) are not called: a generated pointer would be freed
twice. A value the harness cannot make for a type leaves the function uncalled, with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from verify.capi import CFunction, CParam, read_api
from verify.session import Session, llama_include_dirs

STRING_LADDER = ("", "a", "Hello world", "<s>user</s> é 日本 😀", "x" * 100, "word " * 400)
ARRAY_LADDER = (1, 2, 4)  # elements per generated array
INTS = (0, 1, 2, 7)
FLOATS = (0.0, 0.5, 1.0)
MAX_CALLS = 40  # per function
RELEASES = ("free", "destroy", "release")
NULL = None


@dataclass
class CallRecord:
    function: str
    args: dict[str, Any]  # parameter -> the value given (handles by name)
    returned: Any  # scalar return value; for pointers: "handle" / "null" / the string
    outs: dict[str, Any] = field(default_factory=dict)  # out-parameter -> string / "handle" / "null" / number


@dataclass
class Difference:
    call: str  # the function and its inputs
    old: dict[str, Any]
    new: dict[str, Any]

    def line(self) -> str:
        return f"{self.call}: old {self.old} / new {self.new}"


def _short(value: Any, n: int = 40) -> Any:
    if isinstance(value, str) and len(value) > n:
        return f"{value[:n]!r}... ({len(value)} chars)"
    if isinstance(value, list):
        return [_short(v, n) for v in value]
    return repr(value) if isinstance(value, str) else value


class Caller:
    """Builds arguments for and calls one build's non-operation functions."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.ffi = session.bindings.ffi
        self.lib = session.bindings.lib
        self.config: dict[str, Any] = dict(session.target.verify.get("functions") or {})
        self.bound = {ob.function.name for ob in session.binding.ops.values()}
        self.handles = self._handle_types()

    def _handle_types(self) -> dict[str, str]:
        """Handle base type -> "model" / "context" (as the operations' bindings typed them)."""
        found = {}
        for op, role in (("model_free", "model"), ("context_free", "context"), ("tokenize", "model"),
                         ("generate", "context")):  # fmt: skip
            bound = self.s.binding.get(op)
            p = bound.role(role) if bound is not None else None
            if p is not None:
                found[p.type.base] = role
        return found

    def functions(self) -> tuple[list[CFunction], dict[str, str]]:
        """The header's functions that are no operation, and those not called with the reason."""
        api = read_api(self.s.target.header, llama_include_dirs(self.s.target.llama_tree))
        chosen, left = [], {}
        for fn in api.functions.values():
            if fn.name in self.bound:
                continue
            if self.config.get(fn.name, {}).get("skip"):
                left[fn.name] = f"skipped by [verify.functions.{fn.name}] skip"
            elif any(word in fn.name.lower() for word in RELEASES):
                left[fn.name] = "releases memory: a generated pointer would be freed twice"
            else:
                chosen.append(fn)
        for name in sorted(set(self.config) - set(api.functions)):
            left[name] = f"[verify.functions.{name}] names no function of {self.s.target.header.name}"
        return chosen, left

    # -- argument values

    def _is_out(self, p: CParam) -> bool:
        name = p.name.lower()
        if p.type.depth >= 2 and ("error" in name or "message" in name):
            return True
        return p.type.depth >= 1 and not p.type.const_pointee and ("out" in name or "result" in name)

    def _count_of(self, fn: CFunction) -> dict[str, list[str]]:
        """Count parameter -> the input arrays (`const char **`) before it that it counts."""
        groups: dict[str, list[str]] = {}
        pending: list[str] = []
        for p in fn.params:
            if p.type.depth == 2 and p.type.kind == "char" and p.type.const_base and not self._is_out(p):
                pending.append(p.name)
            elif pending and p.type.is_integer:
                groups[p.name] = pending
                pending = []
        return groups

    def values(self, fn: CFunction) -> dict[str, list[Any]] | str:
        """Parameter -> candidate values (the first is the base); or why the function cannot be called."""
        own = self.config.get(fn.name, {})
        groups = self._count_of(fn)
        in_group = {name for names in groups.values() for name in names}
        values: dict[str, list[Any]] = {}
        for p in fn.params:
            if p.name in in_group or self._is_out(p):
                continue
            if p.name in groups:
                values[p.name] = self._arrays(groups[p.name], own)
                continue
            given = own.get(p.name)
            candidates = list(given) if isinstance(given, list) else self._typed(p)
            if candidates is None:
                return f"no value for parameter {p.name} ({p.type.spelling}): describe it in [verify.functions." \
                       f"{fn.name}] {p.name} = [...]"
            values[p.name] = candidates
        return values

    def _arrays(self, names: list[str], own: dict[str, Any]) -> list[dict[str, list[str]]]:
        """Zipped lists for the arrays one count parameter counts: each array's elements from config (cycled) or
        the string ladder."""
        lists = []
        for n in ARRAY_LADDER:
            for text in STRING_LADDER[1:]:
                entry = {}
                for i, name in enumerate(names):
                    pool = own.get(name)
                    if isinstance(pool, list) and pool:
                        entry[name] = [str(pool[(k + i) % len(pool)]) for k in range(n)]
                    else:
                        entry[name] = [text] * n
                lists.append(entry)
        return lists

    def _typed(self, p: CParam) -> list[Any] | None:
        t = p.type
        if t.depth == 1 and t.base in self.handles:
            return [self.handles[t.base]]
        if t.depth == 0 and t.base in self.handles:
            return [self.handles[t.base]]
        if t.is_char_pointer and t.depth == 1 and t.const_pointee:
            return [str(self.s.target.model), "/nonexistent/model.gguf"] if "path" in p.name else list(STRING_LADDER)
        if t.kind == "bool" and t.depth == 0:
            return [False, True]
        if t.is_integer:
            if "token" in p.name.lower():
                return [0, 1, 2, self.s.n_vocab(self.s.model()) - 1]
            return list(INTS)
        if t.kind == "float" and t.depth == 0:
            return list(FLOATS)
        return None

    def plans(self, fn: CFunction, values: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """The base call, then each parameter through its values with the others at their base."""
        base = {name: vals[0] for name, vals in values.items()}
        plans = [base]
        for name, vals in values.items():
            plans += [base | {name: v} for v in vals[1:]]
        unique = []
        for plan in plans:
            if plan not in unique:
                unique.append(plan)
        return unique[:MAX_CALLS]

    # -- calling

    def call(self, fn: CFunction, plan: dict[str, Any]) -> CallRecord:
        keep: list[Any] = []
        outs: dict[str, Any] = {}
        args = []
        groups = self._count_of(fn)
        arrays = {name: items for count in groups for name, items in plan[count].items()}
        for p in fn.params:
            args.append(self._argument(p, plan, arrays, groups, keep, outs))
        rc = getattr(self.lib, fn.name)(*args)
        shown = {k: (v if not isinstance(v, dict) else {n: [_short(x) for x in xs] for n, xs in v.items()})
                 for k, v in plan.items()}  # fmt: skip
        return CallRecord(fn.name, shown, self._result(fn.result, rc), self._read_outs(fn, outs))

    def call_key(self, fn: CFunction, plan: dict[str, Any]) -> str:
        """The function and its inputs, the same on both builds: what pairs an old call with a new one."""
        parts = []
        for name, value in plan.items():
            if isinstance(value, dict):
                value = {n: [_short(x) for x in xs] for n, xs in value.items()}
            parts.append(f"{name}={_short(value)}")
        return f"{fn.name}({', '.join(parts)})"

    def _argument(self, p: CParam, plan: dict[str, Any], arrays: dict[str, list[str]],
                  groups: dict[str, list[str]], keep: list[Any], outs: dict[str, Any]) -> Any:  # fmt: skip
        if self._is_out(p):
            outs[p.name] = (p, self.ffi.new(p.type.spelling))
            return outs[p.name][1]
        if p.name in arrays:
            items = [self.ffi.new("char[]", s.encode()) for s in arrays[p.name]]
            keep.append(items)
            array = self.ffi.new("char *[]", items)
            keep.append(array)
            return self.ffi.cast(p.type.spelling, array)
        if p.name in groups:
            return len(next(iter(plan[p.name].values())))
        value = plan[p.name]
        if value == "model":
            return self.s.model()
        if value == "context":
            return self.s.context(512, 1) if not self.s._contexts else self.s._contexts[0]
        if value is NULL:
            return self.ffi.NULL
        if isinstance(value, str):
            buf = self.ffi.new("char[]", value.encode())
            keep.append(buf)
            return buf
        return value

    def _result(self, t: Any, rc: Any) -> Any:
        if t.kind == "void" and t.depth == 0:
            return None
        if t.depth == 0:
            return round(rc, 6) if isinstance(rc, float) else int(rc) if not isinstance(rc, bool) else rc
        if rc == self.ffi.NULL:
            return "null"
        if t.is_char_pointer and t.depth == 1:
            return self.ffi.string(rc).decode("utf-8", errors="replace")  # owned by the library: not freed
        return "handle"

    def _read_outs(self, fn: CFunction, outs: dict[str, Any]) -> dict[str, Any]:
        read: dict[str, Any] = {}
        for name, (p, box) in outs.items():
            value = box[0]
            if p.type.depth >= 2 and p.type.kind == "char":
                if value == self.ffi.NULL:
                    read[name] = "null"
                    continue
                text = self.ffi.string(value).decode("utf-8", errors="replace")
                # error messages are the library's (valid until the next failing call); results are the caller's
                read[name] = text
                if not ("error" in name or "message" in name) and "free_string" in self.s.binding.ops:
                    self.s.shim.invoke("free_string", {"string": value})
            elif p.type.depth >= 1 and p.type.base in self.handles:
                read[name] = "null" if value == self.ffi.NULL else "handle"
                if value != self.ffi.NULL:
                    self._free_handle(self.handles[p.type.base], value)
            else:
                read[name] = int(value) if p.type.kind in ("int", "uint", "enum", "bool") else str(value)
        return read

    def _free_handle(self, role: str, handle: Any) -> None:
        if role == "model":
            self.s.shim.free_model(handle)
        else:
            self.s.shim.free_context(handle)


def record(session: Session) -> dict[str, Any]:
    """Every non-operation function called with its generated arguments: the evidence of `exported_functions`."""
    caller = Caller(session)
    functions, not_called = caller.functions()
    calls: list[dict[str, Any]] = []
    for fn in functions:
        values = caller.values(fn)
        if isinstance(values, str):
            not_called[fn.name] = values
            continue
        for plan in caller.plans(fn, values):
            calls.append(asdict(caller.call(fn, plan)) | {"key": caller.call_key(fn, plan)})
    return {"calls": calls, "not_called": not_called, "functions": [fn.name for fn in functions]}


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[Difference]:
    """Call by call (paired by function and inputs): results, success and out-parameters that differ."""
    new_calls = {c["key"]: c for c in new.get("calls", [])}
    found = []
    for call in old.get("calls", []):
        other = new_calls.get(call["key"])
        if other is None:
            continue  # not made on the new build (the function or its parameters changed): the API diff's concern
        a = {"returned": call["returned"], "outs": call["outs"]}
        b = {"returned": other["returned"], "outs": other["outs"]}
        if a != b:
            found.append(Difference(call["key"], _diff_part(a, b), _diff_part(b, a)))
    return found


def _diff_part(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What of `a` differs from `b`: short values as they are, long strings as their two ends and length."""
    part: dict[str, Any] = {}
    if a["returned"] != b["returned"]:
        part["returned"] = _shown(a["returned"])
    for name, value in a["outs"].items():
        if b["outs"].get(name) != value:
            part[name] = _shown(value)
    return part


def _shown(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 80:
        return f"{value[:40]!r}...{value[-30:]!r} ({len(value)} chars)"
    return value
