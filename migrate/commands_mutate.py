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

import argparse
import fnmatch
import json
import os
import shlex
import shutil
import signal
import sys
import time
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
from verify.cli import add_tests_argument, with_tests_option
from verify.errors import ToolError, comma_names
from verify.inputs import output_file
from verify.runner import run_checks
from verify.session import Options, Target, bind

DEFAULT_TIMEOUT = 30.0


class MutateUsage(ToolError):
    pass


def register(subparsers: argparse._SubParsersAction) -> None:
    from migrate.cli import add_command

    parser = add_command(subparsers, "mutate", "mutation score of a consumer's shim under the checklist", __doc__,
                         cmd_mutate)  # fmt: skip
    parser.add_argument("src", help="consumer source tree")
    parser.add_argument("--from", dest="from_version", default=DEFAULT_FROM, help="llama.cpp release the shim targets")
    parser.add_argument("--max", type=int, help="run a seeded random sample of N mutants (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max sample (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants built and checked at once (default 1)")
    parser.add_argument("--kinds", help=f"comma-separated operators (default all): {', '.join(mutate.KINDS)}")
    parser.add_argument("--only", help="comma-separated mutant ids or globs over them (as --list prints): run only "
                        "those, e.g. the survivors of an earlier run after a check was improved")
    parser.add_argument("--all-functions", action="store_true",
                        help="mutate every function of the shim, not only those the bound operations reach")
    parser.add_argument("--checks", help="comma-separated checks to run (default: the whole checklist)")
    add_tests_argument(parser)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds per check on a mutant before it is a hang (default {DEFAULT_TIMEOUT:.0f})")
    parser.add_argument("--header", help="the C API header, relative to SRC (default: config `header`, else found)")
    parser.add_argument("--model", help="GGUF model (default: the generated tiny model)")
    parser.add_argument("--eog-model", help="stop model (default: the generated one, `migrate model --eog`)")
    parser.add_argument("--json", help="write every mutant and its outcome as JSON")
    parser.add_argument("--out", help="folder for the markdown report (default: <cache>/reports)")
    parser.add_argument("--min-score", type=float, help="exit 1 when the score (percent) is below this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit (nothing built)")
    parser.add_argument("--no-malloc-check", action="store_true",
                        help="run the checks without glibc's heap checks (default: on where glibc's malloc debug "
                        "library is installed: a write past an allocation aborts the check instead of passing)")
    parser.add_argument("--rescore", metavar="JSON",
                        help="apply the config's current `mutants` marks to an earlier run's --json (nothing built)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def cmd_mutate(args: argparse.Namespace) -> int:
    from migrate.rewrite.parse import ParseConfig

    started = time.monotonic()
    if not args.src.strip():  # an unset "$SRC": never the current folder
        raise MutateUsage("SRC '': an empty path; give the consumer's source tree")
    output_file("--json", args.json)
    src = Path(args.src).resolve()
    if not src.is_dir():
        raise MutateUsage(f"{args.src}: not a consumer source tree (a folder)")
    config = load_config(src)
    if args.rescore:
        return _rescore(args, src, config)
    kinds = comma_names(args.kinds, tuple(mutate.KINDS), "operator(s)", MutateUsage) or tuple(mutate.KINDS)
    if args.jobs < 1 or (args.max is not None and args.max < 1):
        raise MutateUsage("--jobs and --max take a positive number")
    tree = resolve(args.from_version, cache=args.cache)
    sources = find_shim_sources(src)
    header = src / (args.header or config.header) if (args.header or config.header) else find_header(src, sources)
    model = Path(args.model) if args.model else config.model_path(args.cache)
    eog = Path(args.eog_model) if args.eog_model else ensure_model("tiny", cache=args.cache, eog=True)
    target = Target(Path("unbuilt"), header, model, "mutant", tree.path, dict(config.verify), src)
    binding = bind(target)
    functions_by_op = {op: ob.function.name for op, ob in binding.ops.items()}
    files = {s: str(s.relative_to(src)) for s in sources}
    flags = ParseConfig(tree.path, src).flags_for
    found = mutate.make_mutants(files, flags, functions_by_op, kinds, everything=args.all_functions)
    if args.only:
        found.mutants = [m for m in found.mutants if any(fnmatch.fnmatchcase(m.id, g) for g in args.only.split(","))]
        if not found.mutants:
            raise MutateUsage(f"--only {args.only}: no mutant of this shim matches (see --list for the ids)")
    chosen = mutate.sample(found.mutants, args.max, args.seed)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    say(f"{len(found.mutants)} mutants in {sum(len(v) for v in found.reached.values())} reached functions of "
        f"{', '.join(files.values())}; running {len(chosen)}")  # fmt: skip
    if args.list:
        for m in chosen:
            print(f"{m.location()}\t{m.kind}\t{m.description}\t{m.id}")
        return MutateExit.OK

    # the unmutated shim: its checks are the ones a mutant can fail
    baseline_build = build(src, tree, cache=args.cache)
    if not baseline_build.ok or baseline_build.library is None:
        raise MutateUsage("the unmutated shim does not build: " + "; ".join(map(str, baseline_build.errors[:3])))
    names = list(comma_names(args.checks, checklist(0), "check(s)", MutateUsage) or checklist(0))
    options = Options(timeout=max(args.timeout, 60.0), eog_model=str(eog))
    base_target = Target(Path(baseline_build.library), header, model, "unmutated", tree.path,
                         with_tests_option(dict(config.verify), args.tests), src)  # fmt: skip
    # the consumer's own pytest checks ([verify] tests, --tests) kill mutants as the checklist's checks do
    names += usertests.names(base_target, options)
    env = None if args.no_malloc_check else mutate.malloc_check_env()
    say(f"unmutated build: running {len(names)} checks{' (glibc heap checks on)' if env else ''} ...")
    baseline = run_checks(base_target, options, names, env=env)
    passing = [r.name for r in baseline if r.status == PASSED]
    say(f"unmutated build: {len(passing)}/{len(names)} checks pass; only those can kill a mutant")
    options.timeout = args.timeout

    work = cache_root(args.cache) / "mutants" / f"{src.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"

    def build_copy(copy: Path) -> mutate.BuildOutcome:
        result = build(copy, tree, sources=[copy / rel for rel in files.values()], cache=args.cache)
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
                       found.operations_of, work, args.jobs, progress, env)  # fmt: skip
    previous = signal.signal(signal.SIGTERM, _terminate)  # so that the copies below are removed
    try:
        results = mutate.run_mutants(plan, build_copy, line_of)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work, ignore_errors=True)
    command = "migrate " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if "mutate" in sys.argv else ""
    report = mutate.MutationReport(
        consumer=src.name, llama=f"{tree.provided} (for {args.from_version})", generated=len(found.mutants),
        results=results, reached=found.reached, not_reached=found.not_reached, baseline=baseline,
        seconds=time.monotonic() - started, command=command, sampled=len(chosen) < len(found.mutants),
        seed=args.seed, notes=[f"libclang could not parse (the parse went on): {p}" for p in found.problems]
        + [f"checks ran with glibc's heap checks ({', '.join(f'{k}={v}' for k, v in env.items())})" if env else
           "checks ran without glibc's heap checks (--no-malloc-check, or glibc's malloc debug library not found)"],
    )  # fmt: skip
    return _finish(args, src, report, f"{src.name}-mutants-{tree.provided}.md", say)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _rescore(args: argparse.Namespace, src: Path, config: Any) -> int:
    previous = Path(args.rescore)
    try:
        data = json.loads(previous.read_text())
    except (OSError, ValueError) as exc:
        raise MutateUsage(f"{previous}: not a `migrate mutate --json` file ({exc})") from exc
    report, wrong = mutate.rescore(data, mutate.equivalents(list(config.mutants)))
    report.notes += [f"rescored from {previous.name} with the `mutants` marks of {config.source}"] + \
        [f"wrong mark: {w}" for w in wrong]  # fmt: skip
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    for w in wrong:
        say(f"wrong mark: {w}")
    return _finish(args, src, report, f"{src.name}-mutants-rescored.md", say)


def _finish(args: argparse.Namespace, src: Path, report: mutate.MutationReport, name: str,
            say: Any) -> int:  # fmt: skip
    out = Path(args.out) if args.out else cache_root(args.cache) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(mutate.markdown(report))
    if args.json:
        mutate.write_json(report, Path(args.json))
    print(path)
    score = report.score
    say(f"mutation score: {'n/a' if score is None else f'{100 * score:.1f} %'} ({report.count(mutate.KILLED)} "
        f"killed of {report.scored}; {report.count(mutate.SURVIVED)} survived, {report.count(mutate.NOT_COMPILED)} "
        f"did not compile, {report.count(mutate.IDENTICAL) + report.count(mutate.EQUIVALENT)} equivalent) "
        f"in {report.seconds:.0f} s")  # fmt: skip
    if args.min_score is not None and (score is None or 100 * score < args.min_score):
        return MutateExit.BELOW_MIN_SCORE
    return MutateExit.OK
