"""`migrate plan` at scale (a script, not a timed test): the b5415 tree's own tools/ + examples/, against ast-grep in
the same run, cold and warm, and after a one-file edit; every plan's JSON compared with the sequential reference.

    .venv/bin/pip install -e '.[bench]'      # ast-grep (PyPI package ast-grep-cli)
    .venv/bin/python scripts/bench_plan_scale.py [--reps 3] [--jobs N]

Each `migrate plan` is a fresh process as a user runs it, with its own cache folder (`--cache`) that borrows only
the llama.cpp trees and the API surfaces from the user cache (as the issue's figure did: warm trees and surfaces):

- reference: `LLAMA_MIGRATE_PLAN_JOBS=0` — the plain sequential loop (one process, no preambles, no per-unit cache);
- cold: empty plan cache and empty preamble cache (every file parsed; shared `#include` runs precompiled once);
- cold plan cache, warm preambles: the plan and per-unit caches emptied, the precompiled preambles of a run before;
- one-file edit: a comment appended to one file, the per-unit cache of the cold run kept (the others come from it);
- warm: nothing changed (the whole plan from the plan cache).

ast-grep is the one-pass `scan` of bench_plan.py (one `name($$$)` rule per old-API function name), median of
`--reps`. Figures are wall-clock seconds with the 1-minute load average beside them.

`--cold-only` (issue 26's figure): ast-grep, the sequential reference with EVERY unit parsed (the units that name
nothing listed too, as before they were skipped: `Engine._names_nothing` returns no unit in that process), and the
cold plan; the cold plan's JSON compared with that reference except the files it lists as naming nothing
(scripts/compare_plan_json.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_plan  # noqa: E402
import compare_plan_json  # noqa: E402

from migrate.paths import cache_root  # noqa: E402

EDITED = Path("examples") / "simple" / "simple.cpp"


def cache_for(work: Path, name: str) -> Path:
    """A cache folder that shares the user cache's llama.cpp trees and API surfaces, nothing else."""
    folder = work / name
    folder.mkdir()
    user = cache_root(None)
    for sub in ("src", "npm", "apidiff"):
        if (user / sub).exists():
            (folder / sub).symlink_to(user / sub)
    return folder


# `python -m migrate` with no unit skipped for naming nothing: the reference the skip is checked against
PARSE_ALL = ("import sys; import migrate.rewrite.engine as engine; engine.Engine._names_nothing = lambda self, units: "
             "set(); from migrate.cli import main; sys.exit(main())")  # fmt: skip


def plan(root: Path, cache: Path, out: Path, env: dict[str, str] | None = None,
         parse_all: bool = False) -> tuple[float, float, dict]:  # fmt: skip
    start = ["-c", PARSE_ALL] if parse_all else ["-m", "migrate"]
    command = [sys.executable, *start, "--cache", str(cache), "plan", str(root), "--no-diff", "--no-report",
               "--json", str(out)]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=os.environ | (env or {}))
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1, 4):
        raise SystemExit(f"migrate plan failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, os.getloadavg()[0], json.loads(out.read_text())


def same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="ast-grep runs (median)")
    parser.add_argument("--jobs", help="LLAMA_MIGRATE_PLAN_JOBS for the scaled runs (default: one per CPU)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--cold-only", action="store_true", help="ast-grep, the every-unit-parsed sequential "
                        "reference and the cold plan only (see above)")  # fmt: skip
    args = parser.parse_args()
    if args.cold_only:
        return cold_only(args)
    work = Path(tempfile.mkdtemp(prefix="bench-plan-scale-"))
    env = {"LLAMA_MIGRATE_PLAN_JOBS": args.jobs} if args.jobs else {}
    rows: list[tuple[str, float, float, str]] = []
    try:
        root = bench_plan.copy_tree(work)
        names = bench_plan.old_api_functions()
        files = [str(p.relative_to(root)) for p in bench_plan.consumer_files(root)]
        scans = [bench_plan.ast_grep_one_pass(root, files, names) for _ in range(args.reps)]
        grep_s = statistics.median(s for s, _ in scans)
        rows.append((f"ast-grep `scan`, {len(names)} `name($$$)` rules, one pass (median of {args.reps})", grep_s,
                     os.getloadavg()[0], f"{len(scans[0][1])} sites"))  # fmt: skip
        seconds, load, reference = plan(root, cache_for(work, "reference"), work / "reference.json",
                                        {"LLAMA_MIGRATE_PLAN_JOBS": "0"})  # fmt: skip
        rows.append(("`migrate plan`, sequential reference (LLAMA_MIGRATE_PLAN_JOBS=0), cold", seconds, load, "—"))
        cache = cache_for(work, "scaled")
        seconds, load, cold = plan(root, cache, work / "cold.json", env)
        rows.append(("`migrate plan`, cold (empty plan, per-unit and preamble caches)", seconds, load,
                     f"identical: {same(cold, reference)}"))  # fmt: skip
        units = cache / "plans" / "units"
        kept = work / "units-kept"
        shutil.copytree(units, kept)
        shutil.rmtree(cache / "plans")
        seconds, load, warm_pre = plan(root, cache, work / "warm-pre.json", env)
        rows.append(("`migrate plan`, cold plan cache, preambles of an earlier run", seconds, load,
                     f"identical: {same(warm_pre, reference)}"))  # fmt: skip
        seconds, load, warm = plan(root, cache, work / "warm.json", env)
        rows.append(("`migrate plan`, warm (plan cache hit)", seconds, load, f"identical: {same(warm, reference)}"))
        edited = root / EDITED
        edited.write_bytes(edited.read_bytes() + b"\n// an edit\n")
        shutil.rmtree(cache / "plans")
        shutil.copytree(kept, units)
        seconds, load, after_edit = plan(root, cache, work / "edit.json", env)
        _, _, edit_reference = plan(root, cache_for(work, "reference-edit"), work / "reference-edit.json",
                                    {"LLAMA_MIGRATE_PLAN_JOBS": "0"})  # fmt: skip
        rows.append((f"`migrate plan` after editing `{EDITED}` (per-unit cache of the cold run)", seconds, load,
                     f"identical to a sequential plan of the edited tree: {same(after_edit, edit_reference)}"))
        print(f"{len(files)} C/C++ files; {os.cpu_count()} CPUs; LLAMA_MIGRATE_PLAN_JOBS={args.jobs or 'default'}\n")
        print("| what | seconds | × ast-grep | load (1 min) | plan JSON |")
        print("| --- | ---: | ---: | ---: | --- |")
        for label, seconds, load, note in rows:
            print(f"| {label} | {seconds:.2f} | {seconds / grep_s:.0f}× | {load:.1f} | {note} |")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def except_names_nothing(reference: dict, cold: dict, caches: tuple[Path, Path]) -> str:
    """The cold plan against the every-unit-parsed reference, except the files it lists as naming nothing (the
    two runs' cache folders, where their llama.cpp trees lie, stand for each other)."""
    text = json.dumps(reference).replace(str(caches[0]), str(caches[1]))
    before, nothing = compare_plan_json.aligned(json.loads(text), cold)
    listed = ", ".join(nothing) or "none"
    if compare_plan_json.serialise(before) == compare_plan_json.serialise(cold):
        return f"identical except the {len(nothing)} file(s) listed as naming nothing ({listed})"
    return f"DIFFERENT beyond the {len(nothing)} file(s) listed as naming nothing ({listed})"


def cold_only(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-plan-scale-"))
    env = {"LLAMA_MIGRATE_PLAN_JOBS": args.jobs} if args.jobs else {}
    try:
        root = bench_plan.copy_tree(work)
        names = bench_plan.old_api_functions()
        files = [str(p.relative_to(root)) for p in bench_plan.consumer_files(root)]
        print(f"{len(files)} C/C++ files; {os.cpu_count()} CPUs; started {time.strftime('%H:%M:%S')}, load "
              f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        scans = [bench_plan.ast_grep_one_pass(root, files, names) for _ in range(args.reps)]
        grep_s = statistics.median(s for s, _ in scans)
        print(f"ast-grep scan, {len(names)} rules, median of {args.reps}: {grep_s:.2f} s ({len(scans[0][1])} sites), "
              f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        ref_cache = cache_for(work, "reference")
        ref_s, ref_load, reference = plan(root, ref_cache, work / "reference.json", {"LLAMA_MIGRATE_PLAN_JOBS": "0"},
                                          parse_all=True)  # fmt: skip
        print(f"sequential reference, every unit parsed: {ref_s:.2f} s ({ref_s / grep_s:.0f}x), load {ref_load:.1f}",
              flush=True)  # fmt: skip
        cold_cache = cache_for(work, "scaled")
        cold_s, cold_load, cold = plan(root, cold_cache, work / "cold.json", env)
        print(f"cold plan (empty plan, per-unit and preamble caches): {cold_s:.2f} s = {cold_s / grep_s:.1f}x "
              f"ast-grep, load {cold_load:.1f}; {except_names_nothing(reference, cold, (ref_cache, cold_cache))}",
              flush=True)  # fmt: skip
        print(f"ended {time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.1f}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
