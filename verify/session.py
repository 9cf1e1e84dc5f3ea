"""What one check runs with inside its child process: the bound library, the observer, a loaded model, contexts.

Setting up is part of the check (a library that cannot load the model fails every check that needs one, each
with that reason); the session frees what it created so that a leak or a double free surfaces as a crash of the
check that caused it.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verify.binding import Binding, VerifyConfig, infer
from verify.bindings import BindingError, Bindings, load, preprocess_header
from verify.capi import read_api
from verify.driver import Driver, DriverError, Sampling, Skip, load_adapter
from verify.observe import ObserveError, Observer, find_llama_tree, llama_declarations

__all__ = ["DriverError", "Options", "Prepared", "Session", "SetupError", "Skip", "Target", "bind"]


class SetupError(Exception):
    """The check could not get what it needs from the library (model, context): the check fails with this."""


@dataclass
class Target:
    """One build under test, and how to bind its C API (`verify`: the consumer config's [verify] table,
    `config_root`: the folder its relative paths, such as `adapter`, are relative to)."""

    library: Path
    header: Path
    model: Path
    label: str = "build"
    llama_tree: Path | None = None
    verify: dict[str, Any] = field(default_factory=dict)
    config_root: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        return data

    @classmethod
    def from_json(cls, t: dict[str, Any]) -> Target:
        optional = {k: Path(t[k]) if t.get(k) else None for k in ("llama_tree", "config_root")}
        return cls(Path(t["library"]), Path(t["header"]), Path(t["model"]), t["label"], optional["llama_tree"],
                   dict(t.get("verify") or {}), optional["config_root"])  # fmt: skip

    def adapter_path(self) -> Path | None:
        name = self.verify.get("adapter")
        if not name:
            return None
        path = Path(name)
        return path if path.is_absolute() or self.config_root is None else self.config_root / path


def llama_include_dirs(tree: Path | None) -> list[Path]:
    if tree is None:
        return []
    return [d for d in (tree / "include", tree / "ggml" / "include") if d.is_dir()]


def bind(target: Target) -> Binding:
    """The target's C API bound to the checklist's operations (raises BindingIncomplete / HeaderError)."""
    config = VerifyConfig.from_table(target.verify)
    adapter = load_adapter(target.adapter_path()) if target.adapter_path() else None
    adapted = frozenset(name for name in dir(adapter) if not name.startswith("_")) if adapter else frozenset()
    api = read_api(target.header, llama_include_dirs(target.llama_tree))
    return infer(api, config, adapted)


@dataclass
class Options:
    n_gpu_layers: int = 0
    n_threads: int = 1  # the tiny model gains nothing from threads; spinning OpenMP workers cost seconds on 2 cores
    max_tokens: int = 12
    normalise: str = "none"  # how parallel and single outputs are compared: none | strip | whitespace
    timeout: float = 60.0
    tie_margin: float = 0.05  # top-2 logit margin under which a greedy divergence counts as a numerical near-tie
    # --trace: each check's child writes the traced library's llama.cpp calls to a file in this folder
    # (verify/trace.py); `contract`: the release whose run-time contract the calls are replayed against
    trace_dir: str | None = None
    contract: str | None = None
    # a second GGUF whose greedy decoding stops (EOS) within a few tokens on some prompts (`migrate model --eog`):
    # the stop, uneven-finish and refill checks run on it; "" skips them with the reason
    eog_model: str = ""
    # checks run at once, each in its own process (verify/runner.py); the timing checks always run alone
    jobs: int = 1
    # the gate's tokens/s floor (1 - allowed loss): throughput pairs are added while an interval straddles it
    # (verify/throughput.py Settings); None: a fixed-precision measurement, no decision
    tps_floor: float | None = None
    # the GGUF the paired tokens/s comparison loads ("": each target's own model): one whose per-token cost
    # dominates (`migrate model --size small`), so that a fixed per-decode cost of the tiny model does not decide
    throughput_model: str = ""
    # the most paired calls the comparison takes for precision alone (no floor to decide against); 0: the
    # comparison's own default (verify/throughput.py Settings.max_pairs). A plain `migrate run` only reports tokens/s
    # and takes the first blocks of pairs; the gate's decision (tps_floor) is not bounded by it
    tps_max_pairs: int = 0
    # `--generated N`: inputs Hypothesis draws per operation for the generated_inputs check (0: not asked, skipped)
    generated: int = 0
    # the consumer's own pytest checks (verify/usertests.py): the folder their node ids are relative to (set when
    # they are collected, read by each test's child)
    tests_root: str = ""
    # `--sanitize address,undefined`: the library is a sanitized build; each check's child preloads the runtime and
    # its sanitizer reports become findings (verify/sanitize.py)
    sanitize: list[str] = field(default_factory=list)

    def sampling(self, max_tokens: int | None = None) -> Sampling:
        return Sampling(max_tokens=self.max_tokens if max_tokens is None else max_tokens)


@dataclass
class Prepared:
    """Declarations made once by the parent for every child on the same build (saves each child two gcc runs);
    whatever failed here is left None and the child tries again, failing its check with the reason."""

    consumer: str | None = None
    llama_tree: str | None = None
    llama: str | None = None
    llama_missing: dict[str, str] = field(default_factory=dict)


def prepare(target: Target) -> Prepared:
    prepared = Prepared()
    with contextlib.suppress(BindingError):
        prepared.consumer = preprocess_header(target.header)
    try:
        tree = find_llama_tree(target.library, target.llama_tree)
        prepared.llama_tree = str(tree)
        prepared.llama, prepared.llama_missing = llama_declarations(tree)
    except (ObserveError, OSError):
        pass
    return prepared


class Session:
    def __init__(self, target: Target, options: Options, prepared: Prepared | None = None) -> None:
        self.target = target
        self.options = options
        prepared = prepared or Prepared()
        self.bindings: Bindings = load(target.library, target.header, declarations=prepared.consumer)
        adapter_path = target.adapter_path()
        self.binding = bind(target)
        self.shim = Driver(self.bindings, self.binding, load_adapter(adapter_path) if adapter_path else None)
        self.observer: Observer | None = None
        self.observer_error = ""
        try:
            if prepared.llama_tree and prepared.llama is not None:
                declarations = (prepared.llama, prepared.llama_missing)
                self.observer = Observer(self.bindings, Path(prepared.llama_tree), declarations)
            else:
                self.observer = Observer(self.bindings, find_llama_tree(target.library, target.llama_tree))
        except ObserveError as exc:
            self.observer_error = str(exc)
        if self.observer is not None:
            # the observer speaks llama.cpp; the consumer's handles go through the driver's accessors
            self.observer.context_of = self.shim.llama_context
            self.observer.model_of = self.llama_model
        self._model: Any = None
        self._llama_model: Any = None  # llama.cpp's model behind the session's model, read from one of its contexts
        self._contexts: list[Any] = []
        self._backend = False

    # -- setup

    def backend(self) -> None:
        if not self._backend:
            call = self.shim.backend_init()
            if not call.ok:
                raise SetupError(f"backend init failed ({call.code}): {call.message}")
            self._backend = True

    def model(self) -> Any:
        if self._model is None:
            self.backend()
            call = self.shim.load_model(self.target.model, self.options.n_gpu_layers)
            if not call.ok or call.value is None:
                raise SetupError(f"model load failed ({call.code}): {call.message}")
            self._model = call.value
        return self._model

    def context(self, n_ctx: int = 512, n_seq_max: int = 1) -> Any:
        call = self.shim.create_context(self.model(), n_ctx, n_seq_max, self.options.n_threads)
        if not call.ok or call.value is None:
            raise SetupError(f"context create (n_ctx {n_ctx}, n_seq_max {n_seq_max}) failed: {call.message}")
        self._contexts.append(call.value)
        return call.value

    def release(self, ctx: Any) -> None:
        if ctx in self._contexts:
            self._contexts.remove(ctx)
            self.shim.free_context(ctx)

    def can_observe_context(self) -> bool:
        """llama.cpp's context is reachable behind the consumer's context handle (typed so, or an accessor)."""
        return self.shim.has("llama_context") or self.shim._handle_type("context") == "struct llama_context"

    def llama_model(self, model: Any) -> Any:
        """llama.cpp's model behind a consumer's model handle: its own accessor, else, for the session's model
        behind an opaque handle, llama_get_model of a context made from it (Skip with the reason where neither)."""
        try:
            return self.shim.llama_model(model)
        except Skip:
            obs = self.observer
            if model is not self._model or obs is None or not obs.has("llama_get_model") \
                    or not self.can_observe_context():  # fmt: skip
                raise
        if self._llama_model is None:
            # a context of the session's own (the model outlives it): a check's contexts stay as it made them
            ctx = self.context(64, 1)
            try:
                self._llama_model = obs.lib.llama_get_model(obs.context_of(ctx))
            finally:
                self.release(ctx)
        return self._llama_model

    def need_observer(self, *names: str) -> Observer:
        if self.observer is None:
            raise Skip(f"cannot observe llama.cpp state: {self.observer_error}")
        if names and not self.observer.has(*names):
            raise Skip(f"library/header lacks what this observation needs: {self.observer.why_not(*names)}")
        return self.observer

    # -- convenience

    def tokens(self, text: str, add_special: bool = True) -> list[int]:
        call = self.shim.tokenize(self.model(), text, add_special)
        if not call.ok:
            raise SetupError(f"tokenize failed: {call.message}")
        return list(call.value)

    def count(self, text: str) -> int:
        return len(self.tokens(text))

    def n_vocab(self, model: Any) -> int:
        """From the consumer's API, else from llama.cpp's model behind the handle."""
        value = self.shim.info("n_vocab", model)
        if value is not None:
            return value
        obs = self.need_observer("llama_model_get_vocab", "llama_vocab_n_tokens")
        return int(obs.lib.llama_vocab_n_tokens(obs.lib.llama_model_get_vocab(obs.model_of(model))))

    def n_ctx(self, ctx: Any) -> int:
        value = self.shim.info("n_ctx", ctx)
        if value is not None:
            return value
        obs = self.need_observer("llama_n_ctx")
        return int(obs.lib.llama_n_ctx(obs.context_of(ctx)))

    def close(self) -> None:
        for ctx in list(self._contexts):
            self.release(ctx)
        if self._model is not None:
            self.shim.free_model(self._model)
            self._model = None
            self._llama_model = None
        if self._backend:
            self.shim.backend_free()
            self._backend = False
