"""The checks' framework: statuses, the result and verdict types, the registry and `run_check`.

A check is a function of a `Session` (see verify/session.py) returning a `Verdict`; it runs in a child process
(verify/runner.py), so an abort or a segfault inside the library fails that check alone. A check that cannot
run raises `Skip(reason)`: skipped is never reported as passed. `check(...)` registers a function in `REGISTRY`;
the checklist runs in registration order (the order verify/checks/__init__.py imports the group modules)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from verify import gpu
from verify.driver import DriverError
from verify.outcomes import CheckStatus
from verify.session import Session, SetupError, Skip

# the statuses by their short names (verify/outcomes.py CheckStatus says what each means)
PASSED, FAILED, ERROR, SKIPPED = CheckStatus.PASSED, CheckStatus.FAILED, CheckStatus.ERROR, CheckStatus.SKIPPED


@dataclass
class CheckResult:
    name: str
    status: CheckStatus
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0
    build: str = ""
    summary: str = ""  # one line of the key values seen, for tables

    def __post_init__(self) -> None:
        self.status = CheckStatus(self.status)  # read back from a child's JSON as its word

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        keys = ("name", "status", "evidence", "message", "seconds", "build", "summary")
        return cls(**{k: data[k] for k in keys if k in data})


@dataclass
class Verdict:
    ok: bool
    evidence: dict[str, Any]
    message: str = ""
    summary: str = ""


CheckFn = Callable[[Session], Verdict]


Environment = Callable[[dict[str, str]], dict[str, str]]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    group: str
    title: str
    fn: CheckFn
    # what the check's process needs in its environment, given the one it would get (None: nothing)
    environment: Environment | None = None


REGISTRY: dict[str, CheckSpec] = {}


def check(name: str, group: str, title: str, environment: Environment | None = None) -> Callable[[CheckFn], CheckFn]:
    def register(fn: CheckFn) -> CheckFn:
        REGISTRY[name] = CheckSpec(name, group, title, fn, environment)
        return fn

    return register


def run_check(name: str, session: Session) -> CheckResult:
    """Run one registered check in this process (the runner calls this inside the child)."""
    return run_fn(name, REGISTRY[name].fn, session)


def run_fn(name: str, fn: CheckFn, session: Session) -> CheckResult:
    """`fn` run as the check `name` (a registered check, or one part of a sub-case check: verify/checks/subcases.py)."""
    started = time.monotonic()
    try:
        # every check loads the model with the layers asked for: without a GPU it would silently run on the CPU
        reason = gpu.missing_gpu(session.target.library, session.options.n_gpu_layers)
        if reason:
            raise Skip(reason)
        verdict = fn(session)
        status = PASSED if verdict.ok else FAILED
        result = CheckResult(name, status, verdict.evidence, verdict.message, summary=verdict.summary)
    except Skip as exc:
        result = CheckResult(name, SKIPPED, {}, f"skipped: {exc}")
    except SetupError as exc:
        result = CheckResult(name, FAILED, {"setup": str(exc)}, f"setup failed: {exc}")
    except DriverError as exc:
        result = CheckResult(name, ERROR, {"driver": str(exc)}, f"harness could not drive the API: {exc}")
    result.seconds = round(time.monotonic() - started, 3)
    result.build = session.target.label
    return result


def failures(items: list[str]) -> str:
    return "; ".join(items)


def takes(s: Session, op: str, role: str) -> bool:
    """Whether the consumer's function for `op` takes this value (a parameter or a sampling-struct field)."""
    if s.shim._adapted(op) is not None:
        return True
    bound = s.shim.binding.get(op)
    return bound is not None and (bound.has(role) or role in bound.fields.values())
