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


def plan(root: Path, cache: Path, out: Path, env: dict[str, str] | None = None) -> tuple[float, float, dict]:
    command = [sys.executable, "-m", "migrate", "--cache", str(cache), "plan", str(root), "--no-diff", "--no-report",
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
    args = parser.parse_args()
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


if __name__ == "__main__":
    raise SystemExit(main())
