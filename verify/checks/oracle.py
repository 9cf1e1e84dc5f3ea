"""oracle: llama.cpp's own primitives as the reference answer (verify/reference.py), on fixed inputs inside the
tokenize and sampling checks, on generated inputs (`generated_inputs`, `--generated N`), and every exported function
that is no operation, recorded per build and compared old vs new (`exported_functions`, verify/exported.py)."""

from __future__ import annotations

from typing import Any

from verify import exported
from verify.checks.framework import FAILED, PASSED, CheckResult, Verdict, check, failures
from verify.driver import DriverError, Sampling
from verify.generated import Budget, Properties
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


def sampled_cases(s: Session, ctx: Any, prompts: list[str], sampling: Sampling,
                  outputs: list[str | None]) -> tuple[dict[str, Any] | str, list[str]]:  # fmt: skip
    """The consumer's outputs for `sampling` against the reference's sampler chain with the same values."""
    ref = reference_or_reason(s)
    if isinstance(ref, str):
        return ref, []
    taken = sampling_taken(s.shim, "generate")
    why_not = ref.comparable(sampling, taken)
    if why_not:
        return why_not, []
    model = s.model()
    rows, problems = [], []
    for prompt, got in zip(prompts, outputs, strict=True):
        want = ref.generate(ctx, model, prompt, sampling, taken)
        rows.append({"prompt": prompt, "reference": want.text, "got": got, "stopped": want.stopped})
        if got != want.text:
            problems.append(f"generate({prompt!r}, seed {sampling.seed}, temperature {sampling.temperature}) gave "
                            f"{got!r} where llama.cpp's sampler chain gives {want.text!r}")  # fmt: skip
    values = ref.effective(sampling, taken)
    return {"chain": list(ref.config.order) + ["dist"], "values": values, "cases": rows}, problems


@check("generated_inputs", "oracle", "generated inputs (Hypothesis, --generated N): tokenize, detokenize, generate, "
       "generate_parallel = llama.cpp's primitives; failures shrunk")  # fmt: skip
def generated_inputs(s: Session) -> Verdict:
    n = s.options.generated
    if n <= 0:
        raise Skip("not asked: `migrate verify --generated N` draws N inputs per operation")
    properties = Properties(s, oracle(s), Budget(examples=n))
    runs = properties.all()
    findings = [r.finding for r in runs if r.finding is not None]
    evidence = {"examples_per_property": n, "shrink_calls": properties.budget.shrink_calls,
                "properties": [r.to_json() for r in runs], "reference": properties.ref.config.to_json()}  # fmt: skip
    summary = ", ".join(f"{r.prop} {r.examples} calls {r.seconds:.1f} s{' FAILED' if r.finding else ''}" for r in runs)
    return Verdict(not findings, evidence, failures([f.line() for f in findings]), summary)


@check("exported_functions", "oracle", "every exported function that is no operation, called with arguments "
       "generated from its types (results compared old vs new in differential mode)")  # fmt: skip
def exported_functions(s: Session) -> Verdict:
    s.model()  # the handles the generated arguments use; a model that does not load fails here, with the reason
    evidence = exported.record(s)
    calls, functions = evidence["calls"], evidence["functions"]
    if not functions:
        raise Skip("the header exports no function besides the operations")
    summary = (f"{len(calls)} calls of {len(functions)} functions recorded"
               + (f"; not called: {', '.join(evidence['not_called'])}" if evidence["not_called"] else ""))  # fmt: skip
    return Verdict(True, evidence, "", summary)


EXPORTED_CHECK = "exported_functions"


def judge_exported(old: CheckResult | None, new: CheckResult | None) -> None:
    """Differential mode: the new build's `exported_functions` fails where a call's result differs from the old
    build's (each difference a finding with the function's inputs); both results as the checks returned them."""
    if old is None or new is None or old.status != PASSED or new.status != PASSED:
        return
    differences = exported.compare(old.evidence, new.evidence)
    new.evidence["compared_with"] = old.build
    new.evidence["differences"] = [{"call": d.call, "old": d.old, "new": d.new} for d in differences]
    if differences:
        new.status = FAILED
        new.message = (f"{len(differences)} of {len(old.evidence['calls'])} calls differ from the old build: "
                       + failures([d.line() for d in differences[:5]]))  # fmt: skip
    new.summary += f"; {len(differences)} differ from {old.build}"
