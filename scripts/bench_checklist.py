"""What the whole checklist costs per build on the tiny model (issue 25: "under 60 s per build, without
sanitizers"): the bundled fixture built at b5415 (from the build cache), `run_verification` of every check,
N runs, with `--jobs 1` (one check at a time) and the default (one per core) interleaved, the load beside each.

    .venv/bin/python scripts/bench_checklist.py [--runs 3]

A benchmark, not a test: the figure depends on the machine and its load, so it is printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tomllib
from pathlib import Path

from migrate.build import build
from migrate.model import ensure_model
from migrate.sources import resolve
from verify.cli import run_verification
from verify.outcomes import CheckStatus
from verify.session import Options, Target
from verify.zygote import DISABLE_ENV as ZYGOTE_OFF

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "localllm"
HEADER = FIXTURE / "custom_files" / "localllm_capi.h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", action="store_true",
                        help="compare checks forked from a zygote with checks started as processes (both default "
                             "jobs) instead of --jobs 1 with the default")  # fmt: skip
    args = parser.parse_args()
    built = build(FIXTURE, resolve("b5421"))
    if not built.ok:
        raise SystemExit(f"bench_checklist: the fixture did not build at b5415: {built.log[-500:]}")
    # bound as `migrate verify` binds the fixture: with its [verify] table (the oracle's fixed sampler values)
    verify = tomllib.loads((FIXTURE / "llama-migrate.toml").read_text())["verify"]
    target = Target(Path(built.library), HEADER, ensure_model("tiny", "b5421"), "old", verify=verify,
                    config_root=FIXTURE)  # fmt: skip
    eog = str(ensure_model("tiny", "b5421", eog=True))
    cores = os.cpu_count() or 1
    # (label, jobs, each check's process forked from a zygote): verify/zygote.py, LLAMA_MIGRATE_NO_ZYGOTE
    if args.processes:
        variants = [("started", cores, False), ("forked", cores, True)]
    else:
        variants = [("--jobs 1", 1, True), ("default", cores, True)]
    seconds: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    outcomes: dict[str, set[str]] = {label: set() for label, _, _ in variants}
    for run in range(args.runs):
        for label, jobs, forked in variants:
            os.environ[ZYGOTE_OFF] = "0" if forked else "1"
            load = os.getloadavg()[0]
            report = run_verification([target], Options(eog_model=eog, jobs=jobs))
            results = report.results["old"]
            not_passed = sorted(r.name for r in results if r.status != CheckStatus.PASSED)
            seconds[label].append(report.seconds)
            outcomes[label].add(json.dumps([(r.name, str(r.status), r.message) for r in results]))
            print(f"run {run + 1} {label}: {report.seconds:.1f} s for {len(results)} checks at load {load:.1f}; "
                  f"not passed: {', '.join(not_passed) or 'none'}", flush=True)
    for label, values in seconds.items():
        print(f"{label}: median {statistics.median(values):.1f} s, {min(values):.1f}-{max(values):.1f} s over "
              f"{len(values)} runs")
    every = set().union(*outcomes.values())
    same = "identical in every run" if len(every) == 1 else f"{len(every)} different sets over the runs"
    print(f"names, statuses and messages of the checks: {same}")


if __name__ == "__main__":
    main()
