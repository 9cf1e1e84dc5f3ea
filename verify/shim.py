"""Python face of a localllm-shaped C API (the seed's `localllm_capi.h`), over the cffi bindings.

Every call returns what the C function reported (code, value, message) instead of raising, so that checks can
assert on error paths as readily as on success paths. Memory the library hands out is freed with its own
`localllm_free_*` functions right away; the Python side keeps copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify.bindings import Bindings

SUCCESS = 0


@dataclass
class Call:
    """One C call: its return code, the value it produced (on success) and the error message it set."""

    code: int
    value: Any = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == SUCCESS

    def evidence(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass
class Sampling:
    max_tokens: int = 12
    temperature: float = 0.0  # <= 0: greedy
    top_k: int = 1
    top_p: float = 1.0
    repeat_penalty: float = 1.0  # 1.0: no penalty, so greedy output is the argmax path
    seed: int = 42


class Shim:
    def __init__(self, bindings: Bindings) -> None:
        self.b = bindings
        self.ffi = bindings.ffi
        self.lib: Any = bindings.lib
        self.err = self.ffi.new("const char **")

    # -- helpers

    def message(self) -> str:
        """The error message the last failing call set (empty when none)."""
        return "" if self.err[0] == self.ffi.NULL else self.ffi.string(self.err[0]).decode(errors="replace")

    def _text(self, ptr: Any) -> str:
        return self.ffi.string(ptr).decode("utf-8", errors="replace")

    def params(self, sampling: Sampling) -> Any:
        p = self.ffi.new("localllm_sampling_params *")
        p.max_tokens, p.temperature, p.top_k = sampling.max_tokens, sampling.temperature, sampling.top_k
        p.top_p, p.repeat_penalty, p.seed = sampling.top_p, sampling.repeat_penalty, sampling.seed
        return p

    def cstrings(self, texts: list[str]) -> tuple[Any, list[Any]]:
        """A `const char **` array and the buffers that must stay alive while it is used."""
        keep = [self.ffi.new("char[]", t.encode()) for t in texts]
        array = self.ffi.new("const char *[]", keep) if keep else self.ffi.NULL
        return array, keep

    # -- the API

    def backend_init(self) -> None:
        self.lib.localllm_backend_init()

    def backend_free(self) -> None:
        self.lib.localllm_backend_free()

    def load_model(self, path: Path | str | None, n_gpu_layers: int = 0, use_mmap: bool = True) -> Call:
        out = self.ffi.new("localllm_model_handle *")
        raw = self.ffi.NULL if path is None else str(path).encode()
        code = self.lib.localllm_model_load(raw, n_gpu_layers, use_mmap, False, out, self.err)
        return Call(code, out[0] if code == SUCCESS else None, self.message())

    def free_model(self, model: Any) -> None:
        self.lib.localllm_model_free(model)

    def create_context(self, model: Any, n_ctx: int, n_seq_max: int = 1, n_threads: int = 1) -> Call:
        out = self.ffi.new("localllm_context_handle *")
        code = self.lib.localllm_context_create(model, n_ctx, n_threads, n_seq_max, out, self.err)
        return Call(code, out[0] if code == SUCCESS else None, self.message())

    def free_context(self, ctx: Any) -> None:
        self.lib.localllm_context_free(ctx)

    def tokenize(self, model: Any, text: str, add_special: bool = True) -> Call:
        tokens = self.ffi.new("int32_t **")
        count = self.ffi.new("size_t *")
        code = self.lib.localllm_tokenize(model, text.encode(), add_special, tokens, count, self.err)
        if code != SUCCESS:
            return Call(code, None, self.message())
        values = [int(tokens[0][i]) for i in range(count[0])]
        self.lib.localllm_free_tokens(tokens[0])
        return Call(code, values, "")

    def detokenize(self, model: Any, tokens: list[int]) -> Call:
        array = self.ffi.new("int32_t[]", tokens) if tokens else self.ffi.NULL
        out = self.ffi.new("char **")
        code = self.lib.localllm_detokenize(model, array, len(tokens), out, self.err)
        if code != SUCCESS:
            return Call(code, None, self.message())
        text = self._text(out[0])
        self.lib.localllm_free_string(out[0])
        return Call(code, text, "")

    def generate(self, ctx: Any, prompt: str, sampling: Sampling) -> Call:
        out = self.ffi.new("char **")
        code = self.lib.localllm_generate(ctx, prompt.encode(), self.params(sampling), out, self.err)
        if code != SUCCESS:
            return Call(code, None, self.message())
        text = self._text(out[0])
        self.lib.localllm_free_string(out[0])
        return Call(code, text, "")

    def generate_parallel(self, ctx: Any, prompts: list[str], sampling: Sampling) -> Call:
        """Value: one entry per prompt, None where the library reported that prompt as failed (NULL)."""
        array, _keep = self.cstrings(prompts)
        out = self.ffi.new("char ***")
        code = self.lib.localllm_generate_parallel(ctx, array, len(prompts), self.params(sampling), out, self.err)
        message = self.message()
        if out[0] == self.ffi.NULL:
            return Call(code, None, message)
        results = [None if out[0][i] == self.ffi.NULL else self._text(out[0][i]) for i in range(len(prompts))]
        self.lib.localllm_free_string_array(out[0], len(prompts))
        return Call(code, results, message)

    def n_vocab(self, model: Any) -> int:
        return int(self.lib.localllm_n_vocab(model))

    def n_ctx(self, ctx: Any) -> int:
        return int(self.lib.localllm_n_ctx(ctx))
