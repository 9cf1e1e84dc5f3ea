"""oracle: llama.cpp's own primitives as the reference answer (verify/reference.py), on fixed inputs inside the
tokenize and sampling checks, on generated inputs (`generated_inputs`, `--generated N`), and every exported function
that is no operation, recorded per build and compared old vs new (`exported_functions`, verify/exported.py)."""

from __future__ import annotations

from verify import exported
from verify.checks.framework import FAILED, PASSED, CheckResult, Verdict, check, failures
from verify.checks.oracle_cases import oracle
from verify.generated import Budget, Properties
from verify.session import Session, Skip


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
