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

from verify.bindings import BindingError, Bindings, load, preprocess_header
from verify.observe import ObserveError, Observer, find_llama_tree, llama_declarations
from verify.shim import Sampling, Shim


class SetupError(Exception):
    """The check could not get what it needs from the library (model, context): the check fails with this."""


class Skip(Exception):  # noqa: N818 - reads as `raise Skip(reason)`
    """The check cannot run here (no GPU, a hidden symbol): reported as skipped with the reason, never passed."""


@dataclass
class Target:
    """One build under test."""

    library: Path
    header: Path
    model: Path
    label: str = "build"
    llama_tree: Path | None = None

    def to_json(self) -> dict[str, str | None]:
        return {k: (str(v) if v is not None else None) for k, v in asdict(self).items()}


@dataclass
class Options:
    n_gpu_layers: int = 0
    n_threads: int = 1  # the tiny model gains nothing from threads; spinning OpenMP workers cost seconds on 2 cores
    max_tokens: int = 12
    normalise: str = "none"  # how parallel and single outputs are compared: none | strip | whitespace
    timeout: float = 60.0
    tie_margin: float = 0.05  # top-2 logit margin under which a greedy divergence counts as a numerical near-tie

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
        self.shim = Shim(self.bindings)
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
        self._model: Any = None
        self._contexts: list[Any] = []
        self._backend = False

    # -- setup

    def backend(self) -> None:
        if not self._backend:
            self.shim.backend_init()
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

    def close(self) -> None:
        for ctx in list(self._contexts):
            self.release(ctx)
        if self._model is not None:
            self.shim.free_model(self._model)
            self._model = None
        if self._backend:
            self.shim.backend_free()
            self._backend = False
