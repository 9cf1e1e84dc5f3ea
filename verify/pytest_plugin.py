"""The pytest plugin (entry point `pytest11`): the consumer's own checks, on the old and the new build side by side.

A test that asks for one of the fixtures below is a user check. It runs on every build under test, each time in
a child process with the runner's isolation (verify/runner.py): an abort, a segfault or a hang inside the library
fails that test on that build alone, with the signal and the last lines of stderr (and, on a traced build run by
`migrate verify --trace`, the last llama.cpp call and the contract finding) — never a dead pytest session.

Fixtures (each bound to the build the test runs on):
  llama_build     the build (`verify.session.Target`: library, header, model, label old/new)
  llama_session   the harness session (`verify.session.Session`); freed after the test
  llama_api       the checklist's operations on the consumer's API (`verify.driver.Driver`: generate, tokenize, ...
                  each returning a `Call` with ok, code, value, message)
  llama_lib       the consumer's own functions through cffi (everything its header declares); `llama_ffi` its FFI
  llama_model     the model loaded through the consumer's API; `llama_context` a context on it (n_ctx 512, one
                  sequence); `llama_contexts(n_ctx, n_seq_max)` makes more
  llama_observer  llama.cpp's state behind the handles (memory per sequence, perf counters); skips where unobservable
  llama_greedy    greedy sampling (the checklist's); `llama_sampled` a seeded sampled preset
  llama_heap      `llama_heap.leak(cycle)`: a message when repeating `cycle` grows the C heap, else None
  llama_evidence  a dict the test fills: it is the result's evidence in the report

Modes (nothing happens without the plugin's options, so an unrelated pytest run is untouched):
  pytest --llama-migrate-lib OLD.so --llama-migrate-lib NEW.so [--llama-migrate-header H] tests/llama
      each test parametrised over the builds (`[old]`, `[new]`), each run in a child; a summary classifies every
      test across the builds as the checklist's checks are (passes on both, regression, ...).
  `migrate verify/run/gate` with `[verify] tests` or --tests: collected (--llama-migrate-collect) and run by the
      runner as checks (--llama-migrate-job / --llama-migrate-result in each child).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from verify.checks import ERROR, FAILED, PASSED, SKIPPED, CheckResult
from verify.session import Options, Prepared, Session, Target

USE = "llama_build"  # every fixture of the plugin depends on it: a test that uses one is a user check
MESSAGE_CHARS = 400


# --- modes ----------------------------------------------------------------------------------------------------------


@dataclass
class Child:
    """Inside the runner's child: one test on one build; its outcome is written as the runner reads a check's."""

    target: Target
    options: Options
    prepared: Prepared
    result_file: Path
    evidence: dict[str, Any] = field(default_factory=dict)
    result: CheckResult | None = None


@dataclass
class Parent:
    """Plain pytest with --llama-migrate-lib: each test item is run on its build in a child."""

    targets: dict[str, Target]
    options: Options
    workdir: Path
    jobs: dict[str, Path] = field(default_factory=dict)
    results: dict[str, dict[str, CheckResult]] = field(default_factory=dict)  # test (build param left out) -> label


@dataclass
class Collect:
    """`migrate` asking which tests use the plugin (their node ids, written to `out`)."""

    out: Path
    ids: list[str] = field(default_factory=list)


MODE = pytest.StashKey[Child | Parent | Collect]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llama-migrate", "llama-migrate: the consumer's own checks on each build under test")
    group.addoption("--llama-migrate-lib", action="append", default=[], metavar="LIB",
                    help="a build under test; twice: the old build, then the new one")  # fmt: skip
    group.addoption("--llama-migrate-header", action="append", default=[], metavar="H",
                    help="its C API header (once for all builds, or once per build; default: the build manifest's)")
    group.addoption("--llama-migrate-model", metavar="GGUF", help="the model (required with --llama-migrate-lib; "
                    "`migrate model` makes the deterministic tiny one and prints its path)")
    group.addoption("--llama-migrate-config", metavar="TOML", help="consumer config with a [verify] table")
    group.addoption("--llama-migrate-timeout", type=float, default=60.0, metavar="S", help="per test and build")
    for internal in ("job", "result", "collect"):  # the runner's and `migrate`'s, not a user's
        group.addoption(f"--llama-migrate-{internal}", help=argparse.SUPPRESS)
    group.addoption("--llama-migrate-parametrised", action="store_true", help=argparse.SUPPRESS)


def pytest_configure(config: pytest.Config) -> None:
    option = config.getoption
    if option("llama_migrate_job"):
        from verify.runner import read_job

        target, options, prepared = read_job(Path(option("llama_migrate_job")))
        config.stash[MODE] = Child(target, options, prepared, Path(option("llama_migrate_result")))
    elif option("llama_migrate_collect"):
        config.stash[MODE] = Collect(Path(option("llama_migrate_collect")))
    elif option("llama_migrate_lib"):
        config.stash[MODE] = parent_mode(config)


def parent_mode(config: pytest.Config) -> Parent:
    from verify.cli import make_target
    from verify.errors import ToolError

    libs, headers = config.getoption("llama_migrate_lib"), config.getoption("llama_migrate_header")
    labels = {1: ["build"], 2: ["old", "new"]}.get(len(libs))
    if labels is None:
        raise pytest.UsageError(f"--llama-migrate-lib given {len(libs)} times: give the build under test, or the old "
                                "build and the new one")  # fmt: skip
    if len(headers) not in (0, 1, len(libs)):
        raise pytest.UsageError("--llama-migrate-header: give one for every build, or one for all")
    try:
        model = default_model(config.getoption("llama_migrate_model"))
        targets = {label: make_target(label, lib, (headers[i] if len(headers) > 1 else (headers or [None])[0]),
                                      model, None, config.getoption("llama_migrate_config"))
                   for i, (label, lib) in enumerate(zip(labels, libs, strict=True))}  # fmt: skip
    except ToolError as exc:
        raise pytest.UsageError(f"llama-migrate: {exc}") from exc
    options = Options(timeout=config.getoption("llama_migrate_timeout"), tests_root=str(config.rootpath))
    return Parent(targets, options, Path(tempfile.mkdtemp(prefix="llama-migrate-pytest-")))


def default_model(given: str | None) -> Path:
    """The model the tests load (verify/ imports nothing from migrate/, which makes the tiny one: none by default)."""
    from verify.preflight import check_model_file

    if not given:
        raise pytest.UsageError("llama-migrate: --llama-migrate-model GGUF is required with --llama-migrate-lib "
                                "(`migrate model` makes the deterministic tiny model and prints its path)")  # fmt: skip
    return check_model_file("--llama-migrate-model", Path(given))


def mode_of(config: pytest.Config) -> Child | Parent | Collect | None:
    return config.stash.get(MODE, None)


# --- collection: over the builds -------------------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    mode = mode_of(metafunc.config)
    if USE not in metafunc.fixturenames:
        return
    if isinstance(mode, Parent):
        metafunc.parametrize(USE, list(mode.targets), ids=list(mode.targets), indirect=True)
    elif isinstance(mode, Child) and metafunc.config.getoption("llama_migrate_parametrised"):
        # the parent's item for this build: the same node id with this build's label alone
        metafunc.parametrize(USE, [mode.target.label], ids=[mode.target.label], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mode = mode_of(config)
    if isinstance(mode, Collect):
        mode.ids = [item.nodeid for item in items if USE in getattr(item, "fixturenames", ())]


def pytest_collection_finish(session: pytest.Session) -> None:
    mode = mode_of(session.config)
    if isinstance(mode, Collect):
        mode.out.write_text(json.dumps(mode.ids), encoding="utf-8")


# --- the parent: each item in a child ----------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    mode = mode_of(item.config)
    if not isinstance(mode, Parent) or USE not in getattr(item, "fixturenames", ()):
        return None
    label = item.callspec.params[USE]  # type: ignore[attr-defined]
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    result = run_item(mode, item.nodeid, label)
    for report in reports(item, result):
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    others = {k: v for k, v in item.callspec.params.items() if k != USE}  # type: ignore[attr-defined]
    test = f"{item.location[0]}::{getattr(item, 'originalname', item.name)}" + (f" {others}" if others else "")
    mode.results.setdefault(test, {})[label] = result
    return True


def run_item(mode: Parent, nodeid: str, label: str) -> CheckResult:
    from verify.runner import check_env, run_in_child, write_job
    from verify.session import prepare

    target = mode.targets[label]
    if label not in mode.jobs:
        mode.jobs[label] = mode.workdir / f"{label}-job.json"
        write_job(mode.jobs[label], target, mode.options, prepare(target))
    return run_in_child(mode.jobs[label], nodeid, label, mode.options.timeout, mode.workdir,
                        check_env(nodeid, None), ("--parametrised",))  # fmt: skip


def reports(item: pytest.Item, result: CheckResult) -> list[pytest.TestReport]:
    """The child's outcome as pytest's reports: passed, failed (the message, signal and stderr tail), skipped; the
    harness's error as an error in setup (pytest's ERROR, not a failure of the consumer)."""
    keywords = {k: 1 for k in item.keywords}

    def report(when: str, outcome: str, longrepr: Any = None) -> pytest.TestReport:
        return pytest.TestReport(item.nodeid, item.location, keywords, outcome, longrepr, when,
                                 duration=result.seconds if when == "call" else 0.0)  # fmt: skip

    detail = "\n".join(f"{k}: {v}" for k, v in result.evidence.items() if k in ("exit", "signal", "timeout_s",
                                                                                "stderr_tail", "traceback"))
    text = f"[{result.build}] {result.message}" + (f"\n{detail}" if detail else "")
    if result.status == ERROR:
        return [report("setup", "failed", f"harness error (not verified): {text}"), report("teardown", "passed")]
    if result.status == SKIPPED:
        path, line, _ = item.location
        return [report("setup", "skipped", (path, (line or 0) + 1, result.message)), report("teardown", "passed")]
    outcome = "passed" if result.status == PASSED else "failed"
    call = report("call", outcome, None if outcome == "passed" else text)
    return [report("setup", "passed"), call, report("teardown", "passed")]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Old vs new per test, classified as the checklist's checks are."""
    mode = mode_of(config)
    if not isinstance(mode, Parent) or list(mode.targets) != ["old", "new"] or not mode.results:
        return
    from verify.differential import BOTH_PASS, classify

    terminalreporter.write_sep("=", "llama-migrate: old build vs new build")
    counts: dict[str, int] = {}
    for test, by_build in mode.results.items():
        verdict = classify(by_build.get("old"), by_build.get("new"))
        counts[verdict] = counts.get(verdict, 0) + 1
        if verdict != BOTH_PASS:
            new = by_build.get("new")
            terminalreporter.write_line(f"{verdict}: {test}" + (f": {new.message}" if new and new.message else ""))
    terminalreporter.write_line("; ".join(f"{n} {verdict}" for verdict, n in counts.items()))


# --- the child: the test's outcome as a CheckResult -----------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    mode = mode_of(item.config)
    if not isinstance(mode, Child):
        return report
    if call.when in ("setup", "call") and (call.when == "call" or report.outcome != "passed"):
        mode.result = outcome(item, call, report, mode)
        write_result(mode, closed=False)  # before the session is freed: a crash there is told apart
    elif call.when == "teardown" and mode.result is not None:
        if report.outcome == "failed" and mode.result.status != FAILED:
            mode.result.status = ERROR
            mode.result.message = f"teardown: {first_line(call)}; " + mode.result.message
        write_result(mode, closed=True)
    return report


def outcome(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport, mode: Child) -> CheckResult:
    from verify.bindings import BindingError
    from verify.session import DriverError, SetupError, Skip

    function = getattr(item, "function", None)
    doc = ((function.__doc__ if function else None) or "").strip().splitlines()
    evidence: dict[str, Any] = {"test": item.nodeid, "location": f"{item.location[0]}:{(item.location[1] or 0) + 1}"}
    if mode.evidence:
        evidence["recorded"] = mode.evidence
    excinfo = call.excinfo
    status, message = PASSED, ""
    if excinfo is None:
        status = PASSED
    elif excinfo.errisinstance((pytest.skip.Exception, Skip)):
        status, message = SKIPPED, f"skipped: {getattr(excinfo.value, 'msg', None) or excinfo.value}"
    elif excinfo.errisinstance(SetupError):
        status, message = FAILED, f"setup failed: {excinfo.value}"
    elif excinfo.errisinstance((DriverError, BindingError)):
        status, message = ERROR, f"harness could not drive the API: {excinfo.value}"
    elif call.when == "setup":  # a fixture (ours or the test's own) could not be made: not the consumer's failure
        status, message = ERROR, f"fixture setup: {first_line(call)}"
    else:
        status, message = FAILED, first_line(call)
    if status in (FAILED, ERROR):
        evidence["traceback"] = "\n".join(str(report.longrepr).splitlines()[-30:])
    summary = doc[0] if doc else ("user test passed" if status == PASSED else message[:120])
    return CheckResult(item.nodeid, status, evidence, message, round(call.duration, 3), mode.target.label, summary)


def first_line(call: pytest.CallInfo[None]) -> str:
    """The exception as one line, clipped: an assertion's own message alone (what the test says is wrong, first in
    the gate's one-line summary), else `Type: message`."""
    if call.excinfo is None:
        return ""
    said = str(call.excinfo.value).split("\n")[0] if call.excinfo.errisinstance(AssertionError) else ""
    text = " ".join((said or call.excinfo.exconly()).split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "…"


def write_result(mode: Child, closed: bool) -> None:
    from verify.runner import _write

    assert mode.result is not None
    _write(mode.result_file, {"result": mode.result.to_json(), "closed": closed})


# --- fixtures ------------------------------------------------------------------------------------------------------


def _child(request: pytest.FixtureRequest) -> Child:
    mode = mode_of(request.config)
    if not isinstance(mode, Child):
        pytest.skip("no build under test: run with --llama-migrate-lib LIB (twice: old, new), or through "
                    "`migrate verify` / `run` / `gate` with `[verify] tests`")  # fmt: skip
    return mode


@pytest.fixture
def llama_build(request: pytest.FixtureRequest) -> Target:
    return _child(request).target


@pytest.fixture
def llama_session(llama_build: Target, request: pytest.FixtureRequest) -> Iterator[Session]:
    child = _child(request)
    session = Session(child.target, child.options, child.prepared)
    yield session
    session.close()


@pytest.fixture
def llama_api(llama_session: Session) -> Any:
    return llama_session.shim


@pytest.fixture
def llama_lib(llama_session: Session) -> Any:
    return llama_session.bindings.lib


@pytest.fixture
def llama_ffi(llama_session: Session) -> Any:
    return llama_session.bindings.ffi


@pytest.fixture
def llama_model(llama_session: Session) -> Any:
    return llama_session.model()


@pytest.fixture
def llama_context(llama_session: Session) -> Any:
    return llama_session.context(512, 1)


@pytest.fixture
def llama_contexts(llama_session: Session) -> Callable[[int, int], Any]:
    return llama_session.context


@pytest.fixture
def llama_observer(llama_session: Session) -> Any:
    return llama_session.need_observer()


@pytest.fixture
def llama_greedy(llama_session: Session) -> Any:
    return llama_session.options.sampling()


@pytest.fixture
def llama_sampled(llama_session: Session) -> Any:
    from verify.checks.sampling import SAMPLED, SEEDS

    return replace(llama_session.options.sampling(), **SAMPLED, seed=SEEDS[0])


@pytest.fixture
def llama_evidence(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _child(request).evidence


class HeapProbe:
    """Repeats a cycle of calls and watches the C heap (as the checklist's frees_release_memory does)."""

    def leak(self, cycle: Callable[[], Any]) -> str | None:
        """A message when the heap grew by at least LEAK_BYTES per cycle in every window, else None."""
        from verify.checks.resources import LEAK_BYTES, LEAK_WINDOW, LEAK_WINDOWS, _heap_growth

        growth, _ = _heap_growth(lambda: [c for c in [cycle()] if hasattr(c, "ok")])
        if min(growth) >= LEAK_BYTES * LEAK_WINDOW:
            return (f"the heap grew {', '.join(map(str, growth))} bytes over {LEAK_WINDOWS} windows of {LEAK_WINDOW} "
                    "cycles: something is not freed")  # fmt: skip
        return None


@pytest.fixture
def llama_heap(llama_session: Session) -> HeapProbe:
    import os

    from verify.checks.resources import TCACHE_OFF, heap_in_use
    from verify.session import Skip

    if heap_in_use() is None or TCACHE_OFF not in os.environ.get("GLIBC_TUNABLES", ""):
        raise Skip(f"heap figures need glibc's mallinfo2 and its thread caches off ({TCACHE_OFF})")
    return HeapProbe()
