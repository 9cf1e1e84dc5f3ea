"""`migrate mutate SRC`: how many small bugs planted in the consumer's shim the checklist catches (mutation score).

Mutants are made from the shim's libclang parse (verify/mutate.py: comparison operators swapped, ±1 on constants
and on position/length arithmetic, a llama.cpp memory/sequence call deleted, an assignment to a params field
dropped, a break/return removed in a generation loop, same-type arguments swapped), in the functions the C API's
bound operations reach. The unmutated shim is built and checked first: only checks that pass on it can kill. Then
each mutant is built (the shim alone, llama.cpp's libraries reused; one copy of the consumer per job) and the
checklist runs on it, each check in its own child process, until a check fails (killed); a mutant that runs the
whole checklist unnoticed survives and is listed with file:line, the mutation and the nearest check. Mutants that
do not compile are counted apart; a mutant whose library is byte-identical to the unmutated one is equivalent, and
the consumer marks others equivalent in llama-migrate.toml:

    mutants = [{ id = "custom_files/x.cpp:available_memory:*", reason = "reached only with check_memory" }]

Exit codes: 0 done (score at or above --min-score, when given); 1 the score is below --min-score; 2 bad input
(no shim, a C API that cannot be bound, the unmutated shim does not build).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.build import build, find_shim_sources
from migrate.config import DEFAULT_FROM, load_config
from migrate.exit_codes import MutateExit
from migrate.model import ensure_model
from migrate.paths import cache_root
from migrate.sources import resolve
from verify import mutate, usertests
from verify.bindings import find_header
from verify.checks import PASSED, checklist
from verify.cli import with_tests_option
from verify.errors import ToolError, comma_names
from verify.inputs import output_file
from verify.runner import run_checks
from verify.session import Options, Target, bind

DEFAULT_TIMEOUT = 30.0


class MutateUsage(ToolError):
    pass


@dataclass(frozen=True)
class MutateRequest:
    """What one `migrate mutate` was asked to do: its command line, typed (migrate/cli/mutate.py makes it)."""

    src: str  # the consumer's source tree
    from_version: str = DEFAULT_FROM  # the llama.cpp release the shim targets
    max_mutants: int | None = None  # a seeded random sample of this many; None: all
    seed: int = 0
    jobs: int = 1  # mutants built and checked at once
    kinds: str | None = None  # comma-separated operators as given; None: all
    only: str | None = None  # comma-separated mutant ids or globs as given; None: every mutant
    all_functions: bool = False  # every function of the shim, not only those the bound operations reach
    checks: str | None = None  # comma-separated checks as given; None: the whole checklist
    tests: tuple[str, ...] = ()  # the consumer's own pytest checks, besides the config's [verify] tests
    timeout: float = DEFAULT_TIMEOUT  # seconds per check on a mutant
    header: str | None = None  # relative to src; None: the config's, else found
    model: str | None = None
    eog_model: str | None = None
    json_path: str | None = None
    out: str | None = None  # the markdown report's folder; None: <cache>/reports
    min_score: float | None = None  # percent
    list_mutants: bool = False  # list them and stop (nothing built)
    malloc_check: bool = True  # glibc's heap checks where its malloc debug library is installed
    rescore: str | None = None  # an earlier run's --json to apply the config's current marks to
    quiet: bool = False
    cache: str | None = None
    command: str = ""  # the command line, for the report


def run_mutation(request: MutateRequest) -> int:
    from migrate.rewrite.parse import ParseConfig

    started = time.monotonic()
    if not request.src.strip():  # an unset "$SRC": never the current folder
        raise MutateUsage("SRC '': an empty path; give the consumer's source tree")
    output_file("--json", request.json_path)
    src = Path(request.src).resolve()
    if not src.is_dir():
        raise MutateUsage(f"{request.src}: not a consumer source tree (a folder)")
    config = load_config(src)
    if request.rescore:
        return _rescore(request, src, config)
    kinds = comma_names(request.kinds, tuple(mutate.KINDS), "operator(s)", MutateUsage) or tuple(mutate.KINDS)
    if request.jobs < 1 or (request.max_mutants is not None and request.max_mutants < 1):
        raise MutateUsage("--jobs and --max take a positive number")
    tree = resolve(request.from_version, cache=request.cache)
    sources = find_shim_sources(src)
    header = src / (request.header or config.header) if (request.header or config.header) else find_header(src, sources)
    model = Path(request.model) if request.model else config.model_path(request.cache)
    eog = Path(request.eog_model) if request.eog_model else ensure_model("tiny", cache=request.cache, eog=True)
    target = Target(Path("unbuilt"), header, model, "mutant", tree.path, dict(config.verify), src)
    binding = bind(target)
    functions_by_op = {op: ob.function.name for op, ob in binding.ops.items()}
    files = {s: str(s.relative_to(src)) for s in sources}
    flags = ParseConfig(tree.path, src).flags_for
    found = mutate.make_mutants(files, flags, functions_by_op, kinds, everything=request.all_functions)
    if request.only:
        found.mutants = [m for m in found.mutants if any(fnmatch.fnmatchcase(m.id, g) for g in request.only.split(","))]
        if not found.mutants:
            raise MutateUsage(f"--only {request.only}: no mutant of this shim matches (see --list for the ids)")
    chosen = mutate.sample(found.mutants, request.max_mutants, request.seed)
    say = (lambda text: None) if request.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    say(f"{len(found.mutants)} mutants in {sum(len(v) for v in found.reached.values())} reached functions of "
        f"{', '.join(files.values())}; running {len(chosen)}")  # fmt: skip
    if request.list_mutants:
        for m in chosen:
            print(f"{m.location()}\t{m.kind}\t{m.description}\t{m.id}")
        return MutateExit.OK

    # the unmutated shim: its checks are the ones a mutant can fail
    baseline_build = build(src, tree, cache=request.cache)
    if not baseline_build.ok or baseline_build.library is None:
        raise MutateUsage("the unmutated shim does not build: " + "; ".join(map(str, baseline_build.errors[:3])))
    names = list(comma_names(request.checks, checklist(0), "check(s)", MutateUsage) or checklist(0))
    options = Options(timeout=max(request.timeout, 60.0), eog_model=str(eog))
    base_target = Target(Path(baseline_build.library), header, model, "unmutated", tree.path,
                         with_tests_option(dict(config.verify), request.tests), src)  # fmt: skip
    # the consumer's own pytest checks ([verify] tests, --tests) kill mutants as the checklist's checks do
    names += usertests.names(base_target, options)
    env = mutate.malloc_check_env() if request.malloc_check else None
    say(f"unmutated build: running {len(names)} checks{' (glibc heap checks on)' if env else ''} ...")
    baseline = run_checks(base_target, options, names, env=env)
    passing = [r.name for r in baseline if r.status == PASSED]
    say(f"unmutated build: {len(passing)}/{len(names)} checks pass; only those can kill a mutant")
    options.timeout = request.timeout

    work = cache_root(request.cache) / "mutants" / f"{src.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"

    def build_copy(copy: Path) -> mutate.BuildOutcome:
        result = build(copy, tree, sources=[copy / rel for rel in files.values()], cache=request.cache)
        errors = [str(e) for e in result.errors] or ([] if result.ok else [result.log.strip()[-300:]])
        library = Path(result.library) if result.ok and result.library else None
        return mutate.BuildOutcome(library, errors, result.seconds)

    def progress(result: mutate.MutantResult, done: int, total: int) -> None:
        where = f"{result.mutant.location()} {result.mutant.kind}: {result.mutant.description}"
        by = f" by {result.check}" if result.check else ""
        say(f"[{done}/{total}] {result.status}{by} ({result.seconds:.0f} s) {where}")

    source_lines = {rel: path.read_text(encoding="utf-8", errors="replace").splitlines() for path, rel in
                    files.items()}  # fmt: skip

    def line_of(m: mutate.Mutant) -> str:
        lines = source_lines.get(m.file, [])
        return lines[m.line - 1] if 0 < m.line <= len(lines) else ""

    plan = mutate.Plan(src, target, options, passing, chosen, mutate.equivalents(list(config.mutants)),
                       found.operations_of, work, request.jobs, progress, env)  # fmt: skip
    previous = signal.signal(signal.SIGTERM, _terminate)  # so that the copies below are removed
    try:
        results = mutate.run_mutants(plan, build_copy, line_of)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work, ignore_errors=True)
    report = mutate.MutationReport(
        consumer=src.name, llama=f"{tree.provided} (for {request.from_version})", generated=len(found.mutants),
        results=results, reached=found.reached, not_reached=found.not_reached, baseline=baseline,
        seconds=time.monotonic() - started, command=request.command, sampled=len(chosen) < len(found.mutants),
        seed=request.seed, notes=[f"libclang could not parse (the parse went on): {p}" for p in found.problems]
        + [f"checks ran with glibc's heap checks ({', '.join(f'{k}={v}' for k, v in env.items())})" if env else
           "checks ran without glibc's heap checks (--no-malloc-check, or glibc's malloc debug library not found)"],
    )  # fmt: skip
    return _finish(request, src, report, f"{src.name}-mutants-{tree.provided}.md", say)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _rescore(request: MutateRequest, src: Path, config: Any) -> int:
    previous = Path(request.rescore)
    try:
        data = json.loads(previous.read_text())
    except (OSError, ValueError) as exc:
        raise MutateUsage(f"{previous}: not a `migrate mutate --json` file ({exc})") from exc
    report, wrong = mutate.rescore(data, mutate.equivalents(list(config.mutants)))
    report.notes += [f"rescored from {previous.name} with the `mutants` marks of {config.source}"] + \
        [f"wrong mark: {w}" for w in wrong]  # fmt: skip
    say = (lambda text: None) if request.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    for w in wrong:
        say(f"wrong mark: {w}")
    return _finish(request, src, report, f"{src.name}-mutants-rescored.md", say)


def _finish(request: MutateRequest, src: Path, report: mutate.MutationReport, name: str,
            say: Any) -> int:  # fmt: skip
    out = Path(request.out) if request.out else cache_root(request.cache) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(mutate.markdown(report))
    if request.json_path:
        mutate.write_json(report, Path(request.json_path))
    print(path)
    score = report.score
    say(f"mutation score: {'n/a' if score is None else f'{100 * score:.1f} %'} ({report.count(mutate.KILLED)} "
        f"killed of {report.scored}; {report.count(mutate.SURVIVED)} survived, {report.count(mutate.NOT_COMPILED)} "
        f"did not compile, {report.count(mutate.IDENTICAL) + report.count(mutate.EQUIVALENT)} equivalent) "
        f"in {report.seconds:.0f} s")  # fmt: skip
    if request.min_score is not None and (score is None or 100 * score < request.min_score):
        return MutateExit.BELOW_MIN_SCORE
    return MutateExit.OK
