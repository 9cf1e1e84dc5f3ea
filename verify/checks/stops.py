"""stops: generation ending at EOG, slots finishing unevenly, result order, the end of the context."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from verify.checks.compare import clip, compare_results
from verify.checks.framework import Verdict, check, failures
from verify.checks.oracle_cases import reference_or_reason
from verify.checks.reference import References, generated_count, observed_references, references, trace_text
from verify.observe import DECODE
from verify.prompts import EOG_PROMPTS, OUT_OF_ORDER_PROMPTS, PROMPT_B, UNEVEN_PROMPTS, grow_to_tokens
from verify.reference import Reference, ReferenceConfig
from verify.session import Session, SetupError, Skip
from verify.variants import VariantError, control_token_model

# --- blind spots: state across calls, slots that finish unevenly, result order, sampling, context parameters -------
#
# Each compares what the shim returns (text) with a reference: libllama's own greedy decode on the shim's context
# where llama.cpp's state is observable, else the shim's own `generate` alone on a fresh context (said in the
# evidence). The stop model (Options.eog_model, `migrate model --eog`) ends greedy decoding on EOS after a few tokens
# on some prompts, so stop-on-EOG, uneven finishing and refill paths run; the default tiny model never emits EOS.


class StopModel:
    """The stop model (or `source`, or a `variant` made from either: verify/variants.py) loaded through the
    consumer's own API; its contexts and the model are freed on exit."""

    def __init__(self, s: Session, variant: Callable[[str], Path] | None = None, source: str | None = None) -> None:
        path = str(source) if source else s.options.eog_model
        if not path:
            raise Skip("no stop model (Options.eog_model / --eog-model: a GGUF whose greedy decoding ends on EOS, "
                       "made by `migrate model --eog`; `migrate verify`, `run` and `gate` pass one)")  # fmt: skip
        if not Path(path).is_file():
            raise SetupError(f"stop model {path} not found")
        if variant is not None:
            try:
                path = str(variant(path))
            except (OSError, VariantError) as exc:
                raise SetupError(f"model variant of {path}: {exc}") from exc
        self.s = s
        self.path = path
        self.handle: Any = None
        self.contexts: list[Any] = []

    def __enter__(self) -> StopModel:
        self.s.backend()
        call = self.s.shim.load_model(self.path, self.s.options.n_gpu_layers)
        if not call.ok or call.value is None:
            raise SetupError(f"stop model load failed ({call.code}): {call.message}")
        self.handle = call.value
        return self

    def __exit__(self, *exc: object) -> None:
        for ctx in self.contexts:
            self.s.shim.free_context(ctx)
        self.contexts.clear()
        if self.handle is not None:
            self.s.shim.free_model(self.handle)
            self.handle = None

    def context(self, n_ctx: int, n_seq_max: int) -> Any:
        call = self.s.shim.create_context(self.handle, n_ctx, n_seq_max, self.s.options.n_threads)
        if not call.ok or call.value is None:
            raise SetupError(f"context create on the stop model (n_ctx {n_ctx}, n_seq_max {n_seq_max}) failed: "
                             f"{call.message}")  # fmt: skip
        self.contexts.append(call.value)
        return call.value

    def tokens(self, text: str) -> list[int]:
        call = self.s.shim.tokenize(self.handle, text, True)
        if not call.ok:
            raise SetupError(f"tokenize on the stop model failed: {call.message}")
        return list(call.value)

    def count(self, text: str) -> int:
        return len(self.tokens(text))


@check("generate_stops_at_eog", "stops", "generate ends where libllama's greedy decode reaches EOG (stop model)")
def generate_stops_at_eog(s: Session) -> Verdict:
    max_tokens = s.options.max_tokens
    with StopModel(s) as stop:
        ctx = stop.context(512, 1)
        refs = observed_references(s, ctx, list(EOG_PROMPTS), stop.tokens, max_tokens)
        stops = refs.stops()
        if sum(1 for n in stops.values() if n is not None) < 2:
            raise Skip(f"the stop model {stop.path} reaches EOG early on fewer than 2 of the prompts: {stops}")
        calls = {p: s.shim.generate(ctx, p, s.options.sampling()) for p in EOG_PROMPTS}
    problems = [f"{clip(p, 30)!r}: generate failed: {c.message}" for p, c in calls.items() if not c.ok]
    ok_calls = [p for p in EOG_PROMPTS if calls[p].ok]
    rows, found = compare_results(ok_calls, [calls[p].value for p in ok_calls], refs.texts)
    evidence = {"model": stop.path, "max_tokens": max_tokens, "reference": refs.to_json(), "prompts": rows}
    summary = f"EOG after {list(stops.values())} tokens; shim text = reference: {not found and not problems}"
    return Verdict(not problems and not found, evidence, failures(problems + found), summary)


@check("parallel_uneven_finish", "stops", "generate_parallel with slots ending at different steps (EOG, refills) = "
       "the reference per prompt (stop model)")  # fmt: skip
def parallel_uneven_finish(s: Session) -> Verdict:
    prompts = list(UNEVEN_PROMPTS)
    max_tokens = s.options.max_tokens
    evidence: dict[str, Any] = {"prompts": prompts, "max_tokens": max_tokens}
    problems: list[str] = []
    with StopModel(s) as stop:
        first = stop.context(512, 1)
        refs = references(s, first, prompts, stop.tokens, max_tokens, lambda: stop.context(512, 1))
        stops = refs.stops()
        if stops and sum(1 for n in stops.values() if n is not None) < 2:
            raise Skip(f"the stop model {stop.path} reaches EOG early on fewer than 2 of the prompts: {stops}")
        evidence["reference"] = refs.to_json()
        for n_seq_max in (3, 4):
            ctx = stop.context(512, n_seq_max)
            call = s.shim.generate_parallel(ctx, prompts, s.options.sampling())
            rows, found = compare_results(prompts, call.value, refs.texts)
            evidence[f"n_seq_max={n_seq_max}"] = call.evidence() | {"prompts": rows}
            problems += [f"n_seq_max {n_seq_max}: generate_parallel failed: {call.message}"] if not call.ok else []
            problems += [f"n_seq_max {n_seq_max}: {p}" for p in found]
    summary = (f"{len(prompts)} prompts stopping after {list(stops.values()) or '?'} tokens, n_seq_max 3 and 4: "
               f"each = the reference: {not problems}")  # fmt: skip
    return Verdict(not problems, evidence, failures(problems), summary)


def order_problems(results: list[str | None] | None, expected: list[str | None],
                   must_fail: tuple[int, ...] = ()) -> list[str]:  # fmt: skip
    """Results in the wrong place: a prompt that must fail with a result, or a result that is another prompt's
    output rather than its own. What a result says otherwise is the other checks' concern."""
    if results is None:
        return ["no per-prompt results returned"]
    problems = [f"prompt {i} cannot run but has a result: {results[i]!r}" for i in must_fail if results[i] is not None]
    for i, got in enumerate(results):
        if i in must_fail or got is None or got == expected[i]:
            continue
        others = [j for j, want in enumerate(expected) if j != i and want is not None and got == want]
        if others:
            problems.append(f"prompt {i}'s result is prompt {others[0]}'s output ({got!r})")
    return problems


@check("parallel_result_order", "stops", "generate_parallel results in prompt order: a failed prompt first, slots "
       "finishing out of order (stop model)")  # fmt: skip
def parallel_result_order(s: Session) -> Verdict:
    max_tokens = s.options.max_tokens
    good = [OUT_OF_ORDER_PROMPTS[1], OUT_OF_ORDER_PROMPTS[0]]
    with StopModel(s) as stop:
        ctx = stop.context(256, 3)
        too_long = grow_to_tokens(stop.count, s.n_ctx(ctx) + 16)
        n_long = stop.count(too_long)
        prompts = list(dict.fromkeys([*OUT_OF_ORDER_PROMPTS, *good]))
        refs = references(s, ctx, prompts, stop.tokens, max_tokens, lambda: stop.context(256, 1))
        failed_first = s.shim.generate_parallel(ctx, [too_long, *good], s.options.sampling())
        all_failed = s.shim.generate_parallel(ctx, [too_long, too_long], s.options.sampling())
        out_of_order = s.shim.generate_parallel(ctx, list(OUT_OF_ORDER_PROMPTS), s.options.sampling())
    problems: list[str] = []
    if all_failed.ok or not all_failed.message:
        problems.append(f"every prompt too long: the call reported code {all_failed.code} and message "
                        f"{all_failed.message!r}")  # fmt: skip
    elif all_failed.value is not None and any(r is not None for r in all_failed.value):
        problems.append(f"every prompt too long, yet results: {all_failed.value}")
    if failed_first.ok or not failed_first.message:
        problems.append(f"failed prompt first: the call reported code {failed_first.code} and message "
                        f"{failed_first.message!r} for a prompt longer than the context")  # fmt: skip
    expected_first = [None, *(refs.texts[p] for p in good)]
    problems += [f"failed prompt first: {p}" for p in order_problems(failed_first.value, expected_first, (0,))]
    if not out_of_order.ok:
        problems.append(f"out of order: generate_parallel failed: {out_of_order.message}")
    expected = [refs.texts[p] for p in OUT_OF_ORDER_PROMPTS]
    problems += [f"finishing out of order: {p}" for p in order_problems(out_of_order.value, expected)]
    evidence = {"reference": refs.to_json(), "too_long_tokens": n_long,
                "failed_first": failed_first.evidence() | {"results": failed_first.value, "expected": expected_first},
                "all_failed": all_failed.evidence() | {"results": all_failed.value},
                "out_of_order": out_of_order.evidence() | {"results": out_of_order.value, "expected": expected}}
    summary = f"failed prompt first and slots finishing out of order: results in prompt order: {not problems}"
    return Verdict(not problems, evidence, failures(problems), summary)


@check("generate_context_full", "stops", "generation stops at the end of the context with the reference's text "
       "(generate and a one-slot generate_parallel)")  # fmt: skip
def generate_context_full(s: Session) -> Verdict:
    max_tokens = s.options.max_tokens
    ctx = s.context(256, 1)
    n_ctx = s.n_ctx(ctx)
    prompt = grow_to_tokens(s.count, n_ctx - 4)
    n_prompt = s.count(prompt)
    room = n_ctx - n_prompt  # positions left: the last token may be sampled without being decoded
    evidence: dict[str, Any] = {"n_ctx": n_ctx, "prompt_tokens": n_prompt, "room": room, "max_tokens": max_tokens}
    try:
        refs = observed_references(s, ctx, [prompt, PROMPT_B], s.tokens, max_tokens)
        trace = refs.traces[prompt]
        if trace.stopped != "context_full":
            raise Skip(f"libllama's greedy decode stopped by {trace.stopped}, not at the end of the context")
        allowed = {trace_text(s, ctx, trace, room), trace_text(s, ctx, trace, room + 1)}
        evidence["reference"] = {"source": refs.source, "steps": len(trace.steps), "allowed": sorted(allowed)}
    except Skip as exc:
        refs, allowed = None, None
        evidence["reference"] = {"source": f"none (libllama not observable: {exc}); one-slot parallel = generate"}
    single = s.shim.generate(ctx, prompt, s.options.sampling())
    pctx = s.context(256, 1)
    parallel = s.shim.generate_parallel(pctx, [prompt, PROMPT_B], s.options.sampling())
    results = parallel.value or [None, None]
    evidence |= {"generate": single.evidence() | {"text": single.value},
                 "parallel": parallel.evidence() | {"results": results}}  # fmt: skip
    problems: list[str] = []
    if not single.ok:
        problems.append(f"generate up to the end of the context failed: {single.message}")
    elif allowed is not None and single.value not in allowed:
        problems.append(f"generate returned {single.value!r}; the context holds {room} more tokens: {sorted(allowed)}")
    if not parallel.ok:
        problems.append(f"generate_parallel (one slot) failed: {parallel.message}")
    want_full = allowed if allowed is not None else {single.value}
    if results[0] not in want_full:
        problems.append(f"generate_parallel: the prompt filling the context gave {results[0]!r}, "
                        f"not {sorted(want_full)}")  # fmt: skip
    want_b = refs.texts[PROMPT_B] if refs is not None else s.shim.generate(s.context(256, 1), PROMPT_B,
                                                                           s.options.sampling()).value  # fmt: skip
    if results[1] != want_b:
        problems.append(f"generate_parallel: the prompt after it (slot refilled) gave {results[1]!r}, not {want_b!r}")
    summary = f"prompt {n_prompt} tokens in n_ctx {n_ctx}: generate {clip(single.value, 40)!r}; parallel agrees"
    return Verdict(not problems, evidence, failures(problems), summary)


def rendered_texts(s: Session, ctx: Any, refs: References, render_special: bool) -> tuple[dict[str, str | None], int]:
    """Each prompt's reference text with special tokens rendered as `render_special` says, and how many of the
    generated tokens render differently with and without it (the control tokens the check exists to reach)."""
    obs = s.need_observer(*DECODE)
    vocab = obs.lib.llama_model_get_vocab(obs.lib.llama_get_model(obs.context_of(ctx)))
    texts: dict[str, str | None] = {}
    n_control = 0
    for prompt, trace in refs.traces.items():
        tokens = [step.token for step in trace.steps[: generated_count(trace)]]
        n_control += sum(1 for t in tokens if obs.piece(vocab, t, special=True) != obs.piece(vocab, t, special=False))
        texts[prompt] = "".join(obs.piece(vocab, t, special=render_special) for t in tokens)
    return texts, n_control


@check("generate_control_tokens", "stops", "a control token generated (BOS, control-token model) shows in generate's "
       "and generate_parallel's text as the reference renders it (default: left out)")  # fmt: skip
def generate_control_tokens(s: Session) -> Verdict:
    """The stop model with BOS leaned on instead of EOS (verify/variants.py): greedy decoding emits `<s>` and goes
    on, so a consumer that renders special tokens into its text (`common_token_to_piece(..., true)`) shows it."""
    ref = reference_or_reason(s)
    render = ref.config.render_special if isinstance(ref, Reference) else ReferenceConfig().render_special
    prompts, max_tokens = list(EOG_PROMPTS), s.options.max_tokens
    with StopModel(s, control_token_model) as model:
        ctx = model.context(512, 1)
        refs = observed_references(s, ctx, prompts, model.tokens, max_tokens)
        expected, n_control = rendered_texts(s, ctx, refs, render)
        if n_control == 0:
            raise Skip(f"libllama's greedy decode on {model.path} generated no control token on these prompts")
        single = {p: s.shim.generate(ctx, p, s.options.sampling()) for p in prompts}
        parallel = s.shim.generate_parallel(model.context(512, 3), prompts, s.options.sampling())
    problems = [f"generate {clip(p, 30)!r} failed: {c.message}" for p, c in single.items() if not c.ok]
    ok_single = [p for p in prompts if single[p].ok]
    rows, found = compare_results(ok_single, [single[p].value for p in ok_single], expected)
    problems += [f"generate: {p}" for p in found]
    prows, pfound = compare_results(prompts, parallel.value, expected)
    problems += [f"generate_parallel failed: {parallel.message}"] if not parallel.ok else []
    problems += [f"generate_parallel: {p}" for p in pfound]
    evidence = {"model": model.path, "render_special": render, "control_tokens_generated": n_control,
                "max_tokens": max_tokens, "generate": rows, "generate_parallel": parallel.evidence() | {"rows": prows}}
    summary = (f"{n_control} control tokens in the reference's decode, rendered: {render}; "
               f"generate and generate_parallel = the reference: {not problems}")  # fmt: skip
    return Verdict(not problems, evidence, failures(problems), summary)
