"""`migrate run`: the whole chain on one consumer tree, one report.

sources (both versions) → plan → apply to a copy → build the original at --from and the copy at --to →
predict (the original built traced, its llama.cpp calls replayed against the --to release's run-time contract:
calls that will abort or be rejected there; --no-predict skips it) → verify both (differential; a check that fails
on the new build is re-run on a traced build of the copy to name the first contract break before the failure) →
one markdown report, plus JSON and JUnit.

Exit codes: 0 migrated, built and every check on the new build passed (or was skipped with a reason);
1 something needs a human (manual actions, a build failure, a failed check); 2 bad input or environment.
`migrate gate` (migrate/gate.py) runs the same machinery (`load_consumer`, `execute`, `write_outputs`) and turns
the outcome into one exit code per failure class. The command line is read in one place (`run_request`, at the end);
the stages take the typed `RunRequest` it makes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from migrate.build import BuildOptions, BuildResult, build
from migrate.build_settings import BuildSettings
from migrate.config import DEFAULT_FROM, DEFAULT_TO, ConsumerConfig, load_config
from migrate.exit_codes import ExitCode, RunExit
from migrate.paths import cache_root, data_dir
from migrate.reuse import Inputs, Reused, ReusedStage, check_inputs, clean, lookup, store
from migrate.reuse import enabled as reuse_enabled
from migrate.sources import SourceTree, resolve
from verify.errors import ToolError
from verify.outcomes import CheckStatus

if TYPE_CHECKING:  # the stages import these when they run: `migrate --help` stays quick
    from migrate.rewrite.plan import Plan
    from verify.baseline import KnownFailure
    from verify.contract import Contract, Prediction
    from verify.report import RunReport

DEFAULT_SRC = data_dir("fixtures") / "localllm"
PLAIN_RUN_PAIRS = 30  # throughput pairs of a plain run (no tokens/s threshold): the comparison's first blocks
COPY_IGNORE = shutil.ignore_patterns(".git", "build", "build-*", "__pycache__")


class UsageError(ToolError):
    """Bad input or environment (config, version, toolchain, check names): exit 2, nothing to report."""


@dataclass(frozen=True)
class RunRequest:
    """What one `migrate run` (or the run inside `migrate gate`) was asked to do: its command line, typed.
    migrate/cli/run.py's `run_request` makes it from the parsed flags; the stages read only this."""

    src: str | None = None  # the consumer tree; None: the bundled fixtures/localllm
    from_version: str = DEFAULT_FROM
    to_version: str = DEFAULT_TO
    model: str | None = None  # GGUF for verification; None: the config's, else the generated tiny model
    header: str | None = None  # the consumer's C API header, relative to src or absolute; None: the config's
    out: str | None = None  # the report's folder; None: <cache>/reports
    json_path: str | None = None  # everything the run found, as JSON
    junit_path: str | None = None  # JUnit XML of the checks
    enable: tuple[str, ...] = ()  # opt-in rule ids, over the config's
    options: tuple[str, ...] = ()  # KEY=VALUE rule options, over the config's
    gpu: str | None = None  # GPU backend for llama.cpp ("cuda"); None: CPU
    cuda_arch: str | None = None
    cmake_args: tuple[str, ...] = ()
    n_gpu_layers: int = 0
    checks: tuple[str, ...] | None = None  # known check names; None: the whole checklist
    predict: bool = True
    quiet: bool = False
    cache: str | None = None
    jobs: int | None = None  # checks verified at once; None: one per core
    # --build-* options: what the shim's build adds, over each tree's own [build] (migrate/build_settings.py)
    build_settings: BuildSettings = field(default_factory=BuildSettings)
    known_failures: str | None = None  # a baseline file (`migrate verify --write-baseline`), over the config's
    tests: tuple[str, ...] = ()  # --tests: the consumer's own pytest checks, besides the config's [verify] tests
    reuse: bool = True  # --no-reuse: recompute the old build's checks and the prediction even when inputs match
    mined: bool = True  # --no-mined: no mined rules where no rules file covers part of the bump (rewrite/steps.py)
    llama_build: str = "source"  # llama.cpp's libraries: source | prebuilt | auto (migrate/prebuilt.py)
    # --sanitize address,undefined: both shims built with the sanitizers, the checklist run under them
    # (verify/sanitize.py); the traced builds of predict/explain stay plain
    sanitize: tuple[str, ...] = ()

    def build_options(self) -> BuildOptions:
        return BuildOptions(self.gpu or "cpu", self.cuda_arch, self.cmake_args, settings=self.build_settings,
                            llama_build=self.llama_build, sanitize=self.sanitize)  # fmt: skip

    def verify_jobs(self) -> int:
        from verify.runner import default_jobs

        return self.jobs or default_jobs()


@dataclass
class RunOutcome:
    """What one run found, in the order the report shows it."""

    src: Path
    migrated: Path
    trees: dict[str, SourceTree]
    plan: Plan | None = None
    xref_markdown: str = ""
    builds: dict[str, BuildResult] = field(default_factory=dict)
    verification: RunReport | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # results served again because every input they depend on is unchanged (migrate/reuse.py), and whether to look
    reused: list[Reused] = field(default_factory=list)
    reuse: bool = False
    cache: str | None = None
    problems: list[str] = field(default_factory=list)  # why a human is needed, one line each
    header: str | None = None  # the C API header, relative to the tree (config), else found
    prediction: Prediction | None = None  # the original's traced calls against the target's contract
    known_failures: list[KnownFailure] = field(default_factory=list)  # the consumer's baseline

    def exit_code(self) -> int:
        return RunExit.NEEDS_HUMAN if self.problems else RunExit.OK


class Stages:
    """Runs the stages in order, timing each and showing progress."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self.started
            self.console.print(f"[dim]{elapsed:6.1f}s[/] {text}")


KEEP_RUNS = 10  # migrated copies kept in the cache (the newest); older ones go, and their shim builds with them


def _prune_old_runs(runs: Path) -> None:
    """All but the newest KEEP_RUNS run folders removed, never one whose run is still going. Runs prune side by side
    (gates in parallel CI jobs): a folder another run removed while this one listed them is skipped, not an error
    (seen: `migrate gate: <cache>/runs/run-…: No such file or directory`)."""
    if not runs.is_dir():
        return
    dated = []
    for folder in runs.iterdir():
        try:
            dated.append((folder.stat().st_mtime, folder))
        except FileNotFoundError:
            continue
    for _, old in sorted(dated)[:-KEEP_RUNS]:
        if not _still_running(old):  # another run's copy in use (seen: its header deleted mid-verify)
            shutil.rmtree(old, ignore_errors=True)


def _still_running(folder: Path) -> bool:
    """A run folder (`<name>-<time>-<pid>`) whose process is alive."""
    pid = folder.name.rpartition("-")[2]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _resolve_trees(config: ConsumerConfig, from_version: str, to_version: str, cache: str | None,
                   stages: Stages) -> dict[str, SourceTree]:  # fmt: skip
    trees = {}
    for role, spec in (("from", from_version), ("to", to_version)):
        tree = resolve(spec, checkout=config.llama_checkout, cache=cache)
        note = f" [yellow](stand-in for {tree.requested})[/]" if tree.substituted else ""
        stages.say(f"llama.cpp {role}: {tree.provided} {tree.commit[:9]} from {tree.source}{note}")
        trees[role] = tree
    return trees


def _plan_and_apply(outcome: RunOutcome, config: ConsumerConfig, cache: str | None, stages: Stages) -> None:
    from migrate.rewrite.apicheck import RULE_ID as API_RULE
    from migrate.rewrite.apply import apply_plan
    from migrate.rewrite.parse import CompileDatabase, build_parse_flags
    from migrate.rewrite.plan import ReadMode
    from migrate.rewrite.steps import StepInputs, plan_steps

    tree_from, tree_to = outcome.trees["from"], outcome.trees["to"]
    known = {tree_from.requested: tree_from, tree_to.requested: tree_to}

    def tree(tag: str) -> SourceTree:  # a step's end between --from and --to (b7785 of b5421 → b10361)
        return known[tag] if tag in known else resolve(tag, checkout=config.llama_checkout, cache=cache)

    build = config.build.rebased(outcome.src, outcome.migrated)  # parsed as its own build compiles it ([build])
    inputs = StepInputs(src=outcome.migrated, resolve=tree, options=dict(config.options), enabled=set(config.enable),
                        flags=build_parse_flags(build.include_dirs, build.defines, build.flags),
                        plan_cache=cache_root(cache) / "plans", cache=cache, source_tree=tree_from,
                        compile_db=CompileDatabase.find, mined=config.mined_rules)  # fmt: skip
    plan = plan_steps(tree_from.requested, tree_to.requested, inputs)
    counts = plan.summary_counts()
    stages.say(f"plan: {counts['edits']} edit(s), {counts['manual']} manual, {counts['advisories']} advisories")
    # Our own copy: the dirty-tree guard protects consumer checkouts, not this scratch tree.
    apply_plan(plan, force=True, allow_syntactic=config.allow_syntactic, cache=cache,
               backup_root=outcome.migrated.parent / "backups")  # fmt: skip
    outcome.plan = plan
    # The plan holds the API cross reference too (done on the copy before apply, i.e. on the original code):
    # its uncovered uses of removed/changed API are among plan.actions, rule "api-diff".
    for item in plan.actions:
        what = "API change not covered by a rule" if item.rule == API_RULE else "manual action"
        outcome.problems.append(f"{what}: {plan.relative(item.file)}:{item.line} {item.message}")
    # an incomplete plan is a problem too: files read by name only were not checked against the API diff, and
    # code that uses declarations the --from tree lacks was probably migrated from the wrong version
    for report in plan.file_reports:
        if report.mode == ReadMode.TREE_SITTER:
            outcome.problems.append(f"plan incomplete: {plan.relative(report.path)} read by name only "
                                    f"({report.reason}); not checked against the API diff")  # fmt: skip
    for item in plan.newer_than_from:
        outcome.problems.append(f"plan incomplete: the code looks newer than --from {tree_from.requested}: "
                                f"{item['name']} at {item['file']}:{item['line']} ({item['known']})")  # fmt: skip
    outcome.xref_markdown = plan.api_section


def _build_both(outcome: RunOutcome, options: BuildOptions, cache: str | None, stages: Stages) -> None:
    for role, src in (("from", outcome.src), ("to", outcome.migrated)):
        tree = outcome.trees[role]
        stages.say(f"build: {'original' if role == 'from' else 'migrated'} shim against {tree.provided} ...")
        # a --build-* path inside the consumer is the copy's when the copy is built
        settings = options.settings.rebased(outcome.src, src)
        result = build(src, tree, dataclasses.replace(options, settings=settings), cache=cache)
        reuse = "cached llama.cpp" if result.llama_objects_rebuilt == 0 else "llama.cpp built"
        if result.prebuilt:  # llama and ggml from a registry package, common compiled (or cached)
            reuse = f"prebuilt llama.cpp from {result.prebuilt['package']}, common {reuse.split()[-1]}"
        stages.say(f"build {role}: {'ok' if result.ok else 'FAILED'} ({reuse}, shim {result.shim_seconds:.1f} s)")
        outcome.builds[role] = result
        for error in result.errors[:10]:
            outcome.problems.append(f"compile error ({tree.provided}): {error}")
        if not result.ok and not result.errors:
            outcome.problems.append(f"build against {tree.provided} failed at stage {result.stage} (see the log)")


def _throughput_model(config: ConsumerConfig, names: list[str] | None, cache: str | None) -> Path | None:
    """When tokens/s is decided against a threshold (the gate; a config's `max_tps_regression`) with the bundled
    default model (no `model` configured), it is compared on the small generated model: the tiny one's tokens are
    so cheap that a fixed per-decode cost decides (kv_unified's batch validation puts the fixture at ~0.8x, next to
    the 0.75 floor); the functional checks keep the tiny one. None: the run's own model (a plain `run` only reports
    tokens/s and keeps the quick tiny-model comparison)."""
    if config.model or config.max_tps_regression is None or (names is not None and "throughput" not in names):
        return None
    from migrate.model import ensure_model

    return ensure_model("small", cache=cache)


def _verify_both(outcome: RunOutcome, config: ConsumerConfig, model: Path, n_gpu_layers: int,
                 console: Console | None, names: list[str] | None = None,
                 eog_model: Path | None = None, jobs: int = 1,
                 throughput_model: Path | None = None, sanitize: tuple[str, ...] = ()) -> None:  # fmt: skip
    from verify.cli import make_target, run_verification
    from verify.differential import not_verified_on_new, nothing_verified
    from verify.session import Options

    old = make_target("old", outcome.builds["from"].library, _header(outcome, outcome.src), model,
                      outcome.trees["from"].path, verify=config.verify, config_root=outcome.src)  # fmt: skip
    new = make_target("new", outcome.builds["to"].library, _header(outcome, outcome.migrated), model,
                      outcome.trees["to"].path, verify=config.verify, config_root=outcome.migrated)  # fmt: skip
    options = Options(n_gpu_layers=n_gpu_layers, normalise=config.normalise, eog_model=str(eog_model or ""),
                      jobs=jobs, sanitize=list(sanitize))  # fmt: skip
    if config.tie_margin is not None:
        options.tie_margin = config.tie_margin
    if config.max_tps_regression is not None:  # a tokens/s threshold to decide against (sequential sampling)
        options.tps_floor = 1 - config.max_tps_regression / 100
    else:  # nothing is decided on tokens/s: the first blocks of pairs report it, no pairs added for precision
        options.tps_max_pairs = PLAIN_RUN_PAIRS
    if throughput_model is not None:
        options.throughput_model = str(throughput_model)
    inputs = check_inputs(ReusedStage.OLD_CHECKS, old, options, names, outcome.trees["from"].commit)
    reused_old = _served(outcome, inputs)
    if reused_old is not None and console is not None:
        console.print(f"  {outcome.reused[-1].line()}", highlight=False, markup=False)
    report = run_verification([old, new], options, names, console=console, reused_old=reused_old)
    if reused_old is None:  # the throughput pair is a measurement of now: never kept
        kept = [c.old for c in report.differential.comparisons if c.old is not None and c.name != "throughput"]
        _keep(outcome, inputs, {r.name: r for r in kept}, kept)
    outcome.verification = report
    # failed checks become problems by cause, once the traced re-run has named their contract breaks (_triage)
    new_results = nothing_verified(report.differential.comparisons)
    if new_results:
        outcome.problems.append(f"verification did not happen: none of the {len(new_results)} check(s) ran on the "
                                f"new build ({new_results[0].message})")  # fmt: skip
    else:
        for comparison in not_verified_on_new(report.differential.comparisons):
            outcome.problems.append(f"check {comparison.name} not verified on the new build "
                                    f"({comparison.classification}): {comparison.new.message}")  # fmt: skip
    for devices in report.devices:
        if devices.failed and devices.build == "new":
            outcome.problems.append(f"CPU and GPU disagree on the new build: {devices.message}")


def _served(outcome: RunOutcome, inputs: Inputs) -> Any:
    """A stage's results from the reuse store when every input is unchanged (noted for the report), else None."""
    found = lookup(outcome.cache, inputs) if outcome.reuse else None
    if found is None:
        return None
    value, reused = found
    outcome.reused.append(reused)
    return value


def _keep(outcome: RunOutcome, inputs: Inputs, value: Any, results: list[Any]) -> None:
    """A stage's results into the reuse store, when they are clean (migrate/reuse.py `clean`)."""
    if outcome.reuse and results and clean(results):
        store(outcome.cache, inputs, value, outcome.migrated.parent.name, len(results))


def _reused_section(outcome: RunOutcome) -> str:
    if not outcome.reused:
        return ""
    lines = ["## Reused results", "", "Served from the reuse store (`<cache>/reuse`) because every input they depend "
             "on is byte-identical (libraries, header, consumer tree, models, llama.cpp commit, checks code, "
             "options, machine); `--no-reuse` recomputes them. Throughput is always measured now.", ""]  # fmt: skip
    lines += [f"- {r.line()}" for r in outcome.reused]
    return "\n".join(lines) + "\n"


def _triage(outcome: RunOutcome) -> None:
    """The new build's failures grouped by cause, the known failures judged against them: one problem per cause
    that is not known, one per known failure that is fixed (remove it from the baseline)."""
    from verify.report import attach_triage

    triage = attach_triage(outcome.verification, outcome.known_failures)
    for cause in triage.open_causes():
        names = [n for n in cause.checks if n not in triage.known_checks()]
        where = f" at {cause.signature.where}" if cause.signature.where else ""
        notes = "".join(f"; {note}" for n in names if (note := triage.note(n)))
        outcome.problems.append(f"{len(names)} check(s) fail on the new build, one cause ({cause.id}){where}: "
                                f"{cause.title()}: {', '.join(names)}{notes}")  # fmt: skip
    for verdict in triage.fixed():
        outcome.problems.append(f"known failure fixed: {verdict.entry.label()} {verdict.now}: remove it from the "
                                f"baseline ({verdict.entry.source})")  # fmt: skip


def known_failures(request: RunRequest, src: Path, config: ConsumerConfig) -> list[KnownFailure]:
    """The consumer's known failures: `[verify] known_failures`, `[verify] baseline`, `--known-failures FILE`."""
    from verify.baseline import load_known
    from verify.checks import ALL_CHECKS

    try:
        return load_known(config.verify, src, request.known_failures, ALL_CHECKS)
    except ToolError as exc:
        raise UsageError(str(exc)) from exc


def _target_contract(outcome: RunOutcome) -> Contract | None:
    from verify.contract import find_contract

    tree = outcome.trees["to"]
    return find_contract(tree.requested) or find_contract(tree.provided)


def _traced_build(outcome: RunOutcome, role: str, options: BuildOptions, cache: str | None,
                  stages: Stages) -> BuildResult | None:  # fmt: skip
    """The original (`from`) or the migrated copy (`to`) built with the call tracer (a separate cached build)."""
    tree = outcome.trees[role]
    src = outcome.src if role == "from" else outcome.migrated
    stages.say(f"build: {'original' if role == 'from' else 'migrated'} shim traced against {tree.provided} ...")
    result = build(src, tree, dataclasses.replace(options, traced=True, sanitize=()), cache=cache)
    if not result.ok:
        where = f" (log {result.log_path})" if result.log_path else ""
        outcome.problems.append(f"the traced build at {tree.provided} failed{where}: "
                                f"{result.errors[0] if result.errors else result.stage}")  # fmt: skip
        return None
    return result


def _applied(outcome: RunOutcome, rule: str) -> bool:
    plan = outcome.plan
    return plan is not None and any(rule in edit.rules for edit in plan.edits)


def _predict(outcome: RunOutcome, config: ConsumerConfig, model: Path, n_gpu_layers: int, options: BuildOptions,
             cache: str | None, stages: Stages, names: list[str] | None,
             eog_model: Path | None = None, jobs: int = 1) -> None:  # fmt: skip
    """The original, built traced at --from, runs the checklist; its llama.cpp calls are replayed against the --to
    release's run-time contract (contracts/<version>.yaml). A rule the plan applied that removes a cause (kv-unified)
    is assumed, and what it remedies is listed apart. Needs no build of the new version."""
    from verify.cli import make_prediction, make_target, run_verification
    from verify.contract import CONSEQUENCES, Assume
    from verify.session import Options

    contract = _target_contract(outcome)
    if contract is None:
        stages.say(f"predict: no run-time contract for {outcome.trees['to'].requested}: skipped")
        return
    traced = _traced_build(outcome, "from", options, cache, stages)
    if traced is None:
        return
    target = make_target("old", traced.library, _header(outcome, outcome.src), model, outcome.trees["from"].path,
                         verify=config.verify, config_root=outcome.src)  # fmt: skip
    run_options = Options(n_gpu_layers=n_gpu_layers, normalise=config.normalise, contract=contract.version,
                          trace_dir=str(outcome.migrated.parent / "traces"), eog_model=str(eog_model or ""),
                          jobs=jobs)  # fmt: skip
    if config.tie_margin is not None:
        run_options.tie_margin = config.tie_margin
    assume = Assume(kv_unified=True) if _applied(outcome, "kv-unified") else Assume()
    inputs = check_inputs(ReusedStage.PREDICTION, target, run_options, names, outcome.trees["from"].commit,
                          {"contract": contract.version, "assume": assume.to_json()})  # fmt: skip
    prediction = _served(outcome, inputs)
    if prediction is not None:
        stages.say(f"predict: {outcome.reused[-1].line()}")
    else:
        stages.say(f"predict: the original's calls against the {contract.version} contract ...")
        report = run_verification([target], run_options, names)
        prediction = make_prediction(report, "old", contract.version, assume)
        if not prediction.errors:  # a trace that could not be read is not kept
            _keep(outcome, inputs, prediction, report.results["old"])
    outcome.prediction = prediction
    stages.say(f"predict: {len(prediction.breaks())} run-time break(s) at {contract.version}, "
               f"{len(prediction.remedied)} remedied by the plan ({prediction.calls} calls traced)")  # fmt: skip
    for g in prediction.breaks():
        outcome.problems.append(f"predicted run-time break at {contract.version}: {g.line()}: "
                                f"{CONSEQUENCES[g.consequence]}")  # fmt: skip


def _explain_failures(outcome: RunOutcome, model: Path, options: BuildOptions, cache: str | None,
                      stages: Stages) -> None:  # fmt: skip
    """Checks that fail on the new build run again on a traced build of the migrated copy: each then names the
    first call that breaks the target's run-time contract before the failure (evidence, message, report)."""
    from verify.contract import Violation, break_note
    from verify.runner import run_checks
    from verify.session import Target

    diff = outcome.verification.differential if outcome.verification is not None else None
    failed = [c for c in diff.comparisons if c.new is not None and c.new.status == CheckStatus.FAILED] if diff else []
    contract = _target_contract(outcome)
    if not failed or contract is None:
        return
    traced = _traced_build(outcome, "to", options, cache, stages)
    if traced is None:
        return
    new = outcome.verification.differential.new
    target = Target(Path(traced.library), new.header, model, "new", new.llama_tree, new.verify, new.config_root)
    # the verification's own options (model for the stop checks, normalisation), traced
    run_options = dataclasses.replace(outcome.verification.options, contract=contract.version,
                                      trace_dir=str(outcome.migrated.parent / "traces"))  # fmt: skip
    stages.say(f"explain: {len(failed)} failed check(s) again, traced ...")
    for comparison, rerun in zip(failed, run_checks(target, run_options, [c.name for c in failed]), strict=True):
        if "trace" in rerun.evidence:
            comparison.new.evidence["trace"] = rerun.evidence["trace"] | {"rerun_status": rerun.status}
        if "contract" not in rerun.evidence:
            continue
        comparison.new.evidence["contract"] = rerun.evidence["contract"]
        first = rerun.evidence["contract"].get("first_break")
        if first:
            note = break_note(contract.version, Violation(**first))
            comparison.new.message = f"{comparison.new.message} {note}".strip()
            prefix = f"check {comparison.name} fails on the new build"
            outcome.problems = [f"{p} {note}" if p.startswith(prefix) else p for p in outcome.problems]


def _bind_early(src: Path, config: ConsumerConfig, llama_tree: Path) -> None:
    """Bind the consumer's C API to the checklist's operations before anything is built: a header that cannot
    be found or bound is a usage error now (with the config lines to add), not a failed check in minutes."""
    from verify.bindings import find_header
    from verify.session import Target, bind

    header = src / config.header if config.header else find_header(src)
    bind(Target(Path("-"), header, Path("-"), "old", llama_tree, dict(config.verify), src))


def _header(outcome: RunOutcome, root: Path) -> str | None:
    from verify.bindings import find_header

    if outcome.header:
        return str(root / outcome.header)
    return str(find_header(root))


def _report(outcome: RunOutcome, out: Path, name: str, verdict: str | None = None) -> Path:
    from migrate.report import render_report
    from verify.report import markdown_section

    sections = [_builds_section(outcome), _reused_section(outcome), outcome.xref_markdown]
    if outcome.verification is not None:
        sections.append(markdown_section(outcome.verification))
    elif outcome.prediction is not None:  # the migrated copy did not build: the prediction still stands
        sections.append(_prediction_section(outcome))
    if outcome.prediction is not None:
        sections.append(_advisories_section(outcome))
    # the verdict opens the report (what needs a human, failures by cause); the listings follow
    text = render_report(outcome.plan, title=name, sections=sections, mode="run: plan, apply, build, verify",
                         builds=run_builds(outcome), verdict=verdict or _verdict_section(outcome))  # fmt: skip
    path = out / f"{name}-{outcome.trees['from'].requested}-{outcome.trees['to'].requested}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(portable_paths(text, outcome), encoding="utf-8")
    return path


def run_builds(outcome: RunOutcome) -> list[dict[str, Any]]:
    """The llama.cpp trees of the run, as the report's and the plan JSON's `builds`: the run's own two (a step's end
    the plan also resolved is not built), kept beside the plan rather than written into it."""
    return [{"role": role, **tree.describe()} for role, tree in outcome.trees.items()]


def _prediction_section(outcome: RunOutcome) -> str:
    from verify.report import prediction_lines

    return "\n".join(["## Run-time contract", "", *prediction_lines(outcome.prediction)]) + "\n"


# the contract clauses a static advisory (migrate/rewrite/advisories.py) anticipates, by advisory rule
ADVISORY_CLAUSES = {"sequence-ids": ("seq-id-range", "batch-seq-id-range"), "held-position": ("positions-continue",),
                    "per-sequence-context": ("per-sequence-capacity",)}  # fmt: skip


def _advisory_clauses(advisory: Any) -> tuple[str, ...]:
    if advisory.rule in ADVISORY_CLAUSES:
        return ADVISORY_CLAUSES[advisory.rule]
    if "seq_cp" in advisory.message and "partial-range" in advisory.message:
        return ("seq-cp-partial",)
    if "sequence id" in advisory.message:
        return ("seq-id-range",)
    return ()


def _advisories_section(outcome: RunOutcome) -> str:
    """Each static advisory beside what the traced run showed: confirmed (its clause broken at its line, or in its
    file for advisories on a batch or n_ctx line), exercised without a break, or not exercised by the checklist."""
    plan, prediction = outcome.plan, outcome.prediction
    advisories = sorted(plan.advisories, key=lambda a: (a.file, a.line)) if plan is not None else []
    advisories = [a for a in advisories if _advisory_clauses(a) or "seq_cp" in a.message]
    groups = prediction.groups + prediction.remedied
    anticipated = {f"{a.file}:{a.line}" for a in advisories}
    unseen = [g for g in prediction.breaks() if g.where not in anticipated]
    if not advisories and not unseen:
        return ""
    lines = ["### Static advisories against the trace", ""]
    if unseen:
        lines += ["Breaks the trace found where no static advisory pointed: " + "; ".join(
            f"`{g.where}` ({g.clause})" for g in unseen) + ".", ""]  # fmt: skip
    if not advisories:
        return "\n".join(lines) + "\n"
    lines += ["| advisory | where | what the traced run of the original showed |", "| --- | --- | --- |"]
    for advisory in advisories:
        where = f"{advisory.file}:{advisory.line}"
        clauses = _advisory_clauses(advisory)
        at_line = [g for g in groups if g.clause in clauses and g.where == where]
        in_file = [g for g in groups if g.clause in clauses and (g.where or "").startswith(f"{advisory.file}:")]
        calls = prediction.call_sites.get(where, 0)
        if at_line or (in_file and not calls):
            g = (at_line or in_file)[0]
            seen = f"confirmed: {g.clause} broken at `{g.where}` ({g.count} call(s)): {g.first.call}"
        elif calls:
            seen = f"exercised ({calls} call(s) traced here), no break of {', '.join(clauses) or 'a clause'} seen"
        else:
            seen = ("no traced call at this line: not exercised by the checklist, or a line that only builds the "
                    "batch" + (f"; no break of {', '.join(clauses)} seen in the file" if clauses else ""))  # fmt: skip
        lines.append(f"| {advisory.rule} | `{where}` | {seen} |")
    return "\n".join(lines) + "\n"


def portable_paths(text: str, outcome: RunOutcome) -> str:
    """The report goes into pull requests and a committed example: paths relative to the consumer tree (original
    or migrated copy, same layout) and the home folder as `~`, not this machine's absolute paths."""
    for root in (outcome.migrated, outcome.src):  # the copy lives in the cache: replace it first
        text = text.replace(f"{root}{os.sep}", "").replace(str(root), ".")
    home = str(Path.home())
    return text.replace(f"{home}{os.sep}", f"~{os.sep}") if home != os.sep else text


def _builds_section(outcome: RunOutcome) -> str:
    lines = ["## Builds", "",
             "| shim | llama.cpp requested | provided | commit | source | libraries | result | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for role, result in outcome.builds.items():
        tree = outcome.trees[role]
        shim = "original" if role == "from" else "migrated"
        status = "ok" if result.ok else f"FAILED ({len(result.errors)} errors)"
        lines.append(f"| {shim} | {tree.requested} | {tree.provided}{' (stand-in)' if tree.substituted else ''} | "
                     f"`{tree.commit[:12]}` | {tree.source} | {_libraries_cell(result)} | {status} | "
                     f"{result.seconds:.1f} |")  # fmt: skip
    if any(result.prebuilt for result in outcome.builds.values()):
        lines += ["", "Prebuilt libraries load their CPU backend at run time (one of the package's libggml-cpu-*.so "
                  "variants, the best for this CPU): the harness calls `ggml_backend_load_all_from_path` on the "
                  "package's folder in every process before the model load, which the consumer itself never does."]
    for role, result in outcome.builds.items():
        if result.errors:
            lines += ["", f"First errors against {outcome.trees[role].provided}:", "", "```"]
            lines += [str(e) for e in result.errors[:20]] + ["```"]
    return "\n".join(lines) + "\n"


def _libraries_cell(result: BuildResult) -> str:
    """Where llama.cpp's libraries came from: compiled from the tree, or which package's prebuilt binaries."""
    if not result.prebuilt:
        return "compiled from source"
    libraries = ", ".join(str(name) for name in result.prebuilt.get("libraries", []))
    common = "" if result.prebuilt.get("common") == "prebuilt" else "; common compiled from the tree"
    return f"prebuilt {result.prebuilt['package']} ({libraries}){common}"


def _verdict_section(outcome: RunOutcome) -> str:
    lines = ["## Verdict", ""]
    triage = outcome.verification.triage if outcome.verification is not None else None
    if not outcome.problems:
        known = " (or is a known failure, failing the same way)" if triage is not None and triage.causes else ""
        lines.append(f"Nothing needs a human: migrated, built, and every check passed on the new build{known}.")
        if triage is not None and (triage.causes or triage.verdicts):
            from verify.report import triage_lines

            lines += ["", *triage_lines(triage)]
        return "\n".join(lines) + "\n"
    lines.append(f"{len(outcome.problems)} thing(s) need a human:")
    lines.append("")
    lines += [f"- {p}" for p in outcome.problems]
    if triage is not None and (triage.causes or triage.verdicts):
        from verify.report import triage_lines

        lines += ["", *triage_lines(triage)]
    return "\n".join(lines) + "\n"


def _write_json(outcome: RunOutcome, path: Path, exit_code: int | None = None,
                extra: dict[str, Any] | None = None) -> None:  # fmt: skip
    data = {
        "src": str(outcome.src),
        "migrated": str(outcome.migrated),
        "trees": {role: tree.describe() for role, tree in outcome.trees.items()},
        "plan": {**outcome.plan.to_json(), "builds": run_builds(outcome)} if outcome.plan else None,
        "builds": {role: {k: v for k, v in b.to_json().items() if k != "log"} for role, b in outcome.builds.items()},
        "verification": outcome.verification.to_json() if outcome.verification else None,
        "prediction": outcome.prediction.to_json() if outcome.prediction is not None else None,
        "stage_seconds": outcome.stage_seconds,
        "reused": [r.to_json() for r in outcome.reused],
        "problems": outcome.problems,
        "exit_code": outcome.exit_code() if exit_code is None else exit_code,
        **(extra or {}),
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def run(request: RunRequest) -> int:
    console = Console(stderr=True, quiet=request.quiet)
    stages = Stages(console, request.quiet)
    try:
        src, config = load_consumer(request)
        outcome = execute(request, src, config, console, stages)
    except UsageError as exc:
        usage_error(exc)
        return ExitCode.USAGE
    report = write_outputs(outcome, request)
    _print_verdict(outcome, report, console)
    return outcome.exit_code()


def usage_error(exc: Exception) -> None:
    """Always shown: --quiet silences progress, never the reason for exit 2 (a quiet console would drop it). One
    line, `migrate run: ...` / `migrate gate: ...`, as every command prints bad input."""
    from migrate.cli import error_line

    Console(stderr=True, soft_wrap=True).print(error_line(exc), style="bold red", highlight=False, markup=False)


def consumer_src(value: str | None) -> Path:
    """SRC: None is the bundled fixture; "" is refused (an unset "$SRC" must not verify something else)."""
    if value is None:
        return DEFAULT_SRC
    from verify.inputs import PathKind, existing_path, tree_links

    try:
        src = existing_path("SRC", value, PathKind.ANY, "give the consumer's tree", noun="file or directory")
        if src.is_dir():
            tree_links("SRC", src, (".git", "__pycache__"))  # copied with symlinks followed: a loop would hang
    except ToolError as exc:
        raise UsageError(str(exc)) from exc
    return src.resolve()


def check_run_outputs(request: RunRequest) -> None:
    """--json, --junit and --out, proved writable before anything is built."""
    from verify.inputs import output_dir, output_file

    output_file("--json", request.json_path)
    output_file("--junit", request.junit_path)
    output_dir("--out", request.out)


def load_consumer(request: RunRequest) -> tuple[Path, ConsumerConfig]:
    """The consumer tree and its config with the command-line flags over it; the paths it will write checked."""
    src = consumer_src(request.src)
    try:
        check_run_outputs(request)
        config = load_config(src).override(enable=list(request.enable), options=list(request.options),
                                           model=request.model)  # fmt: skip
        if request.header:
            header = Path(request.header)
            if not (header if header.is_absolute() else src / header).is_file():
                raise UsageError(f"--header {request.header}: no such file (relative to {src} or absolute)")
            if header.is_absolute() and header.resolve().is_relative_to(src):
                header = header.resolve().relative_to(src)  # the migrated copy has its own copy of it
            config = dataclasses.replace(config, header=str(header))
        if config.model:
            config.model_path(request.cache)  # a model that is no GGUF is refused before anything is built
        return src, config
    except ToolError as exc:
        raise UsageError(str(exc)) from exc


def execute(request: RunRequest, src: Path, config: ConsumerConfig, console: Console,
            stages: Stages) -> RunOutcome:  # fmt: skip
    """sources → plan → apply to a copy → build both → verify: what `run` and `gate` share. Raises UsageError."""
    names = list(request.checks) if request.checks is not None else None
    cache = request.cache
    if request.tests:  # --tests: the consumer's own pytest checks, beside the config's [verify] tests
        from verify.cli import with_tests_option

        config = dataclasses.replace(config, verify=with_tests_option(config.verify, request.tests))
    try:
        trees = _resolve_trees(config, request.from_version, request.to_version, cache, stages)
    except (ToolError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    _bind_early(src, config, trees["from"].path)
    known = known_failures(request, src, config)  # a bad entry is a usage error now, not after the builds
    # pid too: two runs on the same tree within a second (CI matrix, tests) must not share a copy
    runs = cache_root(cache) / "runs"
    _prune_old_runs(runs)
    work = runs / f"{src.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    migrated = work / src.name
    shutil.copytree(src, migrated, ignore=COPY_IGNORE)
    outcome = RunOutcome(src=src, migrated=migrated, trees=trees, header=config.header, known_failures=known)
    outcome.reuse, outcome.cache = request.reuse and reuse_enabled(), cache
    timed = _timer(outcome)
    try:
        with timed("plan+apply"):
            mined = config.mined_rules and request.mined  # --no-mined over the config's mined_rules
            _plan_and_apply(outcome, dataclasses.replace(config, mined_rules=mined), cache, stages)
        with timed("build"):
            options = request.build_options()
            if options.sanitize and _sanitizers_unavailable(options.sanitize):  # every check skips, saying why
                options = dataclasses.replace(options, sanitize=())
            _build_both(outcome, options, cache, stages)
        if outcome.builds["from"].ok and request.predict:
            with timed("model"):
                from migrate.model import ensure_model

                model = config.model_path(cache)
                stop_model = ensure_model("tiny", cache=cache, eog=True)
            with timed("predict"):  # needs only the original: runs even when the migrated copy does not build
                _predict(outcome, config, model, request.n_gpu_layers, options, cache, stages, names, stop_model,
                         request.verify_jobs())  # fmt: skip
        if all(b.ok for b in outcome.builds.values()):
            with timed("model"):
                model = config.model_path(cache)
                from migrate.model import ensure_model

                stop_model = ensure_model("tiny", cache=cache, eog=True)  # the stop checks' model
                timing_model = _throughput_model(config, names, cache)
            stages.say(f"verify: old build vs new build on {model.name} ...")
            with timed("verify"):
                _verify_both(outcome, config, model, request.n_gpu_layers, None if request.quiet else console, names,
                             stop_model, request.verify_jobs(), timing_model, request.sanitize)  # fmt: skip
            with timed("explain"):
                _explain_failures(outcome, model, options, cache, stages)
            _triage(outcome)
            if outcome.prediction is not None:
                outcome.verification.prediction = outcome.prediction  # JSON, JUnit and the report carry it
        else:
            outcome.problems.append("verification skipped: a build failed")
    except UsageError:
        raise
    except ToolError as exc:  # a rule id, no rules for the step, a syntax error, apply refused, a binding problem
        raise UsageError(str(exc)) from exc
    return outcome


def write_outputs(outcome: RunOutcome, request: RunRequest, verdict: str | None = None,
                  exit_code: int | None = None, extra_json: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """The markdown report, and JSON / JUnit when asked for; returns the report's path. `verdict` (markdown)
    replaces the run's own verdict section, `exit_code` and `extra_json` the run's in the JSON (the gate's)."""
    report = _report(outcome, report_dir(request), outcome.src.name, verdict)
    if request.json_path:
        _write_json(outcome, Path(request.json_path), exit_code, extra_json)
    if request.junit_path and outcome.verification is not None:
        from verify.report import write_junit

        write_junit(outcome.verification, Path(request.junit_path))
    return report


def report_dir(request: RunRequest) -> Path:
    """--out, else `<cache>/reports`: never the current directory, which may be anybody's (or read-only)."""
    return Path(request.out) if request.out else cache_root(request.cache) / "reports"


def _timer(outcome: RunOutcome):  # noqa: ANN202 - a tiny context-manager factory
    from contextlib import contextmanager

    @contextmanager
    def timed(stage: str):  # noqa: ANN202
        started = time.monotonic()
        try:
            yield
        finally:
            outcome.stage_seconds[stage] = round(time.monotonic() - started, 2)

    return timed


def _print_verdict(outcome: RunOutcome, report: Path, console: Console) -> None:
    print(report)
    if outcome.problems:
        print(f"NEEDS A HUMAN: {len(outcome.problems)} problem(s); first: {outcome.problems[0]}", file=sys.stderr)
    else:
        print("OK: migrated, built at both versions, every check passed on the new build", file=sys.stderr)
    triage = outcome.verification.triage if outcome.verification is not None else None
    if triage is not None and (triage.causes or triage.verdicts):
        print(f"checks: {triage.headline()}", file=sys.stderr)  # e.g. 14 failing checks, 2 causes (5 known)


def _sanitizers_unavailable(kinds: tuple[str, ...]) -> str:
    from verify.sanitize import unavailable

    return unavailable(kinds)
