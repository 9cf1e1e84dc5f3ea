"""Which consumer function carries each operation the checklist needs, and what each of its parameters is.

The checklist speaks to operations (backend init/free, model load/free, context create/free, tokenize,
detokenize, generate, generate_parallel, and the helpers to free what the library hands out). Inference reads
the consumer's header (verify/capi.py): a function is found by its name (after the API's common prefix) and
checked by its shape; each parameter gets a role from its type and name (an error out-parameter, a handle
out-parameter, a prompt as text or token ids, a sampling value, a buffer and its size ...). What inference
cannot decide is asked for in the consumer config's `[verify]` table; a binding that stays incomplete is one
`BindingIncomplete` listing what was found, what is missing and the config lines to add, before any check runs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from verify.capi import CApi, CFunction, CParam, CType
from verify.errors import ToolError

# Operations the driver calls; the first group is needed by every check that loads a model.
REQUIRED_OPS = ("model_load", "model_free", "context_create", "context_free", "tokenize", "generate",
                "generate_parallel")  # fmt: skip
OPTIONAL_OPS = ("backend_init", "backend_free", "detokenize", "free_string", "free_tokens", "free_string_array",
                "n_vocab", "n_ctx", "token_bos", "token_eos", "last_error", "llama_context", "llama_model")  # fmt: skip
ALL_OPS = REQUIRED_OPS + OPTIONAL_OPS

# Names an operation's function may have once the API's prefix is removed (`localllm_`, `tg_` ...).
OP_NAMES: dict[str, str] = {
    "backend_init": r"backend_init|backend_initialize|init|initialize|global_init|startup|setup",
    "backend_free": r"backend_free|backend_shutdown|shutdown|cleanup|deinit|terminate|global_free|teardown",
    "model_load": r"model_load|load_model|model_open|open_model|engine_open|model_create|model_new|load",
    "model_free": r"model_free|free_model|model_close|close_model|engine_close|engine_free|model_destroy"
                  r"|model_release|model_unload|unload_model",
    "context_create": r"context_create|create_context|context_new|new_context|context_open|context_init"
                      r"|session_open|session_new|session_create|ctx_create|ctx_new|init_context",
    "context_free": r"context_free|free_context|context_close|context_destroy|session_close|session_free"
                    r"|session_destroy|ctx_free",
    "tokenize": r"tokeni[sz]e|text_to_tokens",
    "detokenize": r"detokeni[sz]e|untokeni[sz]e|tokens_to_text",
    "generate": r"generate|generate_text|complete|completion|infer",
    "generate_parallel": r"generate_parallel|parallel_generate|generate_batch|batch_generate|generate_many"
                         r"|generate_multi",
    "free_string": r"free_string|string_free|free_text|text_free|free_str",
    "free_tokens": r"free_tokens|tokens_free",
    "free_string_array": r"free_string_array|string_array_free|free_strings|strings_free",
    "n_vocab": r"n_vocab|vocab_size|get_n_vocab|vocab_n_tokens",
    "n_ctx": r"n_ctx|context_size|get_n_ctx|ctx_size",
    "token_bos": r"token_bos|bos_token",
    "token_eos": r"token_eos|eos_token",
    "last_error": r"last_error|get_last_error|last_error_message|get_error|error_message|errmsg",
}  # fmt: skip

# Scalar parameters (and sampling-struct fields) by name.
NAME_ROLES: tuple[tuple[str, str], ...] = (
    ("n_gpu_layers", r"n_gpu_layers|gpu_layers|ngl|n_gpu"),
    ("use_mmap", r"use_mmap|mmap"),
    ("use_mlock", r"use_mlock|mlock"),
    ("n_ctx", r"n_ctx|ctx_size|context_size|ctx_len|context_length|n_context"),
    ("n_threads", r"n_threads|threads|num_threads|n_thread"),
    ("n_seq_max", r"n_seq_max|n_parallel|n_seq|max_seq|n_sequences|n_slots|max_sequences|parallel|slots"),
    ("n_batch", r"n_batch|batch_size"),
    ("add_special", r"add_special|add_bos|parse_special"),
    ("max_tokens", r"max_tokens|n_predict|max_new_tokens|n_max_tokens|max_length|n_gen|max_new"),
    ("temperature", r"temperature|temp"),
    ("top_k", r"top_k"),
    ("top_p", r"top_p"),
    ("min_p", r"min_p"),
    ("repeat_penalty", r"repeat_penalty|penalty_repeat|repetition_penalty|rep_pen"),
    ("repeat_last_n", r"repeat_last_n|penalty_last_n|last_n"),
    ("seed", r"seed"),
    ("verbosity", r"verbosity|verbose|log_level|quiet"),
    ("check_memory", r"check_memory|check_mem"),
)
SAMPLING_ROLES = {"max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed"}
# Roles the harness fills with a fixed value unless told otherwise: flags that only change logging or checks.
FIXED_VALUES: dict[str, Any] = {"verbosity": 0, "check_memory": False}
ERROR_NAME = re.compile(r"err|error|errmsg|error_message|error_out|err_out|error_msg|err_msg|errbuf|error_buffer")
SIZE_NAME = re.compile(r".*(size|len|length|cap|capacity|max|n|count|bytes).*")

# Every role a parameter can take; config values are checked against it.
ROLES = frozenset({
    "model", "context", "model_out", "context_out", "error_out", "error_buffer", "error_buffer_size", "path",
    "text", "prompt", "prompts", "n_prompts", "tokens_in", "n_tokens_in", "tokens_out", "n_tokens_out",
    "tokens_buffer", "tokens_capacity", "text_out", "text_buffer", "text_buffer_size", "results_out",
    "results_array", "sampling", "string", "tokens", "strings", "n_strings", "token",
    *(r for r, _ in NAME_ROLES),
})  # fmt: skip
SUCCESS_CONVENTIONS = ("zero", "nonzero", "nonnegative", "nonnull", "true", "none")


class BindingIncomplete(ToolError):
    """The consumer's API could not be bound to the operations the checklist needs."""


class VerifyConfigError(ToolError):
    """The `[verify]` table of the consumer config is malformed."""


@dataclass(frozen=True)
class ParamBinding:
    name: str
    type: CType
    role: str | None  # None: not decided
    value: Any = None  # a fixed value (role "value"), from the config or FIXED_VALUES
    source: str = "inferred"  # inferred | configured

    def describe(self) -> str:
        what = f"value {self.value!r}" if self.role == "value" else (self.role or "UNDECIDED")
        return f"{self.name}: {what}"


@dataclass(frozen=True)
class OpBinding:
    op: str
    function: CFunction
    params: tuple[ParamBinding, ...]
    success: str  # how the return value says success: see SUCCESS_CONVENTIONS
    source: str = "inferred"
    fields: dict[str, str] = field(default_factory=dict)  # sampling struct field -> role

    def role(self, role: str) -> ParamBinding | None:
        return next((p for p in self.params if p.role == role), None)

    def has(self, role: str) -> bool:
        return self.role(role) is not None

    @property
    def undecided(self) -> list[ParamBinding]:
        return [p for p in self.params if p.role is None]


@dataclass
class Binding:
    """The consumer API bound to operations, with how each piece was decided."""

    prefix: str
    ops: dict[str, OpBinding]
    notes: list[str] = field(default_factory=list)  # what inference noticed (unclassified struct fields ...)
    adapter: str | None = None

    def get(self, op: str) -> OpBinding | None:
        return self.ops.get(op)

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix, "adapter": self.adapter, "notes": self.notes,
            "operations": {op: {"function": b.function.name, "source": b.source, "success": b.success,
                                "params": {p.name: {"role": p.role, "value": p.value, "source": p.source}
                                           for p in b.params},
                                "fields": b.fields} for op, b in self.ops.items()},
        }  # fmt: skip

    def table(self) -> list[tuple[str, str, str, str]]:
        """(operation, function, parameters, inferred/configured) rows for reports."""
        rows = []
        for op, b in self.ops.items():
            params = ", ".join(p.describe() for p in b.params) or "-"
            if b.fields:
                params += "; fields: " + ", ".join(f"{k}: {v}" for k, v in b.fields.items())
            configured = b.source == "configured" or any(p.source == "configured" for p in b.params)
            rows.append((op, b.function.name, params, "configured" if configured else "inferred"))
        return rows


# --- the [verify] config table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpConfig:
    function: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # parameter name -> role (str) or value (number/bool)
    success: str | None = None


@dataclass(frozen=True)
class VerifyConfig:
    """`[verify]` in llama-migrate.toml: `prefix`, `adapter`, and per operation `function`, `params`, `success`."""

    prefix: str | None = None
    adapter: str | None = None
    ops: dict[str, OpConfig] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: dict[str, Any] | None, source: str = "[verify]") -> VerifyConfig:
        table = dict(table or {})
        prefix = _opt_str(table.pop("prefix", None), f"{source} prefix")
        adapter = _opt_str(table.pop("adapter", None), f"{source} adapter")
        for known_failures_key in ("known_failures", "baseline"):  # read by verify/baseline.py
            table.pop(known_failures_key, None)
        table.pop("tests", None)  # the consumer's own pytest checks: read by verify/usertests.py
        # tables read elsewhere: the oracle's promises (verify/reference.py) and the exported functions' arguments
        # (verify/exported.py)
        for table_of_another_reader in ("reference", "functions"):
            table.pop(table_of_another_reader, None)
        ops: dict[str, OpConfig] = {}
        for op, entry in table.items():
            if op not in ALL_OPS:
                raise VerifyConfigError(f"{source}: unknown operation {op!r}; known: prefix, adapter, "
                                        f"{', '.join(ALL_OPS)}")  # fmt: skip
            if isinstance(entry, str):  # `generate = "tg_generate"`: the function alone
                entry = {"function": entry}
            if not isinstance(entry, dict):
                raise VerifyConfigError(f"{source}.{op} must be a table or a function name, got {entry!r}")
            unknown = set(entry) - {"function", "params", "success"}
            if unknown:
                raise VerifyConfigError(f"{source}.{op}: unknown key(s) {', '.join(sorted(unknown))}; "
                                        "known: function, params, success")  # fmt: skip
            params = entry.get("params", {})
            if not isinstance(params, dict):
                raise VerifyConfigError(f"{source}.{op}.params must be a table (parameter = role or value)")
            for name, value in params.items():
                if isinstance(value, str) and value not in ROLES:
                    raise VerifyConfigError(f"{source}.{op}.params.{name}: unknown role {value!r}; roles: "
                                            f"{', '.join(sorted(ROLES))} (or a number / true / false as a value)")
                if not isinstance(value, str | int | float | bool):
                    raise VerifyConfigError(f"{source}.{op}.params.{name}: a role (string) or a value "
                                            f"(number, true/false), got {value!r}")  # fmt: skip
            success = entry.get("success")
            if success is not None and success not in SUCCESS_CONVENTIONS:
                raise VerifyConfigError(f"{source}.{op}.success: {success!r} is not one of "
                                        f"{', '.join(SUCCESS_CONVENTIONS)}")  # fmt: skip
            ops[op] = OpConfig(_opt_str(entry.get("function"), f"{source}.{op}.function"), dict(params), success)
        return cls(prefix, adapter, ops)


def _opt_str(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise VerifyConfigError(f"{what} must be a string, got {value!r}")
    return value


# --- inference ---------------------------------------------------------------------------------------------------


def common_prefix(functions: list[str]) -> str:
    """The API's prefix: the first `word_` most of its functions share (`localllm_`, `tg_`), or ''."""
    heads = Counter(name.split("_", 1)[0] + "_" for name in functions if "_" in name)
    if not heads:
        return ""
    head, count = heads.most_common(1)[0]
    return head if count * 2 >= len(functions) else ""


def name_role(name: str) -> str | None:
    lowered = name.lower()
    for role, pattern in NAME_ROLES:
        if re.fullmatch(pattern, lowered):
            return role
    return None


def _is_handle(t: CType, handle: CType | None) -> bool:
    return handle is not None and t.base == handle.base and t.depth == handle.depth and t.kind == "struct"


def _is_handle_out(t: CType, handle: CType | None) -> bool:
    return handle is not None and t.base == handle.base and t.depth == handle.depth + 1 and t.kind == "struct"


def _errorish(name: str) -> bool:
    return bool(ERROR_NAME.search(name.lower()))


class Inference:
    """Infers one API's binding; `config` decisions win over inference."""

    def __init__(self, api: CApi, config: VerifyConfig) -> None:
        self.api = api
        self.config = config
        self.prefix = config.prefix if config.prefix is not None else common_prefix(list(api.functions))
        self.model_handle: CType | None = None
        self.context_handle: CType | None = None
        self.notes: list[str] = []

    # -- finding functions

    def candidates(self, op: str) -> list[CFunction]:
        pattern = OP_NAMES.get(op)
        if pattern is None:
            return []
        found = []
        for fn in self.api.functions.values():
            short = fn.name.removeprefix(self.prefix) if self.prefix else fn.name
            if re.fullmatch(pattern, short.lower()):
                found.append(fn)
        return found

    def function_for(self, op: str) -> tuple[CFunction | None, str]:
        configured = self.config.ops.get(op)
        if configured and configured.function:
            fn = self.api.functions.get(configured.function)
            if fn is None:
                raise BindingIncomplete(f"[verify] {op}.function = {configured.function!r}: no such function in "
                                        f"{self.api.header}")  # fmt: skip
            return fn, "configured"
        found = [fn for fn in self.candidates(op) if self._shape_fits(op, fn)]
        if op in ("llama_context", "llama_model"):
            found = self._accessors(op)
        return (found[0] if len(found) == 1 else None), ("inferred" if len(found) == 1 else
                                                          f"ambiguous: {', '.join(f.name for f in found)}"
                                                          if found else "not found")  # fmt: skip

    def _accessors(self, op: str) -> list[CFunction]:
        """A function taking the consumer's handle and returning llama.cpp's own object behind it."""
        target, handle = (("struct llama_context", self.context_handle) if op == "llama_context"
                          else ("struct llama_model", self.model_handle))  # fmt: skip
        if handle is None:
            return []
        return [fn for fn in self.api.functions.values()
                if fn.result.base == target and fn.result.depth == 1 and len(fn.params) == 1
                and _is_handle(fn.params[0].type, handle)]  # fmt: skip

    def _shape_fits(self, op: str, fn: CFunction) -> bool:
        params = fn.params
        if op == "last_error":
            return not params and fn.result.is_char_pointer
        if op in ("n_vocab", "token_bos", "token_eos"):
            return len(params) == 1 and fn.result.is_integer
        if op == "n_ctx":
            return len(params) == 1 and fn.result.is_integer
        if op in ("model_load", "context_create"):
            return fn.result.depth == 1 and fn.result.kind == "struct" or any(
                p.type.depth == 2 and p.type.kind == "struct" for p in params)
        return True

    # -- handles

    def learn_handles(self, model_load: CFunction | None, context_create: CFunction | None) -> None:
        self.model_handle = self._produced(model_load)
        self.context_handle = self._produced(context_create)

    @staticmethod
    def _produced(fn: CFunction | None) -> CType | None:
        if fn is None:
            return None
        for p in fn.params:
            if p.type.depth == 2 and p.type.kind == "struct":
                return CType(p.type.spelling.rstrip(" *") or p.type.spelling, p.type.base, 1, False, False, "struct")
        if fn.result.depth == 1 and fn.result.kind == "struct":
            return fn.result
        return None

    # -- parameters

    def bind_params(self, op: str, fn: CFunction) -> tuple[ParamBinding, ...]:
        configured = self.config.ops.get(op, OpConfig()).params
        unknown = set(configured) - {p.name for p in fn.params}
        if unknown:
            raise BindingIncomplete(f"[verify] {op}.params names {', '.join(sorted(unknown))}, which "
                                    f"{fn.name} does not have (its parameters: "
                                    f"{', '.join(p.name for p in fn.params)})")  # fmt: skip
        bound: list[ParamBinding] = []
        for i, param in enumerate(fn.params):
            if param.name in configured:
                value = configured[param.name]
                if isinstance(value, str):
                    bound.append(ParamBinding(param.name, param.type, value, None, "configured"))
                else:
                    bound.append(ParamBinding(param.name, param.type, "value", value, "configured"))
                continue
            role = self.param_role(op, param, bound, fn.params[i + 1:])
            if role in FIXED_VALUES:
                bound.append(ParamBinding(param.name, param.type, "value", FIXED_VALUES[role]))
            else:
                bound.append(ParamBinding(param.name, param.type, role))
        return tuple(bound)

    def param_role(self, op: str, p: CParam, before: list[ParamBinding], after: tuple[CParam, ...]) -> str | None:
        t, name = p.type, p.name.lower()
        prev = before[-1].role if before else None
        if _is_handle(t, self.model_handle):
            return "model"
        if _is_handle(t, self.context_handle):
            return "context"
        if _is_handle_out(t, self.model_handle):
            return "model_out"
        if _is_handle_out(t, self.context_handle):
            return "context_out"
        if t.kind == "char" and t.depth == 2 and _errorish(name):
            return "error_out"
        if t.kind == "char" and t.depth == 1 and not t.const_base and _errorish(name):
            return "error_buffer"
        if t.is_integer and prev in ("error_buffer", "text_buffer", "tokens_buffer", "prompts", "tokens_in",
                                     "tokens", "strings"):  # fmt: skip
            return {"error_buffer": "error_buffer_size", "text_buffer": "text_buffer_size",
                    "tokens_buffer": "tokens_capacity", "prompts": "n_prompts", "tokens_in": "n_tokens_in",
                    "tokens": "n_tokens_in", "strings": "n_strings"}[prev]  # fmt: skip
        if t.kind == "char" and t.depth == 1:
            if t.const_base:
                return {"model_load": "path", "generate": "prompt"}.get(op, "text")
            return {"free_string": "string"}.get(op, "text_buffer")
        if t.kind == "char" and t.depth == 2:
            if t.const_base or t.const_pointee:
                return "prompts"
            return {"generate_parallel": "results_array", "free_string_array": "strings"}.get(op, "text_out")
        if t.kind == "char" and t.depth == 3:
            return "results_out"
        if t.kind in ("int", "uint") and t.depth == 2:
            return "tokens_out"
        if t.kind in ("int", "uint") and t.depth == 1:
            if t.const_base:
                return "tokens_in"
            if prev == "tokens_out":
                return "n_tokens_out"
            return {"free_tokens": "tokens", "tokenize": "tokens_buffer"}.get(op)
        if t.kind == "struct" and t.depth == 1 and op in ("generate", "generate_parallel"):
            return "sampling"
        if t.is_scalar:
            role = name_role(name)
            if role is None and op == "free_string_array" and prev == "strings":
                return "n_strings"
            if role is None and op in ("n_vocab",) or role is None and op == "detokenize" and t.is_integer:
                return None
            return role
        return None

    def sampling_fields(self, op: str, binding: tuple[ParamBinding, ...]) -> dict[str, str]:
        param = next((p for p in binding if p.role == "sampling"), None)
        if param is None:
            return {}
        fields = self.api.structs.get(param.type.base)
        if fields is None:
            self.notes.append(f"{op}: sampling struct {param.type.base} has no definition in the header")
            return {}
        roles: dict[str, str] = {}
        for f in fields:
            role = name_role(f.name)
            if role in SAMPLING_ROLES:
                roles[f.name] = role
            else:
                self.notes.append(f"{op}: field {param.type.base}.{f.name} not recognised (left 0)")
        return roles

    def success_of(self, op: str, fn: CFunction, params: tuple[ParamBinding, ...]) -> str:
        configured = self.config.ops.get(op)
        if configured and configured.success:
            return configured.success
        result = fn.result
        roles = {p.role for p in params}
        if result.kind == "void" and result.depth == 0:
            return "none"
        if result.depth >= 1:
            return "nonnull"
        if result.kind == "bool":
            return "true"
        if roles & {"tokens_buffer", "text_buffer"} and op in ("tokenize", "detokenize"):
            return "nonnegative"
        return "zero"


def infer(api: CApi, config: VerifyConfig | None = None, adapter_ops: frozenset[str] = frozenset()) -> Binding:
    """The binding of every operation the header offers; raises BindingIncomplete listing what is missing.

    `adapter_ops`: operations a configured adapter module implements itself (not needed from the header)."""
    config = config or VerifyConfig()
    inf = Inference(api, config)
    found: dict[str, tuple[CFunction | None, str]] = {op: inf.function_for(op) for op in ALL_OPS
                                                      if op not in ("llama_context", "llama_model")}  # fmt: skip
    inf.learn_handles(found["model_load"][0], found["context_create"][0])
    for op in ("llama_context", "llama_model"):
        found[op] = inf.function_for(op)
    ops: dict[str, OpBinding] = {}
    problems: list[str] = []
    suggestions: list[str] = []
    for op, (fn, how) in found.items():
        if fn is None:
            if op in REQUIRED_OPS and op not in adapter_ops:
                problems.append(f"{op}: {how} (looked for {inf.prefix}{{{OP_NAMES[op].replace('|', ',')}}})")
                suggestions.append(f'{op}.function = "<function name>"')
            continue
        params = inf.bind_params(op, fn)
        undecided = [p for p in params if p.role is None]
        if undecided and op not in adapter_ops:
            if op in REQUIRED_OPS:
                for p in undecided:
                    problems.append(f"{op} ({fn.name}): parameter {p.type.spelling} {p.name}: role not decided")
                    suggestions.append(f'{op}.params.{p.name} = "<role>"   # or a value, e.g. 0')
            else:
                names = ", ".join(p.name for p in undecided)
                inf.notes.append(f"{op} ({fn.name}) left unbound: cannot tell what {names} is; configure it "
                                 "under [verify] to use it")  # fmt: skip
                continue
        source = "configured" if how == "configured" else "inferred"
        ops[op] = OpBinding(op, fn, params, inf.success_of(op, fn, params), source, inf.sampling_fields(op, params))
    problems += _shape_problems(ops, adapter_ops)
    if problems:
        found_text = "; ".join(f"{op} -> {b.function.name}" for op, b in ops.items()) or "nothing"
        raise BindingIncomplete(
            f"cannot bind the C API in {api.header} to the checklist's operations.\n"
            f"Found: {found_text}.\nMissing: " + "; ".join(problems) +
            (f"\nAdd to llama-migrate.toml (roles: {', '.join(sorted(ROLES))}):\n[verify]\n"
             + "\n".join(s for s in suggestions) if suggestions else "") +
            "\nor name a Python adapter module: [verify] adapter = \"my_adapter.py\" (see docs/verification.md, "
            "\"Verifying your own C API\")."
        )  # fmt: skip
    return Binding(inf.prefix, ops, inf.notes, config.adapter)


def _shape_problems(ops: dict[str, OpBinding], adapter_ops: frozenset[str]) -> list[str]:
    """Operations bound to a function whose parameters cannot give the driver what it needs."""
    needs = {
        "model_load": ({"path"}, [{"model_out"}, set()]),
        "context_create": ({"model", "n_ctx"}, [set()]),
        "tokenize": ({"model", "text"}, [{"tokens_out"}, {"tokens_buffer"}]),
        "generate": ({"context"}, [{"prompt"}, {"tokens_in"}]),
        "generate_parallel": ({"context", "prompts", "n_prompts"}, [{"results_out"}, {"results_array"}]),
    }
    problems = []
    for op, (always, one_of) in needs.items():
        b = ops.get(op)
        if b is None or op in adapter_ops:
            continue
        roles = {p.role for p in b.params}
        missing = always - roles
        if missing:
            problems.append(f"{op} ({b.function.name}): no parameter for {', '.join(sorted(missing))}")
        if not any(alt <= roles for alt in one_of):
            problems.append(f"{op} ({b.function.name}): needs one of "
                            f"{' / '.join('+'.join(sorted(a)) for a in one_of)}")  # fmt: skip
    return problems
