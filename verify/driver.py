"""The checklist's operations on any bound consumer C API: every call returns what the C function reported.

A `Driver` turns an operation (load a model, generate from a prompt ...) into a call of the consumer's own
function, building each argument from the role its parameter was bound to (verify/binding.py): handles, error
out-parameters or buffers, prompts as text or as token ids (tokenized first with the consumer's own tokenizer),
sampling values as separate arguments or as a struct, result out-parameters and caller buffers. Memory the
library hands out is freed with its own free functions right away; the Python side keeps copies.

A harness problem (an operation with no binding, an argument it cannot build) raises `DriverError`: the check
is then an `error`, never the consumer's failure. An observation the API cannot give (an opaque handle with no
accessor) raises `Skip`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from verify.binding import Binding, OpBinding, ParamBinding
from verify.bindings import Bindings
from verify.errors import ToolError

NULL = object()  # an override meaning "pass NULL for this parameter"
TEXT_BUFFER_BYTES = 1 << 16
ERROR_BUFFER_BYTES = 2048
GREEDY_REPEAT_LAST_N = 64


class DriverError(Exception):
    """The harness could not drive the consumer's API for this call (no binding, an argument it cannot build)."""


class Skip(Exception):  # noqa: N818 - reads as `raise Skip(reason)`
    """The check cannot run here (no GPU, an opaque handle, a hidden symbol): skipped with the reason."""


@dataclass
class Call:
    """One C call: whether it reported success, its raw return code, the value it produced and its message."""

    code: int
    value: Any = None
    message: str = ""
    succeeded: bool | None = None  # None: the code alone says (0 is success)

    @property
    def ok(self) -> bool:
        return self.code == 0 if self.succeeded is None else self.succeeded

    def evidence(self) -> dict[str, Any]:
        return {"code": self.code, "ok": self.ok, "message": self.message}


@dataclass
class Sampling:
    max_tokens: int = 12
    temperature: float = 0.0  # <= 0: greedy
    top_k: int = 1
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0  # 1.0: no penalty, so greedy output is the argmax path
    repeat_last_n: int = GREEDY_REPEAT_LAST_N
    seed: int = 42

    def value(self, role: str) -> Any:
        return getattr(self, role)


def _count(values: Any) -> int:
    """Length of an input list; a NULL override counts 0 unless the count is given too."""
    return 0 if values is NULL else len(values)


class AdapterError(ToolError):
    """The consumer's adapter module is missing or cannot be imported: bad input (exit 2), never a check's failure."""


def load_adapter(path: Path) -> ModuleType:
    """The consumer's adapter module: functions named after operations, `generate(driver, ctx, prompt, sampling)`."""
    where = "[verify] adapter in llama-migrate.toml"
    if not path.is_file():
        raise AdapterError(f"adapter {path}: no such file; fix {where}")
    spec = importlib.util.spec_from_file_location(f"llama_migrate_adapter_{abs(hash(str(path)))}", path)
    if spec is None or spec.loader is None:
        raise AdapterError(f"adapter {path} cannot be imported (not a Python file?); fix {where}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise AdapterError(f"adapter {path}: syntax error at line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:  # noqa: BLE001 - whatever the consumer's module raises while it is imported
        raise AdapterError(f"adapter {path} raises on import: {type(exc).__name__}: {exc}") from exc
    return module


class Driver:
    def __init__(self, bindings: Bindings, binding: Binding, adapter: ModuleType | None = None) -> None:
        self.b = bindings
        self.ffi = bindings.ffi
        self.lib: Any = bindings.lib
        self.binding = binding
        self.adapter = adapter
        self._model_of: dict[int, Any] = {}  # context address -> model handle (token-id prompts need the model)

    # -- plumbing

    def op(self, name: str) -> OpBinding:
        bound = self.binding.get(name)
        if bound is None:
            raise DriverError(f"no function is bound to operation {name!r} (configure [verify] {name}.function)")
        return bound

    def has(self, name: str) -> bool:
        return name in self.binding.ops or self._adapted(name) is not None

    def _adapted(self, name: str) -> Any:
        return getattr(self.adapter, name, None) if self.adapter is not None else None

    def _address(self, handle: Any) -> int:
        return int(self.ffi.cast("uintptr_t", handle))

    def _text(self, ptr: Any) -> str:
        return self.ffi.string(ptr).decode("utf-8", errors="replace")

    def _array(self, p: ParamBinding, values: list[Any]) -> Any:
        item = self.ffi.typeof(p.type.spelling).item
        return self.ffi.new(self.ffi.getctype(item, "[]"), values)

    def invoke(self, name: str, inputs: dict[str, Any], override: dict[str, Any] | None = None) -> tuple[Call, dict]:
        """Call the operation's function with arguments built from `inputs` (by role); `override` replaces
        inputs by role, `NULL` passing a null pointer. Returns the call and the out-parameters by role."""
        bound = self.op(name)
        values = inputs | (override or {})
        keep: list[Any] = []
        outs: dict[str, Any] = {}
        args = [self._argument(bound, p, values, keep, outs) for p in bound.params]
        try:
            fn = getattr(self.lib, bound.function.name)
        except AttributeError as exc:
            raise DriverError(f"{bound.function.name} is declared in the header but not exported by "
                              f"{self.b.library_path}") from exc  # fmt: skip
        try:
            rc = fn(*args)
        except TypeError as exc:  # an argument cffi refused: the binding is wrong, not the consumer
            raise DriverError(f"calling {bound.function.signature()}: {exc}") from exc
        outs["_keep"] = keep
        succeeded = self._succeeded(bound.success, rc)
        code = self._code(rc, succeeded)
        message = "" if succeeded else self._message(outs)
        return Call(code, rc, message, succeeded), outs

    def _succeeded(self, convention: str, rc: Any) -> bool:
        if convention == "none":
            return True
        if convention == "nonnull":
            return rc != self.ffi.NULL
        value = int(rc)
        return {"zero": value == 0, "nonzero": value != 0, "nonnegative": value >= 0, "true": bool(value)}[convention]

    def _code(self, rc: Any, succeeded: bool) -> int:
        if isinstance(rc, int | bool):
            return int(rc)
        return 0 if succeeded else 1

    def _message(self, outs: dict[str, Any]) -> str:
        if "error_out" in outs and outs["error_out"][0] != self.ffi.NULL:
            return self._text(outs["error_out"][0])
        if "error_buffer" in outs:
            return self._text(outs["error_buffer"])
        if "last_error" in self.binding.ops:
            call, _ = self.invoke("last_error", {})
            if call.value is not None and call.value != self.ffi.NULL:
                return self._text(call.value)
        return ""

    def _argument(self, bound: OpBinding, p: ParamBinding, values: dict[str, Any], keep: list[Any],
                  outs: dict[str, Any]) -> Any:  # fmt: skip
        role = p.role
        if role is None:
            raise DriverError(f"{bound.function.name}: parameter {p.name} has no role (configure [verify] "
                              f"{bound.op}.params.{p.name})")  # fmt: skip
        if role == "value":
            return p.value
        if values.get(role) is NULL:
            outs[role] = None
            return self.ffi.NULL
        ffi = self.ffi
        if role in ("model_out", "context_out", "tokens_out", "n_tokens_out", "text_out", "results_out", "error_out"):
            outs[role] = ffi.new(p.type.spelling)
            return outs[role]
        if role == "error_buffer":
            outs[role] = ffi.new("char[]", ERROR_BUFFER_BYTES)
            return outs[role]
        if role == "error_buffer_size":
            return ERROR_BUFFER_BYTES
        if role in ("path", "text", "prompt"):
            raw = values.get(role)
            if raw is None:
                return ffi.NULL
            buf = ffi.new("char[]", str(raw).encode() if not isinstance(raw, bytes) else raw)
            keep.append(buf)
            return buf
        if role == "prompts":
            items = [ffi.NULL if t is None else ffi.new("char[]", t.encode()) for t in values["prompts"]]
            keep.append(items)
            array = ffi.new("char *[]", items) if items else ffi.new("char *[]", 1)
            keep.append(array)
            return ffi.cast(p.type.spelling, array)
        if role == "n_prompts":
            return values["n_prompts"] if "n_prompts" in values else _count(values["prompts"])
        if role == "tokens_in":
            array = self._array(p, list(values["tokens_in"]) or [0])
            keep.append(array)
            return array
        if role == "n_tokens_in":
            return values["n_tokens_in"] if "n_tokens_in" in values else _count(values["tokens_in"])
        if role == "tokens_buffer":
            capacity = values.get("tokens_capacity", values.get("_capacity", 64))
            outs[role] = self._array(p, [0] * max(int(capacity), 1))
            return outs[role]
        if role == "tokens_capacity":
            return values.get("tokens_capacity", values.get("_capacity", 64))
        if role == "text_buffer":
            outs[role] = ffi.new("char[]", TEXT_BUFFER_BYTES)
            return outs[role]
        if role == "text_buffer_size":
            return values.get("text_buffer_size", TEXT_BUFFER_BYTES)
        if role == "results_array":
            n = values["n_prompts"] if "n_prompts" in values else _count(values["prompts"])
            outs[role] = ffi.new("char *[]", max(int(n), 1))
            return outs[role]
        if role == "sampling":
            return self._sampling_struct(bound, p, values["sampling"], keep)
        if role in ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed"):
            sampling: Sampling = values["sampling"]
            return values.get(role, sampling.value(role))
        if role == "use_mlock":
            return values.get(role, False)
        if role == "n_batch":
            return values.get(role, 512)
        if role in values:
            return values[role]
        raise DriverError(f"{bound.function.name}: the harness has no value for parameter {p.name} (role {role})")

    def _sampling_struct(self, bound: OpBinding, p: ParamBinding, sampling: Sampling, keep: list[Any]) -> Any:
        struct = self.ffi.new(p.type.spelling)
        for field_name, role in bound.fields.items():
            setattr(struct, field_name, sampling.value(role))
        keep.append(struct)
        return struct

    # -- operations

    def backend_init(self) -> Call:
        if (fn := self._adapted("backend_init")) is not None:
            return fn(self)
        if "backend_init" not in self.binding.ops:
            return Call(0, None, "no backend init function: nothing to call")
        return self.invoke("backend_init", {})[0]

    def backend_free(self) -> None:
        if (fn := self._adapted("backend_free")) is not None:
            fn(self)
        elif "backend_free" in self.binding.ops:
            self.invoke("backend_free", {})

    def load_model(self, path: Path | str | None, n_gpu_layers: int = 0, use_mmap: bool = True,
                   override: dict[str, Any] | None = None) -> Call:  # fmt: skip
        if (fn := self._adapted("model_load")) is not None:
            return fn(self, path, n_gpu_layers, use_mmap)
        inputs = {"path": None if path is None else str(path), "n_gpu_layers": n_gpu_layers, "use_mmap": use_mmap}
        call, outs = self.invoke("model_load", inputs, override)
        return self._handle(call, outs, "model_out")

    def _handle(self, call: Call, outs: dict[str, Any], out_role: str) -> Call:
        if not call.ok:
            return Call(call.code, None, call.message, False)
        handle = outs[out_role][0] if outs.get(out_role) is not None else call.value
        if handle == self.ffi.NULL:
            return Call(call.code if call.code else 1, None, call.message or "no handle returned", False)
        return Call(call.code, handle, "", True)

    def free_model(self, model: Any) -> None:
        if (fn := self._adapted("model_free")) is not None:
            fn(self, model)
        else:
            self.invoke("model_free", {"model": model})

    def create_context(self, model: Any, n_ctx: int, n_seq_max: int = 1, n_threads: int = 1,
                       override: dict[str, Any] | None = None) -> Call:  # fmt: skip
        if (fn := self._adapted("context_create")) is not None:
            call = fn(self, model, n_ctx, n_seq_max, n_threads)
        else:
            inputs = {"model": model, "n_ctx": n_ctx, "n_seq_max": n_seq_max, "n_threads": n_threads}
            call = self._handle(*self.invoke("context_create", inputs, override), "context_out")
        if call.ok:
            self._model_of[self._address(call.value)] = model
        return call

    def free_context(self, ctx: Any) -> None:
        self._model_of.pop(self._address(ctx), None)
        if (fn := self._adapted("context_free")) is not None:
            fn(self, ctx)
        else:
            self.invoke("context_free", {"context": ctx})

    def tokenize(self, model: Any, text: str | None, add_special: bool = True,
                 override: dict[str, Any] | None = None) -> Call:  # fmt: skip
        if (fn := self._adapted("tokenize")) is not None:
            return fn(self, model, text, add_special)
        capacity = 2 * len((text or "").encode()) + 16
        inputs = {"model": model, "text": text, "add_special": add_special, "_capacity": capacity}
        call, outs = self.invoke("tokenize", inputs, override)
        if not call.ok:
            return Call(call.code, None, call.message, False)
        if outs.get("tokens_out") is not None:
            pointer, count = outs["tokens_out"][0], outs.get("n_tokens_out")
            n = int(count[0]) if count is not None else 0
            values = [int(pointer[i]) for i in range(n)] if pointer != self.ffi.NULL else []
            if pointer != self.ffi.NULL and "free_tokens" in self.binding.ops:
                self.invoke("free_tokens", {"tokens": pointer})
            return Call(call.code, values, "", True)
        n = int(call.value)
        if n > capacity:
            raise DriverError(f"tokenize reported {n} tokens for a buffer of {capacity}")
        buffer = outs.get("tokens_buffer")
        return Call(0, [int(buffer[i]) for i in range(n)] if buffer is not None else [], "", True)

    def detokenize(self, model: Any, tokens: list[int], override: dict[str, Any] | None = None) -> Call:
        if (fn := self._adapted("detokenize")) is not None:
            return fn(self, model, tokens)
        call, outs = self.invoke("detokenize", {"model": model, "tokens_in": tokens}, override)
        return self._text_result(call, outs)

    def _text_result(self, call: Call, outs: dict[str, Any]) -> Call:
        if not call.ok:
            return Call(call.code, None, call.message, False)
        if outs.get("text_out") is not None:
            pointer = outs["text_out"][0]
            if pointer == self.ffi.NULL:
                return Call(call.code, None, "success reported but no text returned", False)
            text = self._text(pointer)
            if "free_string" in self.binding.ops:
                self.invoke("free_string", {"string": pointer})
            return Call(call.code, text, "", True)
        if outs.get("text_buffer") is not None:
            return Call(call.code, self._text(outs["text_buffer"]), "", True)
        raise DriverError("the bound function returns no text (no text out-parameter or buffer)")

    def prompt_inputs(self, ctx: Any, prompt: str | None) -> dict[str, Any]:
        """`prompt` as the generate function takes it: text, or token ids from the consumer's tokenizer."""
        bound = self.op("generate")
        if bound.has("prompt") or prompt is None:
            return {"prompt": prompt}
        model = self._model_of.get(self._address(ctx))
        if model is None:
            raise DriverError("generate takes token ids, but the context was not created through the driver")
        tokens = self.tokenize(model, prompt, add_special=True)
        if not tokens.ok:
            raise DriverError(f"tokenizing the prompt for generate failed: {tokens.message}")
        return {"tokens_in": tokens.value}

    def generate(self, ctx: Any, prompt: str | None, sampling: Sampling,
                 override: dict[str, Any] | None = None) -> Call:  # fmt: skip
        if (fn := self._adapted("generate")) is not None:
            return fn(self, ctx, prompt, sampling)
        inputs = {"context": ctx, "sampling": sampling, **self.prompt_inputs(ctx, prompt)}
        call, outs = self.invoke("generate", inputs, override)
        return self._text_result(call, outs)

    def generate_parallel(self, ctx: Any, prompts: list[str | None], sampling: Sampling,
                          override: dict[str, Any] | None = None) -> Call:  # fmt: skip
        """Value: one entry per prompt, None where the library reported that prompt as failed (NULL)."""
        if (fn := self._adapted("generate_parallel")) is not None:
            return fn(self, ctx, prompts, sampling)
        inputs = {"context": ctx, "prompts": prompts, "sampling": sampling}
        call, outs = self.invoke("generate_parallel", inputs, override)
        n = len(prompts)
        if outs.get("results_out") is not None:
            array = outs["results_out"][0]
            if array == self.ffi.NULL:
                return Call(call.code, None, call.message, call.ok)
            results = [None if array[i] == self.ffi.NULL else self._text(array[i]) for i in range(n)]
            self._free_results(array, n)
        elif outs.get("results_array") is not None:
            array = outs["results_array"]
            results = [None if array[i] == self.ffi.NULL else self._text(array[i]) for i in range(n)]
            if "free_string" in self.binding.ops:
                for i in range(n):
                    if array[i] != self.ffi.NULL:
                        self.invoke("free_string", {"string": array[i]})
        else:
            return Call(call.code, None, call.message, call.ok)
        return Call(call.code, results, call.message, call.ok)

    def _free_results(self, array: Any, n: int) -> None:
        if "free_string_array" in self.binding.ops:
            self.invoke("free_string_array", {"strings": array, "n_strings": n})

    # -- model and context facts (None: the API has no such function)

    def info(self, op: str, handle: Any) -> int | None:
        if (fn := self._adapted(op)) is not None:
            return int(fn(self, handle))
        if op not in self.binding.ops:
            return None
        role = "context" if op == "n_ctx" else "model"
        return int(self.invoke(op, {role: handle})[0].value)

    # -- llama.cpp's objects behind the handles

    def llama_context(self, ctx: Any) -> Any:
        return self._llama("llama_context", "context", "struct llama_context", ctx)

    def llama_model(self, model: Any) -> Any:
        return self._llama("llama_model", "model", "struct llama_model", model)

    def _llama(self, op: str, role: str, target: str, handle: Any) -> Any:
        if (fn := self._adapted(op)) is not None:
            return fn(self, handle)
        handle_type = self._handle_type(role)
        if handle_type == target:
            return handle
        if op in self.binding.ops:
            return self.invoke(op, {role: handle})[0].value
        raise Skip(f"the {role} handle ({handle_type or 'unknown type'}) is opaque and no accessor returning "
                   f"`{target} *` is bound; declare one and set [verify] {op}.function to observe llama.cpp state")

    def _handle_type(self, role: str) -> str | None:
        for bound in self.binding.ops.values():
            p = bound.role(role)
            if p is not None:
                return p.type.base
        return None
