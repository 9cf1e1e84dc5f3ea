"""`migrate verify`: the consumer checklist on a built library, or old build vs new build (differential mode).

With --n-gpu-layers N (N != 0) every check runs with the model offloaded, `gpu_offload` joins the checklist, and
each build's greedy prompts are also run on its CPU alone (GPUs hidden) and compared with the GPU run token by
token (first difference with its logit margins); without a GPU all of that is skipped with the reason.

With --trace (a library built with `migrate build --traced`) every check's llama.cpp calls are recorded with the
consumer's file:line; a failed check then names the first call that breaks the run-time contract of its release
(contracts/<version>.yaml). --predict VERSION replays the calls of the old build (--lib, or --baseline-lib in
differential mode) against VERSION's contract: the calls that will abort or be rejected there, before migrating.

Exit codes: 0 every check on the build under test (--lib) passed or was skipped with a reason; 1 a check failed
on it, or its CPU and GPU runs disagree (a difference that is not a near-tie); 2 bad input, found before any
check runs (a library, header or model that cannot be found, a C API that cannot be bound, --trace on a library
built without the tracer, a library this host cannot load or that does not export the functions the checklist calls
through the header, a model llama.cpp's own loader refuses, with its reason; a bad number or output path);
3 nothing failed but some check could not be driven by the harness (status error): not verified; 4 nothing
failed, but --predict found calls that will abort or be rejected at that release; 5 nothing else to report, but a
known failure passes now: remove it from the baseline.

Known failures (verify/baseline.py): `[verify] known_failures` / `[verify] baseline` in the consumer config, and
`--known-failures FILE`. A known failure that still fails the same way does not make the exit code 1; one that
passed on the old build (differential mode) is a regression and always does. `--write-baseline FILE` records the
failing checks of the build under test (regressions left out) with their causes, for `--known-failures FILE` or
`[verify] baseline` later.

The command line is read in one place (`verify_request`, beside `add_arguments`); `run_verify` takes the typed
`VerifyRequest` it makes.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from verify import usertests
from verify.binding import Binding
from verify.checks import ALL_CHECKS, SKIPPED, CheckResult, checklist
from verify.devices import compare_devices
from verify.differential import REFERENCE_CHECK, run_differential
from verify.errors import ToolError, comma_names
from verify.inputs import ELF_MAGIC, LIB_REMEDY, BadInput, PathKind, existing_path
from verify.manifest import read_manifest
from verify.outcomes import ExitCode, VerifyExit
from verify.preflight import MODEL_REMEDY, Preflight, check_options, check_targets, library_flag
from verify.report import (
    STATUS_STYLE,
    RunReport,
    attach_triage,
    markdown_section,
    print_summary,
    write_json,
    write_junit,
)
from verify.runner import default_jobs, run_checks
from verify.session import Options, Target, bind

CONFIG_FILE = "llama-migrate.toml"


class UsageError(ToolError):
    pass


@dataclass(frozen=True)
class VerifyRequest:
    """What one `migrate verify` was asked to do: its command line, typed (migrate/cli/verify.py's `verify_request`
    makes it)."""

    lib: str  # the build under test (the new one in differential mode)
    header: str | None = None  # its C API header; None: the one its build manifest names
    config: str | None = None  # consumer config with a [verify] table; None: the library's consumer tree's
    baseline_lib: str | None = None  # the old build: differential mode
    baseline_header: str | None = None
    model: str | None = None  # GGUF; None: the caller's default model, else a usage error
    eog_model: str | None = None  # the stop checks' model; None: those checks skip
    n_gpu_layers: int = 0
    llama_tree: str | None = None
    baseline_llama_tree: str | None = None
    checks: tuple[str, ...] | None = None  # as given (checked against the checklist when run); None: all
    threads: int = 1
    max_tokens: int = 12
    normalise: str = "none"
    timeout: float = 60.0
    tie_margin: float = 0.05
    generated: int = 0  # --generated N: inputs drawn per operation by generated_inputs (0: that check skips)
    trace: bool = False
    trace_dir: str | None = None  # None: a temporary folder
    predict: str | None = None  # a release whose run-time contract the old build's calls are replayed against
    assume_kv_unified: bool = False
    json_path: str | None = None
    junit_path: str | None = None
    markdown_path: str | None = None
    cache: str | None = None
    jobs: int | None = None  # checks run at once; None: one per core (verify.runner.default_jobs)
    known_failures: str | None = None  # a baseline file, besides the config's [verify] known_failures / baseline
    write_baseline: str | None = None  # write the build under test's failures (by cause) here
    tests: tuple[str, ...] = ()  # --tests: the consumer's own pytest checks, besides the config's [verify] tests
    sanitize: tuple[str, ...] = ()  # --sanitize address,undefined: the libraries are sanitized builds (sanitize.py)


def header_for(library: Path) -> Path:
    """The consumer header of a library `migrate build` made: recorded in the manifest beside it."""
    manifest = read_manifest(library)
    if manifest is None or not manifest.header:
        raise UsageError(f"cannot tell which header declares {library}'s API (no build manifest naming one); "
                         "pass --header, or set `header` in llama-migrate.toml and rebuild with `migrate build`")
    return Path(manifest.header)


def verify_table(config: Path | None, library: Path) -> tuple[dict[str, Any], Path | None]:
    """The consumer config's [verify] table and the folder it is relative to: --config, else the
    llama-migrate.toml of the consumer tree the library was built from (its manifest says which)."""
    if config is None:
        manifest = read_manifest(library)
        root = Path(manifest.consumer_root) if manifest and manifest.consumer_root else None
        if root is None or not (root / CONFIG_FILE).is_file():
            return {}, root
        config = root / CONFIG_FILE
    if not config.is_file():
        raise UsageError(f"{config}: no such config file")
    try:
        table = tomllib.loads(config.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{config}: not valid TOML: {exc}") from exc
    if config.name == "pyproject.toml":
        table = table.get("tool", {}).get("llama-migrate", {})
    section = table.get("verify", {})
    if not isinstance(section, dict):
        raise UsageError(f"{config}: [verify] must be a table")
    return section, config.parent


def make_target(label: str, library: str, header: str | None, model: Path, tree: str | None,
                config: str | None = None, verify: dict[str, Any] | None = None,
                config_root: Path | None = None) -> Target:  # fmt: skip
    """One build to verify. `verify`/`config_root`: the [verify] table as already read (the pipeline's);
    else it is read from `config` or the consumer tree's own llama-migrate.toml."""
    # here only that it is there and an ELF file; its class, machine, size and exports after binding (preflight)
    lib = existing_path(library_flag(label), library, PathKind.FILE, "build it with `migrate build`", noun="library")
    with lib.open("rb") as handle:
        if handle.read(4) != ELF_MAGIC:
            raise BadInput(library_flag(label), library, "not a shared library (no ELF header)", LIB_REMEDY)
    head_flag = "--baseline-header" if label == "old" else "--header"
    head = existing_path(head_flag, header or header_for(lib), PathKind.FILE, noun="header")
    if verify is None:
        verify, config_root = verify_table(Path(config) if config else None, lib)
    return Target(lib, head, model, label, Path(tree) if tree else None, dict(verify), config_root)


def bind_targets(targets: list[Target]) -> dict[str, Binding]:
    """Every target's C API bound before any check runs: a binding that cannot be completed stops here, with
    what was found, what is missing and the config lines to add (BindingIncomplete, a ToolError)."""
    return {t.label: bind(t) for t in targets}


def run_verification(targets: list[Target], options: Options, names: list[str] | None = None,
                     console: Console | None = None, preflight: Preflight | None = None,
                     reused_old: dict[str, CheckResult] | None = None) -> RunReport:  # fmt: skip
    """One build (its checklist) or two (old, new: differential). Prints progress when a console is given.
    `preflight`: the libraries and models already checked (verify.preflight); None checks them here."""
    started = time.monotonic()

    def progress(name: str, result: CheckResult) -> None:
        if console is not None:
            style = STATUS_STYLE.get(result.status, "white")
            console.print(f"  [{style}]{result.status:7}[/] {result.build:>8} {name} ({result.seconds:.1f} s)")

    bindings = bind_targets(targets)
    if preflight is None:  # bad input stops here, before any check
        preflight = check_targets(targets, bindings, options.eog_model)
    user_tests = usertests.names(targets[0], options)  # collected once (sets options.tests_root), run on each build
    if user_tests:
        names = [*(names or checklist(options.n_gpu_layers, options.generated)), *user_tests]
    if console is not None:
        console.print(f"  {preflight.model_probe}", highlight=False, markup=False)
    diff = None
    if len(targets) == 2:
        untraced = traced_names(options, names)
        if untraced == []:  # only what tracing would distort was asked for
            from verify.differential import DifferentialReport

            diff = DifferentialReport(targets[0], targets[1], [], [], {})
        else:
            diff = run_differential(targets[0], targets[1], options, untraced, progress, reused_old=reused_old)
        if untraced != names and untraced is not None:  # traced: the throughput pair is not measured
            from verify.differential import CheckComparison, classify
            from verify.runner import UNTRACED_CHECKS

            order = list(names or checklist(options.n_gpu_layers, options.generated))
            for name in (n for n in order if n in UNTRACED_CHECKS):
                old, new = (CheckResult(name, SKIPPED, {}, f"skipped: {UNTRACED_CHECKS[name]}", build=t.label)
                            for t in targets)  # fmt: skip
                diff.comparisons.insert(order.index(name), CheckComparison(name, classify(old, new), old, new))
        results = {t.label: diff.results(side) for t, side in zip(targets, ("old", "new"), strict=True)}
    else:
        results = {targets[0].label: run_checks(targets[0], options, names, progress)}
    report = RunReport(targets, results, options, 0.0, diff, bindings=bindings)
    if options.n_gpu_layers and (names is None or REFERENCE_CHECK in names):
        for target in targets:
            gpu_result = next((r for r in results[target.label] if r.name == REFERENCE_CHECK), None)
            compared = compare_devices(target, gpu_result, options)
            report.devices.append(compared)
            if console is not None:
                console.print(f"  {compared.status:7} {target.label:>8} cpu_vs_gpu: {compared.message}")
    report.seconds = time.monotonic() - started
    return report


def traced_names(options: Options, names: list[str] | None) -> list[str] | None:
    """The checks to run when tracing: those the tracer would distort (throughput) left out."""
    from verify.runner import UNTRACED_CHECKS

    if not options.trace_dir:
        return names
    order = list(names or checklist(options.n_gpu_layers, options.generated))
    kept = [n for n in order if n not in UNTRACED_CHECKS]
    return kept if len(kept) != len(order) else names


def require_traced(targets: list[Target]) -> None:
    """--trace/--predict need libraries linked with the tracer."""
    from verify.trace import is_traced

    for target in targets:
        if not is_traced(target.library):
            raise UsageError(f"{target.library} was built without the call tracer: rebuild it with `migrate build "
                             "SRC --llama VERSION --traced` (a separate build) for --trace / --predict")  # fmt: skip


def require_sanitized(targets: list[Target], kinds: tuple[str, ...]) -> None:
    """--sanitize needs libraries built with those sanitizers (`migrate verify` builds them itself); where the
    sanitizers cannot run here, every check is skipped with the reason instead (verify/sanitize.py)."""
    from verify.sanitize import is_sanitized, unavailable

    if not kinds or unavailable(kinds):
        return
    for target in targets:
        if not set(kinds) <= set(is_sanitized(target.library)):
            raise UsageError(f"{target.library} was built without -fsanitize={','.join(kinds)}: rebuild it with "
                             f"`migrate build SRC --llama VERSION --sanitize {','.join(kinds)}` (a separate build), "
                             "or run `migrate verify --sanitize`, which does")  # fmt: skip


def own_contract(target: Target) -> str | None:
    """The contract of the release a library was built against (its manifest), when there is one."""
    from verify.contract import find_contract

    manifest = read_manifest(target.library)
    for version in (manifest.llama_requested, manifest.llama_version) if manifest else ():
        if version and find_contract(version) is not None:
            return find_contract(version).version
    return None


def make_prediction(report: RunReport, label: str, version: str, assume: Any = None) -> Any:
    """Replay the traces of build `label` in `report` (run with options.trace_dir) against `version`'s contract;
    the prediction is also kept on the report (JSON, JUnit, markdown)."""
    from verify.contract import Assume, predict, require_contract, trace_file

    target = next(t for t in report.targets if t.label == label)
    trace_dir = Path(report.options.trace_dir or ".")
    traces = [(r.name, trace_file(trace_dir, label, r.name)) for r in report.results.get(label, [])]
    report.prediction = predict(require_contract(version), traces, target.library, label, assume or Assume())
    return report.prediction


def run_verify(request: VerifyRequest, default_model: Callable[[str | None], Path] | None = None) -> int:
    """`default_model(cache)`: the model when --model is not given (the migrate CLI makes the tiny one)."""
    console = Console(stderr=True)
    names = list(request.checks) if request.checks is not None else None
    unknown = [n for n in names or [] if n not in ALL_CHECKS]
    if unknown:
        print(f"migrate verify: --checks: unknown check(s) {', '.join(unknown)}; known: {', '.join(ALL_CHECKS)}",
              file=sys.stderr)  # one line, as every bad input (a console would wrap it)
        return ExitCode.USAGE
    if request.jobs is not None and request.jobs < 1:
        print(f"migrate verify: --jobs {request.jobs}: give at least 1 (checks run at once)", file=sys.stderr)
        return ExitCode.USAGE
    try:
        check_options(request)
        targets = _targets(request, _model(request, default_model))
        preflight = check_targets(targets, bind_targets(targets), request.eog_model or "")  # before any check
        known = _known(request, targets[-1])
        traced = bool(request.trace or request.predict)
        contract = _contract(request, targets) if traced else None
        require_sanitized(targets, request.sanitize)
    except ToolError as exc:
        print(f"migrate verify: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    options = Options(n_gpu_layers=request.n_gpu_layers, n_threads=request.threads, max_tokens=request.max_tokens,
                      normalise=request.normalise, timeout=request.timeout, tie_margin=request.tie_margin,
                      contract=contract, eog_model=request.eog_model or "", generated=request.generated,
                      jobs=request.jobs or default_jobs(), sanitize=list(request.sanitize))  # fmt: skip
    count = len(names or checklist(options.n_gpu_layers, options.generated))
    console.print(f"verifying {count} checks on {', '.join(str(t.library) for t in targets)}"
                  + (f" (traced; contract {contract or 'none'})" if traced else ""))  # fmt: skip
    with contextlib.ExitStack() as stack:
        if traced:
            trace_dir = request.trace_dir
            if not trace_dir:
                trace_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="llama-migrate-trace-"))
            options.trace_dir = str(Path(trace_dir).resolve())
        report = run_verification(targets, options, names, console, preflight)
        if request.predict:
            from verify.contract import Assume

            make_prediction(report, targets[0].label, request.predict,
                            Assume(kv_unified=request.assume_kv_unified or None))  # fmt: skip
    attach_triage(report, known)
    print_summary(report, console)
    _write_outputs(report, request)
    return _exit_code(report, console)


def _known(request: VerifyRequest, target: Target) -> list[Any]:
    from verify.baseline import load_known

    return load_known(target.verify, target.config_root, request.known_failures, ALL_CHECKS)


def _model(request: VerifyRequest, default_model: Callable[[str | None], Path] | None) -> Path:
    if request.model:
        model = Path(request.model)
    elif default_model is not None:
        model = default_model(request.cache)
    else:
        raise UsageError("--model is required (a GGUF file)")
    return existing_path("--model", model, PathKind.FILE, MODEL_REMEDY, noun="model")  # its contents: preflight


def _targets(request: VerifyRequest, model: Path) -> list[Target]:
    """The build under test, after the baseline in differential mode."""
    label = "new" if request.baseline_lib else "build"
    targets = [make_target(label, request.lib, request.header, model, request.llama_tree, request.config)]
    if request.baseline_lib:
        old = make_target("old", request.baseline_lib, request.baseline_header, model, request.baseline_llama_tree,
                          request.config)  # fmt: skip
        targets.insert(0, old)
    for target in targets:
        target.verify = with_tests_option(target.verify, request.tests)
    return targets


def _contract(request: VerifyRequest, targets: list[Target]) -> str | None:
    """Traced runs: the contract failed checks are explained by (--predict's, else the build's own release's)."""
    from verify.contract import require_contract

    require_traced(targets)
    return require_contract(request.predict).version if request.predict else own_contract(targets[-1])


def _write_outputs(report: RunReport, request: VerifyRequest) -> None:
    if request.json_path:
        write_json(report, Path(request.json_path))
    if request.junit_path:
        write_junit(report, Path(request.junit_path))
    if request.markdown_path:
        Path(request.markdown_path).write_text(markdown_section(report))
    if request.write_baseline and report.triage is not None:
        from verify.baseline import baseline_entries, write_baseline

        entries = baseline_entries(report.triage, report.classifications())
        write_baseline(Path(request.write_baseline), entries, report.under_test.to_json())
        print(f"baseline: {len(entries)} known failure(s) written to {request.write_baseline}", file=sys.stderr)


def _exit_code(report: RunReport, console: Console) -> int:
    devices_failed = any(d.failed for d in report.devices if d.build == report.under_test.label)
    known = report.triage.known_checks() if report.triage is not None else set()
    if any(r.name not in known for r in report.failed()) or devices_failed:
        return VerifyExit.FAILED
    if report.prediction is not None and report.prediction.breaks():
        first = report.prediction.breaks()[0]
        console.print(f"PREDICTED RUN-TIME BREAK at {report.prediction.contract}: {len(report.prediction.breaks())} "
                      f"place(s); first: {first.line()}", highlight=False, markup=False)  # fmt: skip
        return VerifyExit.PREDICTED
    if report.errors():
        console.print(f"NOT VERIFIED: {len(report.errors())} check(s) the harness could not drive (error); "
                      f"first: {report.errors()[0].name}: {report.errors()[0].message}")  # fmt: skip
        return VerifyExit.NOT_VERIFIED
    fixed = report.triage.fixed() if report.triage is not None else []
    if fixed:
        console.print(f"KNOWN FAILURE FIXED: {len(fixed)} baseline entr{'y' if len(fixed) == 1 else 'ies'} no longer "
                      f"fail; first: {fixed[0].entry.label()}: remove it from {fixed[0].entry.source}",
                      highlight=False, markup=False)  # fmt: skip
        return VerifyExit.KNOWN_FIXED
    return VerifyExit.OK


def sanitize_kinds(spec: str | None) -> tuple[str, ...]:
    """`--sanitize a,b` as sanitizer names (() when not given); an unknown one is a UsageError."""
    from verify.sanitize import SANITIZERS

    try:
        return comma_names(spec, SANITIZERS, "sanitizer(s)", UsageError) or ()
    except UsageError as exc:
        raise UsageError(f"--sanitize {spec}: {exc}") from exc


def with_tests_option(verify: dict[str, Any], tests: Iterable[str]) -> dict[str, Any]:
    """The [verify] table with --tests paths added to its `tests` (absolute: they are relative to the working
    directory, the table's to the config's folder)."""
    added = [str(Path(p).resolve()) for p in tests]
    if not added:
        return verify
    listed = verify.get("tests") or []
    return verify | {"tests": [*([listed] if isinstance(listed, str) else listed), *added]}
