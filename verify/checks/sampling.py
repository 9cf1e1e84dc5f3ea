"""sampling: greedy with top_k disabled, a seed reproduces, each sampling value reaches the sampler."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from verify.checks.compare import agreement, clip, compare_results
from verify.checks.framework import Verdict, check, failures, takes
from verify.checks.oracle_cases import oracle, sampled_cases
from verify.checks.reference import references
from verify.checks.stops import StopModel
from verify.driver import Sampling
from verify.prompts import PROMPT_A, PROMPT_B, REFERENCE_PROMPTS, SHARED_PREFIX
from verify.reference import sampling_taken
from verify.session import Session, Skip
from verify.variants import PERIODS, penalty_cycle_model

# none of them llama.cpp's own default (common: temperature 0.8, top_k 40, top_p 0.95), so a value that never
# reaches the sampler shows: each of VARIED, alone and with the same seed, must change some prompt's output
SAMPLED = {"temperature": 0.7, "top_k": 20, "top_p": 0.9}
VARIED = {"temperature": 1.5, "top_k": 3, "top_p": 0.3, "min_p": 0.3}
SEEDS = (1234, 4321)


def _sampling(s: Session, **values: Any) -> Sampling:
    return replace(s.options.sampling(), **values)


@check("sampling_top_k_disabled", "sampling", "temperature 0 with top_k 0 (disabled) is greedy: = the reference")
def sampling_top_k_disabled(s: Session) -> Verdict:
    missing = [r for r in ("temperature", "top_k") if not takes(s, "generate", r)]
    if missing:
        raise Skip(f"generate takes no {' / '.join(missing)}: the sampler cannot be set that way")
    sampling = _sampling(s, temperature=0.0, top_k=0)
    prompts = list(REFERENCE_PROMPTS)
    parallel_prompts = list(SHARED_PREFIX.prompts)
    ctx = s.context(512, 4)
    refs = references(s, ctx, prompts + parallel_prompts, s.tokens, s.options.max_tokens,
                      lambda: s.context(512, 1))  # fmt: skip
    calls = [s.shim.generate(ctx, p, sampling) for p in prompts]
    problems = [f"{clip(p, 30)!r}: generate failed: {c.message}" for p, c in zip(prompts, calls, strict=True)
                if not c.ok]  # fmt: skip
    rows, found = compare_results(prompts, [c.value for c in calls], refs.texts)
    problems += [f"generate: {p}" for p in found]
    evidence: dict[str, Any] = {"sampling": asdict(sampling), "reference": refs.source, "generate": rows}
    if all(takes(s, "generate_parallel", r) for r in ("temperature", "top_k")):
        call = s.shim.generate_parallel(s.context(512, 4), parallel_prompts, sampling)  # state: state_across_calls
        prows, pfound = compare_results(parallel_prompts, call.value, refs.texts)
        evidence["generate_parallel"] = call.evidence() | {"prompts": prows}
        problems += [f"generate_parallel failed: {call.message}"] if not call.ok else []
        problems += [f"generate_parallel: {p}" for p in pfound]
    else:
        evidence["generate_parallel"] = "not applicable: it takes no temperature / top_k"
    summary = f"temperature 0, top_k 0: {len(prompts)} prompts greedy: {not problems}"
    return Verdict(not problems, evidence, failures(problems), summary)


@check("sampling_seed", "sampling", "a fixed seed reproduces a sampled output (fresh or reused context); another "
       "seed differs")  # fmt: skip
def sampling_seed(s: Session) -> Verdict:
    missing = [r for r in ("temperature", "seed") if not takes(s, "generate", r)]
    if missing:
        raise Skip(f"generate takes no {' / '.join(missing)}: sampling cannot be seeded")
    prompts = [PROMPT_A, PROMPT_B, REFERENCE_PROMPTS[0]]
    seeded = _sampling(s, **SAMPLED, seed=SEEDS[0])
    other = _sampling(s, **SAMPLED, seed=SEEDS[1])
    ctx = s.context(512, 4)

    def texts(context: Any, sampling: Sampling) -> list[str | None]:
        calls = [s.shim.generate(context, p, sampling) for p in prompts]
        problems.extend(f"generate ({sampling.seed}) failed: {c.message}" for c in calls if not c.ok)
        return [c.value for c in calls]

    problems: list[str] = []
    first, again, greedy = texts(ctx, seeded), texts(ctx, seeded), texts(ctx, s.options.sampling())
    fresh, different = texts(s.context(512, 1), seeded), texts(ctx, other)
    evidence: dict[str, Any] = {"sampling": asdict(seeded), "prompts": prompts, "seed_first": first,
                                "seed_again": again, "seed_fresh_context": fresh, "other_seed": different,
                                "greedy": greedy}  # fmt: skip
    if first != again or first != fresh:
        problems.append(f"seed {SEEDS[0]} gave different outputs: {first} / {again} / fresh {fresh}")
    if first == greedy:
        problems.append(f"temperature {SAMPLED['temperature']} gave the greedy output on every prompt: not sampled")
    if first == different:
        problems.append(f"seeds {SEEDS[0]} and {SEEDS[1]} gave the same outputs: the seed is not used")
    evidence["varied"] = {}
    for role, value in VARIED.items():
        if not takes(s, "generate", role):
            evidence["varied"][role] = "not a parameter of generate"
            continue
        varied = texts(ctx, replace(seeded, **{role: value}))
        evidence["varied"][role] = {"value": value, "texts": varied}
        if varied == first:
            problems.append(f"{role} {value} instead of {getattr(seeded, role)} (seed {SEEDS[0]}) changed no "
                            f"output: {role} does not reach the sampler")  # fmt: skip
    # the oracle: the seeded outputs are what llama.cpp's own sampler chain gives with the same values
    evidence["reference"], found = sampled_cases(s, ctx, prompts, seeded, first)
    problems += found
    evidence["repeat_penalty"] = _penalty_probe(s, ctx, problems)
    if all(takes(s, "generate_parallel", r) for r in ("temperature", "seed")):
        pctx = s.context(512, 4)  # what generate left in memory is state_across_calls' concern
        runs = [s.shim.generate_parallel(pctx, prompts, seeded) for _ in range(2)]
        evidence["generate_parallel"] = [r.evidence() | {"results": r.value} for r in runs]
        problems += [f"generate_parallel failed: {r.message}" for r in runs if not r.ok]
        if runs[0].value != runs[1].value:
            problems.append(f"generate_parallel with seed {SEEDS[0]} twice: {runs[0].value} / {runs[1].value}")
        # each slot is an independent sequence with the same seed: each prompt's result = its reference alone
        evidence["generate_parallel_reference"], found = sampled_cases(s, pctx, prompts, seeded, runs[0].value
                                                                       or [None] * len(prompts), "generate_parallel")
        problems += found
    summary = f"seed {SEEDS[0]} reproduced on {len(prompts)} prompts; seed {SEEDS[1]} differs: {not problems}"
    for key in ("reference", "generate_parallel_reference"):  # the comparison with llama.cpp's chain narrowed: why
        narrowed = evidence.get(key)
        if isinstance(narrowed, dict):
            narrowed = narrowed.get("not_judged")
        if isinstance(narrowed, str):
            summary += f"; {key}: {narrowed}"
    return Verdict(not problems, evidence, failures(problems), summary)


# A repeat penalty only shows where a sampled token could come again: the test models' logits are small and nearly
# flat, so a penalty of 1.5 changes nothing in 12 tokens. A strong one over 48 flat-sampled tokens changes at least
# one of these prompts' outputs wherever the penalty reaches the sampler (1 of 3 to 3 of 3 here, by fixture).
PENALTY_PROBE = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "max_tokens": 48}
PENALTY_STRONG = 100.0


def _penalty_probe(s: Session, ctx: Any, problems: list[str]) -> dict[str, Any] | str:
    if not takes(s, "generate", "repeat_penalty"):
        return "not a parameter of generate"
    prompts = [PROMPT_A, PROMPT_B, *REFERENCE_PROMPTS]
    outputs: dict[float, list[str | None]] = {}
    for penalty in (1.0, PENALTY_STRONG):
        sampling = _sampling(s, **PENALTY_PROBE, repeat_penalty=penalty, seed=SEEDS[0])
        calls = [s.shim.generate(ctx, p, sampling) for p in prompts]
        problems.extend(f"generate (repeat_penalty {penalty}) failed: {c.message}" for c in calls if not c.ok)
        outputs[penalty] = [c.value for c in calls]
    changed = sum(a != b for a, b in zip(outputs[1.0], outputs[PENALTY_STRONG], strict=True))
    if changed == 0:
        n = PENALTY_PROBE["max_tokens"]
        problems.append(f"repeat_penalty {PENALTY_STRONG} instead of 1.0 changed none of {len(prompts)} outputs of {n} "
                        "sampled tokens: repeat_penalty does not reach the sampler")  # fmt: skip
    return {"sampling": PENALTY_PROBE, "prompts": len(prompts), "outputs_changed": changed}


# The penalty window on a model made for it (verify/variants.py, penalty_cycle_model): greedy decoding from each
# prompt walks a cycle of words back to the prompt's last word after PERIODS tokens, and a penalty of CYCLE_PENALTY
# turns the walk away exactly where the window reaches the word due next; the reference's chain has the window the
# consumer's sampler uses (taken, or `[verify.reference] fixed.repeat_last_n`).
CYCLE_PROMPTS = ("The water", "The stone")
CYCLE_PENALTY = PENALTY_STRONG
CYCLE_TOKENS = max(PERIODS) + 6


@check("sampling_penalty_window", "sampling", "a repeat penalty's window: greedy decoding that comes back to a word "
       "64 and 65 tokens later (penalty-window model) = llama.cpp's chain with the consumer's window")  # fmt: skip
def sampling_penalty_window(s: Session) -> Verdict:
    if not takes(s, "generate", "repeat_penalty"):
        raise Skip("generate takes no repeat_penalty: the penalty window cannot be reached")
    ref, taken = oracle(s), sampling_taken(s.shim, "generate")
    if "repeat_last_n" not in taken and "repeat_last_n" not in ref.config.fixed:
        raise Skip("the window is neither a parameter of generate nor fixed: set [verify.reference] "
                   "fixed.repeat_last_n to the window your sampler uses")  # fmt: skip
    sampling = _sampling(s, temperature=0.0, repeat_penalty=CYCLE_PENALTY, max_tokens=CYCLE_TOKENS)
    rows, problems = [], []
    with StopModel(s, penalty_cycle_model, source=s.target.model) as model:
        ctx = model.context(512, 1)
        for prompt, period in zip(CYCLE_PROMPTS, PERIODS, strict=True):
            # the variant keeps the session model's tokenizer byte for byte: its handle tokenizes for the reference
            # (an opaque handle of the variant has no way to llama.cpp's model)
            want = ref.generate(ctx, s.model(), prompt, sampling, taken)
            if len(want.tokens) < period or want.tokens[period - 1] != want.prompt_tokens[-1]:
                raise Skip(f"the penalty-window model's greedy decode from {prompt!r} does not come back to its last "
                           f"word after {period} tokens (tokens {want.tokens[:period]}): the window is not reached")
            got = s.shim.generate(ctx, prompt, sampling)
            rows.append({"prompt": prompt, "period": period, "reference": want.text, "got": got.value,
                         "turned_away_at_the_period": want.tokens[period:period + 1] != want.tokens[:1]})
            if not got.ok:
                problems.append(f"generate {prompt!r} (repeat_penalty {CYCLE_PENALTY}) failed: {got.message}")
            elif got.value != want.text:
                at = agreement(want.text, got.value)["common_prefix_chars"]
                problems.append(f"{prompt!r}, repeat_penalty {CYCLE_PENALTY:g}, {CYCLE_TOKENS} greedy tokens: from "
                                f"character {at} on {clip(got.value[at:], 60)!r} where llama.cpp's chain with window "
                                f"{ref.effective(sampling, taken)['repeat_last_n']:g} gives "
                                f"{clip((want.text or '')[at:], 60)!r}")  # fmt: skip
    evidence = {"model": model.path, "sampling": asdict(sampling), "values": ref.effective(sampling, taken),
                "cases": rows}  # fmt: skip
    summary = (f"cycles of {' and '.join(map(str, PERIODS))} words, window "
               f"{ref.effective(sampling, taken)['repeat_last_n']:g}: = the reference: {not problems}")  # fmt: skip
    return Verdict(not problems, evidence, failures(problems), summary)
