"""errors: prompt longer than the context, invalid input, a context larger than memory."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verify.checks.compare import clip
from verify.checks.framework import Verdict, check, failures
from verify.driver import NULL, Call
from verify.prompts import PROMPT_A, PROMPT_B, grow_to_tokens
from verify.session import Session


@check("error_prompt_too_long", "errors", "prompt longer than the context: error + message, alive, next call works")
def error_prompt_too_long(s: Session) -> Verdict:
    ctx = s.context(64, 1)
    n_ctx = s.n_ctx(ctx)  # releases may round the context up (b7836 pads to 256)
    long_prompt = grow_to_tokens(s.count, n_ctx + 16)
    n_long = s.count(long_prompt)
    single = s.shim.generate(ctx, long_prompt, s.options.sampling())
    after = s.shim.generate(ctx, PROMPT_B, s.options.sampling())
    fresh = s.shim.generate(s.context(64, 1), PROMPT_B, s.options.sampling())
    pctx = s.context(64, 2)
    parallel = s.shim.generate_parallel(pctx, [PROMPT_B, long_prompt], s.options.sampling())
    after_parallel = s.shim.generate_parallel(pctx, [PROMPT_B], s.options.sampling())
    evidence = {"n_ctx": n_ctx, "prompt_tokens": n_long, "generate": single.evidence(),
                "generate_after": after.evidence() | {"text": after.value, "fresh_context_text": fresh.value},
                "parallel": parallel.evidence() | {"results": parallel.value},
                "parallel_after": after_parallel.evidence() | {"results": after_parallel.value}}  # fmt: skip
    problems: list[str] = []
    if single.ok or not single.message:
        problems.append(f"generate with {n_long} tokens in a {n_ctx} context: code {single.code}, no error message")
    if not after.ok or after.value != fresh.value:
        problems.append(f"the next generate did not work as on a fresh context: {after.message}")
    if parallel.ok or not parallel.message:
        problems.append("generate_parallel with a too-long prompt reported success or no message")
    elif parallel.value is not None and parallel.value[1] is not None:
        problems.append("generate_parallel returned text for the too-long prompt")
    if not after_parallel.ok:
        problems.append(f"the next generate_parallel failed: {after_parallel.message}")
    summary = f"{n_long} tokens in n_ctx {n_ctx}: {single.message!r}; next calls ok"
    return Verdict(not problems, evidence, failures(problems), summary)


InvalidCase = Callable[[], Call]


def _invalid_cases(s: Session, model: Any, ctx: Any) -> tuple[dict[str, InvalidCase], dict[str, str]]:
    """Calls that must fail cleanly, built from the binding's roles (whatever the consumer's signatures), and the
    cases that do not apply to this API with the reason."""
    d = s.shim
    good, zero, negative = s.options.sampling(), s.options.sampling(0), s.options.sampling(-5)
    ops = {name: d.binding.get(name) for name in ("model_load", "context_create", "tokenize", "detokenize",
                                                   "generate", "generate_parallel")}  # fmt: skip
    load_in = {"path": str(s.target.model), "n_gpu_layers": s.options.n_gpu_layers, "use_mmap": True}
    ctx_in = {"model": model, "n_ctx": 512, "n_seq_max": 1, "n_threads": s.options.n_threads}
    tok_in = {"model": model, "text": "hi", "add_special": True, "_capacity": 64}
    gen_in = {"context": ctx, "sampling": good} | d.prompt_inputs(ctx, "hi")
    par_in = {"context": ctx, "prompts": [PROMPT_B, PROMPT_A], "n_prompts": 2, "sampling": good}
    cases: dict[str, InvalidCase] = {}
    not_applicable: dict[str, str] = {}

    def case(name: str, op: str, inputs: dict[str, Any], override: dict[str, Any], needs: tuple[str, ...] = ()):
        bound = ops[op]
        if bound is None:
            not_applicable[name] = f"no function bound to {op}"
        elif bound.success == "none":
            not_applicable[name] = f"{bound.function.name} returns nothing: an error cannot be observed"
        elif needs and not any(bound.has(r) for r in needs):
            not_applicable[name] = f"{bound.function.name} has no {' / '.join(needs)} parameter"
        else:
            cases[name] = lambda: d.invoke(op, inputs, override)[0]

    out_roles = ("tokens_out", "tokens_buffer")
    text_prompt = ops["generate"] is not None and ops["generate"].has("prompt")
    prompt_null = {"prompt": NULL} if text_prompt else {"tokens_in": NULL, "n_tokens_in": 3}
    empty_prompt = {"prompt": ""} if text_prompt else {"tokens_in": [], "n_tokens_in": 0}
    case("model_load:path_null", "model_load", load_in, {"path": NULL})
    case("model_load:model_out_null", "model_load", load_in, {"model_out": NULL}, ("model_out",))
    case("context_create:model_null", "context_create", ctx_in, {"model": NULL})
    case("context_create:out_null", "context_create", ctx_in, {"context_out": NULL}, ("context_out",))
    case("context_create:n_ctx_negative", "context_create", ctx_in, {"n_ctx": -1})
    case("context_create:n_seq_max_0", "context_create", ctx_in, {"n_seq_max": 0}, ("n_seq_max",))
    case("tokenize:model_null", "tokenize", tok_in, {"model": NULL})
    case("tokenize:text_null", "tokenize", tok_in, {"text": NULL})
    case("tokenize:out_null", "tokenize", tok_in, {r: NULL for r in (*out_roles, "n_tokens_out")}, out_roles)
    case("detokenize:model_null", "detokenize", {"model": NULL, "tokens_in": [1]}, {})
    case("detokenize:tokens_null", "detokenize", {"model": model, "tokens_in": [1, 2, 3]},
         {"tokens_in": NULL, "n_tokens_in": 3})
    # the boundary: a NULL array of one token (a count check written `> 1` lets it through)
    case("detokenize:tokens_null_one", "detokenize", {"model": model, "tokens_in": [1]},
         {"tokens_in": NULL, "n_tokens_in": 1})
    case("generate:ctx_null", "generate", gen_in, {"context": NULL})
    case("generate:prompt_null", "generate", gen_in, prompt_null)
    case("generate:params_null", "generate", gen_in, {"sampling": NULL}, ("sampling",))
    case("generate:result_null", "generate", gen_in, {"text_out": NULL, "text_buffer": NULL},
         ("text_out", "text_buffer"))  # fmt: skip
    case("generate:empty_prompt", "generate", gen_in, empty_prompt)
    case("generate:max_tokens_0", "generate", gen_in, {"sampling": zero})
    case("generate:max_tokens_negative", "generate", gen_in, {"sampling": negative})
    case("parallel:ctx_null", "generate_parallel", par_in, {"context": NULL})
    case("parallel:prompts_null", "generate_parallel", par_in, {"prompts": NULL})
    case("parallel:zero_prompts", "generate_parallel", par_in, {"n_prompts": 0})
    case("parallel:negative_prompts", "generate_parallel", par_in, {"n_prompts": -1})
    case("parallel:null_entry", "generate_parallel", par_in, {"prompts": [PROMPT_B, None]})
    case("parallel:empty_prompt", "generate_parallel", par_in, {"prompts": [PROMPT_B, ""]})
    case("parallel:params_null", "generate_parallel", par_in, {"sampling": NULL}, ("sampling",))
    case("parallel:max_tokens_0", "generate_parallel", par_in, {"sampling": zero})
    case("parallel:results_null", "generate_parallel", par_in, {"results_out": NULL, "results_array": NULL},
         ("results_out", "results_array"))  # fmt: skip
    n_vocab = s.n_vocab(model)
    for name, ids in {"token_-1": [1, -1], "token_n_vocab": [1, n_vocab], "token_int_max": [2**31 - 1]}.items():
        case(f"detokenize:{name}", "detokenize", {"model": model, "tokens_in": ids}, {})
    return cases, not_applicable


def readable(message: str) -> bool:
    """An error message is text: valid UTF-8 (the driver decodes with replacement characters) and printable. A pointer
    into a freed buffer reads glibc's free-list pointers and MALLOC_PERTURB_'s fill bytes instead."""
    return "\ufffd" not in message and all(c.isprintable() or c in "\n\t" for c in message)


@check("error_invalid_input", "errors", "invalid input (NULLs, zero prompts, bad token ids, max_tokens <= 0, empty)")
def error_invalid_input(s: Session) -> Verdict:
    model = s.model()
    ctx = s.context(512, 2)
    evidence: dict[str, Any] = {}
    problems: list[str] = []
    cases, not_applicable = _invalid_cases(s, model, ctx)
    for name, run in cases.items():
        call = run()
        evidence[name] = {"code": call.code, "ok": call.ok, "message": call.message}
        if call.ok:
            problems.append(f"{name}: accepted (code {call.code})")
        elif not call.message:
            problems.append(f"{name}: error code {call.code} without a message")
        elif not readable(call.message):
            problems.append(f"{name}: the error message is not text ({call.message[:60]!r}): it points into freed or "
                            "uninitialised memory (e.g. a temporary string's buffer)")  # fmt: skip
    after = s.shim.generate(ctx, PROMPT_B, s.options.sampling())
    refused = sum(1 for v in evidence.values() if not v["ok"])
    evidence["generate_after"] = after.evidence() | {"text": after.value}
    evidence["not_applicable"] = not_applicable
    if not after.ok:
        problems.append(f"generate after the invalid calls failed: {after.message}")
    summary = (f"{refused}/{len(cases)} invalid calls refused with a message; generate works after"
               + (f"; {len(not_applicable)} case(s) not applicable to this API" if not_applicable else ""))
    return Verdict(not problems, evidence, failures(problems), summary)


def _mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


HUGE_N_CTX = 2**30  # ~256 GiB of KV cache even for the tiny model (2 layers x 32 KV dims x f16 K and V)


@check("error_out_of_memory", "errors", "context far larger than memory: error, no crash")
def error_out_of_memory(s: Session) -> Verdict:
    model = s.model()
    limit = None
    old = resource.getrlimit(resource.RLIMIT_AS)
    if s.options.n_gpu_layers == 0 and os.name == "posix":
        # cap this child's address space so "larger than memory" holds whatever the machine's overcommit policy
        limit = _vm_size() + 4 * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (limit, old[1]))
    try:
        started = time.monotonic()
        call = s.shim.create_context(model, HUGE_N_CTX, 1, s.options.n_threads)
        seconds = time.monotonic() - started
    finally:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, old)
    if call.ok:
        s.shim.free_context(call.value)
    after = s.shim.generate(s.context(512, 1), PROMPT_B, s.options.sampling())
    evidence = {"n_ctx": HUGE_N_CTX, "address_space_limit": limit, "mem_total": _mem_total(),
                "create": call.evidence(), "seconds": round(seconds, 3),
                "generate_after": after.evidence() | {"text": after.value}}  # fmt: skip
    problems = []
    if call.ok:
        problems.append(f"a context of {HUGE_N_CTX} tokens was created")
    elif not call.message:
        problems.append("error code without a message")
    if not after.ok:
        problems.append(f"generate after the failed context failed: {after.message}")
    summary = f"n_ctx {HUGE_N_CTX}: {clip(call.message, 90)!r}"
    return Verdict(not problems, evidence, failures(problems), summary)
