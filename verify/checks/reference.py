"""What a prompt must produce: libllama's own greedy decode on the shim's context (observed), else the shim's
own `generate` alone on a fresh context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from verify.observe import DECODE, Trace
from verify.session import Session, Skip


def trace_json(trace: Trace) -> dict[str, Any]:
    return {"prompt_tokens": trace.prompt_tokens, "tokens": trace.tokens(), "stopped": trace.stopped,
            "margins": [round(x.margin, 5) for x in trace.steps], "runner_up": [x.runner_up for x in trace.steps],
            "logits": [round(x.logit, 5) for x in trace.steps], "pieces": [x.piece for x in trace.steps]}  # fmt: skip


def reference_traces(s: Session, prompts: list[str], max_tokens: int) -> dict[str, Trace]:
    """libllama's own greedy decode of each prompt, on a context the shim made (its parameters, its defaults)."""
    obs = s.need_observer(*DECODE)
    ctx = s.context(512, 1)
    traces = {p: obs.greedy_trace(ctx, s.tokens(p), max_tokens) for p in prompts}
    s.release(ctx)
    return traces


def generated_count(trace: Trace) -> int:
    """Tokens a greedy generate produces (and returns) for this trace: an end-of-generation token is not one."""
    return len(trace.steps) - (1 if trace.stopped == "eog" else 0)


@dataclass
class References:
    """What each prompt must produce: libllama's greedy decode (traces kept), or the shim's generate alone."""

    texts: dict[str, str | None]
    source: str
    traces: dict[str, Trace] = field(default_factory=dict)

    def stops(self) -> dict[str, int | None]:
        """Tokens generated before EOS, per prompt (None: no EOS within the budget); empty when not observed."""
        return {p: generated_count(t) if t.stopped == "eog" else None for p, t in self.traces.items()}

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "texts": self.texts, "stopped_after": self.stops()}


def trace_text(s: Session, ctx: Any, trace: Trace, n: int | None = None) -> str:
    """The text a shim returns for this greedy trace (its first `n` steps; default: up to, not including, EOG)."""
    obs = s.need_observer(*DECODE)
    vocab = obs.lib.llama_model_get_vocab(obs.lib.llama_get_model(obs.context_of(ctx)))
    steps = trace.steps[: generated_count(trace) if n is None else n]
    return "".join(obs.piece(vocab, st.token, special=False) for st in steps)


def observed_references(s: Session, ctx: Any, prompts: list[str], tokens: Callable[[str], list[int]],
                        max_tokens: int) -> References:  # fmt: skip
    """libllama's greedy decode of each prompt on `ctx` (memory cleared before and after each); Skip if unobservable."""
    obs = s.need_observer(*DECODE)
    if not s.can_observe_context():
        s.shim.llama_context(ctx)  # raises Skip with the reason and the config line to add
    traces = {p: obs.greedy_trace(ctx, tokens(p), max_tokens) for p in dict.fromkeys(prompts)}
    texts: dict[str, str | None] = {p: trace_text(s, ctx, t) for p, t in traces.items()}
    return References(texts, "libllama greedy decode on the shim's context", traces)


def references(s: Session, ctx: Any, prompts: list[str], tokens: Callable[[str], list[int]], max_tokens: int,
               fresh_context: Callable[[], Any]) -> References:  # fmt: skip
    """Observed references, else each prompt through the shim's `generate` alone on a fresh context."""
    try:
        return observed_references(s, ctx, prompts, tokens, max_tokens)
    except Skip as exc:
        sampling = s.options.sampling(max_tokens)
        texts = {p: s.shim.generate(fresh_context(), p, sampling).value for p in dict.fromkeys(prompts)}
        return References(texts, f"the shim's generate alone on a fresh context (libllama not observable: {exc})")
