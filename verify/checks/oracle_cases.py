"""The oracle's fixed cases inside the checklist's own checks (tokenize_detokenize, sampling_seed): the consumer's
answers against llama.cpp's primitives (verify/reference.py), each problem with its input and the reference's answer.
No check registers here (verify/checks/oracle.py does), so importing this module leaves the checklist's order alone."""

from __future__ import annotations

from typing import Any

from verify.driver import DriverError, Sampling
from verify.observe import ObserveError
from verify.reference import Reference, ReferenceConfigError, ReferenceError, reference_for, sampling_taken
from verify.session import Session, Skip

# texts whose tokens depend on parse_special (the llama-spm markup <s>, </s>, <unk>), Unicode, empty, spaces
ORACLE_TEXTS = ("<s>Hello</s>", "Hello <s> world", "</s>", "<unk> é 日本 😀", "", "  two  spaces\n")


def oracle(s: Session) -> Reference:
    """The session's reference; Skip where llama.cpp is not observable, DriverError where the harness cannot
    build it (a bad [verify.reference] table or primitives it cannot bind)."""
    try:
        return reference_for(s)
    except ObserveError as exc:
        raise Skip(f"the reference needs llama.cpp's state: {exc}") from exc
    except (ReferenceError, ReferenceConfigError) as exc:
        raise DriverError(f"reference: {exc}") from exc


def reference_or_reason(s: Session) -> Reference | str:
    """The reference, or why there is none (for checks whose own comparisons run either way)."""
    try:
        return oracle(s)
    except (Skip, DriverError) as exc:
        return f"not compared with the reference: {exc}"


def text_cases(s: Session, model: Any) -> tuple[dict[str, Any] | str, list[str]]:
    """tokenize (with and without add_special) and detokenize of ORACLE_TEXTS against llama_tokenize /
    llama_detokenize: evidence rows and problems, each with its input and the reference's answer."""
    ref = reference_or_reason(s)
    if isinstance(ref, str):
        return ref, []
    try:
        return _text_rows(s, ref, model)
    except Skip as exc:  # llama.cpp's model not reachable behind the handle: the comparison only is not made
        return f"not compared with the reference: {exc}", []


def _text_rows(s: Session, ref: Reference, model: Any) -> tuple[dict[str, Any], list[str]]:
    rows, problems = [], []
    for text in ORACLE_TEXTS:
        for add_special in (True, False):
            got = s.shim.tokenize(model, text, add_special)
            want = ref.tokenize(model, text, add_special)
            rows.append({"text": text, "add_special": add_special, "reference": want, "got": got.value})
            if not got.ok or got.value != want:
                problems.append(f"tokenize({text!r}, add_special={add_special}) gave "
                                f"{got.value if got.ok else 'an error: ' + got.message} where llama_tokenize "
                                f"(parse_special={ref.config.parse_special}) gives {want}")  # fmt: skip
        tokens = ref.tokenize(model, text, True)
        back = s.shim.detokenize(model, tokens)
        want_text = ref.detokenize(model, tokens)
        rows.append({"tokens": tokens, "reference": want_text, "got": back.value})
        if not back.ok or back.value != want_text:
            problems.append(f"detokenize({tokens}) gave {back.value if back.ok else 'an error: ' + back.message!r} "
                            f"where llama_detokenize gives {want_text!r}")  # fmt: skip
    return {"config": ref.config.to_json(), "cases": rows}, problems


def sampled_cases(s: Session, ctx: Any, prompts: list[str], sampling: Sampling, outputs: list[str | None],
                  op: str = "generate") -> tuple[dict[str, Any] | str, list[str]]:  # fmt: skip
    """The consumer's outputs of `op` for `sampling` against the reference's sampler chain with the same values
    (each prompt alone: a parallel slot is an independent sequence)."""
    ref = reference_or_reason(s)
    if isinstance(ref, str):
        return ref, []
    taken = sampling_taken(s.shim, op)
    why_not = ref.comparable(sampling, taken)
    not_judged = ref.not_judged(sampling, taken)
    if why_not and why_not != not_judged:
        return why_not, []
    model = s.model()
    rows, problems = [], []
    try:
        for prompt, got in zip(prompts, outputs, strict=True):
            want = ref.generate(ctx, model, prompt, sampling, taken)
            rows.append({"prompt": prompt, "reference": want.text, "got": got, "stopped": want.stopped})
            if got != want.text:
                problems.append(f"{op}({prompt!r}, seed {sampling.seed}, temperature {sampling.temperature}) gave "
                                f"{got!r} where llama.cpp's sampler chain gives {want.text!r}")  # fmt: skip
    except Skip as exc:  # llama.cpp's model or context not reachable behind the handles: the comparison only
        return f"not compared with the reference: {exc}", []
    evidence = {"chain": list(ref.config.order) + ["dist"], "values": ref.effective(sampling, taken), "cases": rows}
    if not_judged:  # an assumed value is no knowledge: a difference is reported, never the consumer's failure
        evidence["not_judged"] = (f"{len(problems)} of {len(rows)} differ from the chain with assumed values"
                                  + (f" (first: {problems[0]})" if problems else "") + f"; {not_judged}")  # fmt: skip
        return evidence, []
    return evidence, problems
