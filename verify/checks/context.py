"""context: context parameters read back from llama.cpp; the API's own model and context facts."""

from __future__ import annotations

import os
from typing import Any

from verify.checks.framework import Verdict, check, failures, takes
from verify.observe import CONTEXT_PARAMS, MODEL_FACTS
from verify.prompts import grow_to_tokens
from verify.session import Session, Skip

CONTEXT_CASES = ((512, 1, 3), (512, 3, 2))  # n_ctx, n_seq_max, n_threads: none of them llama.cpp's default


@check("context_params", "context", "context parameters read back: threads (generation and batch), n_seq_max, "
       "batch sizes")  # fmt: skip
def context_params(s: Session) -> Verdict:
    obs = s.need_observer("llama_n_ctx", "llama_n_seq_max", "llama_n_batch", *CONTEXT_PARAMS)
    asked = [r for r in ("n_threads", "n_seq_max", "n_batch") if takes(s, "context_create", r)]
    if not asked:
        raise Skip("context create takes no threads, n_seq_max or batch size: nothing to read back")
    model = s.model()
    evidence: dict[str, Any] = {"parameters_taken": asked}
    problems: list[str] = []
    for n_ctx, n_seq_max, n_threads in CONTEXT_CASES:
        override = {"n_batch": 256} if "n_batch" in asked else None
        call = s.shim.create_context(model, n_ctx, n_seq_max, n_threads, override)
        key = f"n_ctx={n_ctx},n_seq_max={n_seq_max},n_threads={n_threads}"
        if not call.ok:
            problems.append(f"{key}: context create failed: {call.message}")
            evidence[key] = call.evidence()
            continue
        try:
            lctx = obs.context_of(call.value)
            read = {name: int(getattr(obs.lib, f"llama_{name}")(lctx))
                    for name in ("n_ctx", "n_seq_max", "n_batch", "n_ubatch", "n_threads", "n_threads_batch")}
        finally:
            s.shim.free_context(call.value)
        evidence[key] = read
        want = {"n_threads": n_threads, "n_threads_batch": n_threads, "n_seq_max": n_seq_max, "n_batch": 256}
        for name, value in want.items():
            param = "n_threads" if name.startswith("n_threads") else name
            if param in asked and read[name] != value:
                problems.append(f"{key}: llama_{name} reads {read[name]}, asked {value}")
        if read["n_ctx"] < n_ctx:
            problems.append(f"{key}: llama_n_ctx reads {read['n_ctx']}, asked {n_ctx}")
    if "n_threads" in asked:
        # n_threads 0: "as many as the machine has" by the common convention, or refused with a message; never a
        # context that llama.cpp runs with no thread at all, nor with more threads than the machine has CPUs (a
        # fixed fallback such as llama.cpp's default 4 oversubscribes a smaller machine on every call)
        none = s.shim.create_context(model, 512, 1, 0)
        evidence["n_threads=0"] = none.evidence()
        if none.ok:
            try:
                lctx = obs.context_of(none.value)
                threads = [int(obs.lib.llama_n_threads(lctx)), int(obs.lib.llama_n_threads_batch(lctx))]
            finally:
                s.shim.free_context(none.value)
            evidence["n_threads=0"] |= {"n_threads": threads[0], "n_threads_batch": threads[1]}
            cpus = os.cpu_count()
            evidence["n_threads=0"]["cpus"] = cpus
            if min(threads) < 1 or (cpus is not None and max(threads) > cpus):
                problems.append(f"n_threads 0: llama.cpp runs with n_threads {threads[0]}, n_threads_batch "
                                f"{threads[1]} on a machine of {cpus} CPUs")  # fmt: skip
        elif not none.message:
            problems.append("n_threads 0: refused without a message")
    # n_ctx 0: llama.cpp's own convention is the model's training context; a library may refuse it instead, with a
    # message. A context it makes must then generate, from a prompt longer than llama.cpp's smallest batch (64)
    long_prompt = grow_to_tokens(s.count, 100)
    zero = s.shim.create_context(model, 0, 1, s.options.n_threads)
    evidence["n_ctx=0"] = zero.evidence()
    if zero.ok:
        try:
            lctx = obs.context_of(zero.value)
            read = {name: int(getattr(obs.lib, f"llama_{name}")(lctx)) for name in ("n_ctx", "n_batch", "n_ubatch")}
            call = s.shim.generate(zero.value, long_prompt, s.options.sampling())
        finally:
            s.shim.free_context(zero.value)
        evidence["n_ctx=0"] |= {"read": read, "generate": call.evidence() | {"text": call.value}}
        if read["n_ctx"] <= 0 or read["n_batch"] <= 0:
            problems.append(f"n_ctx 0: llama.cpp reads n_ctx {read['n_ctx']}, n_batch {read['n_batch']}")
        if not call.ok:
            problems.append(f"n_ctx 0: the context was made but generate ({s.count(long_prompt)} prompt tokens) "
                            f"failed: {call.message}")  # fmt: skip
    elif not zero.message:
        problems.append("n_ctx 0: refused without a message")
    evidence["api_facts"], found = _api_facts(s, obs, model)
    problems += found
    summary = "; ".join(f"{k}: {v}" for k, v in evidence.items() if k not in ("parameters_taken", "n_ctx=0",
                                                                             "n_threads=0", "api_facts"))  # fmt: skip
    return Verdict(not problems, evidence, failures(problems), summary)


def _api_facts(s: Session, obs: Any, model: Any) -> tuple[dict[str, Any], list[str]]:
    """The API's own model and context facts (n_vocab, BOS, EOS, n_ctx), where it has them, against llama.cpp's."""
    needed = ("llama_get_model", "llama_model_get_vocab", "llama_vocab_n_tokens", *MODEL_FACTS)
    if not obs.has(*needed):
        return {"not_observable": obs.why_not(*needed)}, []
    ctx = s.context(512, 1)
    lctx = obs.context_of(ctx)
    vocab = obs.lib.llama_model_get_vocab(obs.lib.llama_get_model(lctx))
    truth = {"n_vocab": (model, obs.lib.llama_vocab_n_tokens(vocab)),
             "token_bos": (model, obs.lib.llama_vocab_bos(vocab)), "token_eos": (model, obs.lib.llama_vocab_eos(vocab)),
             "n_ctx": (ctx, obs.lib.llama_n_ctx(lctx))}  # fmt: skip
    facts: dict[str, Any] = {}
    problems: list[str] = []
    for op, (handle, want) in truth.items():
        got = s.shim.info(op, handle)
        facts[op] = {"api": got, "llama": int(want)}
        if got is not None and got != int(want):
            problems.append(f"the API's {op} is {got}, llama.cpp's {int(want)}")
    s.release(ctx)
    return facts, problems
