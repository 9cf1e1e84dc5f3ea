"""memory: parallel sequences isolated (each prompt set, prompts near per-sequence capacity), shared prefix
evaluated once."""

from __future__ import annotations

from typing import Any

from verify.checks.compare import agreement, clip, common_token_prefix, normalise
from verify.checks.framework import CheckFn, Verdict, check, failures
from verify.checks.subcases import subcase_check
from verify.observe import PERF
from verify.prompts import CAPACITY_N_CTX, CAPACITY_N_SEQ_MAX, PARALLEL_SETS, PROMPT_LONG, capacity_prompts
from verify.session import Session


def _isolation(s: Session, prompts: list[str], n_ctx: int, n_seq_max: int) -> tuple[dict[str, Any], list[str]]:
    """generate_parallel against generate on each prompt alone, same context parameters, greedy."""
    sampling, mode = s.options.sampling(), s.options.normalise
    obs = s.observer if s.observer and s.observer.memory_api() and s.can_observe_context() else None
    single_ctx = s.context(n_ctx, n_seq_max)
    singles = []
    for prompt in prompts:
        if obs is not None:
            obs.clear_memory(single_ctx)  # the harness's own reset: a shim that forgets to clear fails elsewhere
        else:
            s.release(single_ctx)
            single_ctx = s.context(n_ctx, n_seq_max)
        singles.append(s.shim.generate(single_ctx, prompt, sampling))
    s.release(single_ctx)
    ctx = s.context(n_ctx, n_seq_max)
    info = s.observer.context_info(ctx) if obs is not None else {"n_ctx": s.n_ctx(ctx)}
    parallel = s.shim.generate_parallel(ctx, prompts, sampling)
    results = parallel.value or [None] * len(prompts)
    per_prompt = []
    problems: list[str] = [] if parallel.ok else [f"generate_parallel returned {parallel.code}: {parallel.message}"]
    for i, (prompt, single) in enumerate(zip(prompts, singles, strict=True)):
        a, b = normalise(single.value, mode), normalise(results[i], mode)
        agree = agreement(a, b)
        per_prompt.append({"prompt": clip(prompt, 80), "prompt_tokens": s.count(prompt), "single": single.value,
                           "single_error": single.message, "parallel": results[i], **agree})  # fmt: skip
        if not single.ok:
            problems.append(f"prompt {i}: generate alone failed: {single.message}")
        elif results[i] is None:
            problems.append(f"prompt {i}: no parallel result")
        elif not agree["equal"]:
            problems.append(f"prompt {i}: parallel differs from alone after {agree['common_prefix_chars']} chars")
    evidence = {"n_ctx": n_ctx, "n_seq_max": n_seq_max, "context": info, "normalise": mode,
                "parallel_call": parallel.evidence(), "prompts": per_prompt}  # fmt: skip
    if obs is not None:
        evidence["memory_after_parallel"] = obs.memory(ctx, n_seq_max).to_json()
    return evidence, problems


def _isolation_summary(evidence: dict[str, Any]) -> str:
    rows = evidence["prompts"]
    same = sum(1 for r in rows if r["equal"])
    return f"{same}/{len(rows)} prompts equal alone and in parallel (n_seq_max {evidence['n_seq_max']})"


def _isolation_check(key: str) -> CheckFn:
    prompt_set = PARALLEL_SETS[key]

    def run(s: Session) -> Verdict:
        evidence, problems = _isolation(s, list(prompt_set.prompts), prompt_set.n_ctx, prompt_set.n_seq_max)
        summary = _isolation_summary(evidence)
        return Verdict(not problems, {"set": prompt_set.title} | evidence, failures(problems), summary)

    return run


for _key, _set in PARALLEL_SETS.items():
    check(f"parallel_isolation_{_key}", "memory", f"parallel == single per prompt: {_set.title}")(
        _isolation_check(_key)
    )


@check("parallel_isolation_capacity", "memory", "parallel == single per prompt: prompts near per-sequence capacity")
def parallel_isolation_capacity(s: Session) -> Verdict:
    # capacity as the consumer asked for it: at b5421 any sequence may span the whole context (cells shared);
    # a release that gives each sequence less (b7785 without kv_unified) fails here, and the evidence says why
    max_tokens = s.options.max_tokens
    prompts = capacity_prompts(s.count, CAPACITY_N_CTX, CAPACITY_N_CTX, max_tokens)
    evidence, problems = _isolation(s, prompts, CAPACITY_N_CTX, CAPACITY_N_SEQ_MAX)
    lengths = [s.count(p) for p in prompts]
    evidence["positions_needed_per_sequence"] = [n + max_tokens for n in lengths]
    n_ctx_seq = evidence["context"].get("n_ctx_seq")
    if problems and n_ctx_seq is not None and max(lengths) + max_tokens > n_ctx_seq:
        problems.append(f"this build gives each sequence {n_ctx_seq} cells (n_ctx_seq) but the prompts need "
                        f"{max(lengths) + max_tokens}: at b5421 sequences shared all {CAPACITY_N_CTX} cells "
                        "(kv_unified restores that)")  # fmt: skip
    summary = _isolation_summary(evidence) + f"; positions per sequence {evidence['positions_needed_per_sequence']}"
    evidence = {"set": "prompts near per-sequence capacity"} | evidence
    return Verdict(not problems, evidence, failures(problems), summary)


SHARED_PREFIX_TEXT = PROMPT_LONG.strip()
SHARED_SUFFIXES = (" the moon rose over the hills", " a dog barked twice at the gate", " they lit a small fire")


# the parts of shared_prefix_effective, each in its own process: (n_seq_max, prompt set). The prefix is measured with a
# sequence to spare (more sequences than prompts) as well as with the prompts filling every sequence, so that a
# consumer that aborts on the second (a slot's sequence id reaching n_seq_max) still has its prefix reuse measured
# on the first. 2 sequences is the smallest context where a prefix can be shared; in the nested sets one prompt is
# the other's beginning, so all of it but its last token is the prefix.
PREFIX_PARTS: dict[str, tuple[int, str]] = {
    "n_seq_max=4": (4, "three"), "nested,n_seq_max=3": (3, "nested"),
    "n_seq_max=2": (2, "two"), "nested": (2, "nested"),
}  # fmt: skip


def prefix_prompts(kind: str) -> list[str]:
    three = [SHARED_PREFIX_TEXT + suffix for suffix in SHARED_SUFFIXES]
    return {"three": three, "two": three[:2], "nested": [three[0], three[0] + SHARED_SUFFIXES[1]]}[kind]


@subcase_check("shared_prefix_effective", "memory",
               "shared-prefix optimisation: prefix evaluated once (perf counters), 3 prompts on 4 sequences, 2 on 2, "
               "one prompt the other's beginning on 3 and on 2; each part in its own process",
               tuple(PREFIX_PARTS), "the prefix reuse")  # fmt: skip
def shared_prefix_effective(s: Session, part: str) -> Verdict:
    obs = s.need_observer(*PERF)
    n_seq_max, kind = PREFIX_PARTS[part]
    prompts = prefix_prompts(kind)
    token_lists = [s.tokens(p) for p in prompts]
    # each sequence needs one token of its own to sample from: at most all but the shortest prompt's last token
    prefix = min(common_token_prefix(token_lists), min(len(t) for t in token_lists) - 1)
    shared_cost = prefix + sum(len(t) - prefix for t in token_lists)
    unshared_cost = sum(len(t) for t in token_lists)
    ctx = s.context(512, n_seq_max)
    obs.reset_perf(ctx)
    call = s.shim.generate_parallel(ctx, prompts, s.options.sampling(1))  # one token each: no generation decodes
    perf = obs.perf(ctx)
    s.release(ctx)
    evaluated = int(perf["n_p_eval"]) + int(perf["n_eval"])  # n_eval reads 1 when none: an upper bound
    evidence = {"n_seq_max": n_seq_max, "spare_sequences": n_seq_max - len(prompts),
                "prompt_tokens": [len(t) for t in token_lists], "shared_prefix_tokens": prefix,
                "expected_with_sharing": shared_cost, "without_sharing": unshared_cost, "perf": perf,
                "evaluated": evaluated, **call.evidence()}  # fmt: skip
    problems = [] if call.ok else [f"generate_parallel failed: {call.message}"]
    if evaluated >= unshared_cost:
        problems.append(f"{evaluated} prompt tokens evaluated: all prompts in full ({unshared_cost})")
    elif evaluated > shared_cost + 1:
        # every token of the common prefix once, then each prompt's own tokens: a prefix token evaluated again
        # per sequence (a prefix cut short) is work the optimisation exists to save
        problems.append(f"{evaluated} prompt tokens evaluated, {shared_cost} with the {prefix}-token prefix "
                        f"evaluated once (+1 for the counters' rounding)")  # fmt: skip
    summary = f"{evaluated} evaluated (shared {shared_cost}, unshared {unshared_cost})"
    return Verdict(not problems, evidence, failures(problems), summary)
