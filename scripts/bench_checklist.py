"""What the whole checklist costs per build on the tiny model (issue 25: "under 60 s per build, without
sanitizers"): the bundled fixture built at b5415 (from the build cache), `run_verification` of every check,
N runs, with `--jobs 1` (one check at a time) and the default (one per core) interleaved, the load beside each.

    .venv/bin/python scripts/bench_checklist.py [--runs 3]

A benchmark, not a test: the figure depends on the machine and its load, so it is printed, never asserted.
"""

from __future__ import annotations

import argparse
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

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "localllm"
HEADER = FIXTURE / "custom_files" / "localllm_capi.h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    built = build(FIXTURE, resolve("b5421"))
    if not built.ok:
        raise SystemExit(f"bench_checklist: the fixture did not build at b5415: {built.log[-500:]}")
    # bound as `migrate verify` binds the fixture: with its [verify] table (the oracle's fixed sampler values)
    verify = tomllib.loads((FIXTURE / "llama-migrate.toml").read_text())["verify"]
    target = Target(Path(built.library), HEADER, ensure_model("tiny", "b5421"), "old", verify=verify,
                    config_root=FIXTURE)  # fmt: skip
    eog = str(ensure_model("tiny", "b5421", eog=True))
    seconds: dict[str, list[float]] = {"--jobs 1": [], "default": []}
    for run in range(args.runs):
        for label, jobs in (("--jobs 1", 1), ("default", os.cpu_count() or 1)):
            load = os.getloadavg()[0]
            options = Options(eog_model=eog, jobs=jobs)
            report = run_verification([target], options)
            results = report.results["old"]
            not_passed = sorted(r.name for r in results if r.status != CheckStatus.PASSED)
            seconds[label].append(report.seconds)
            print(f"run {run + 1} {label}: {report.seconds:.1f} s for {len(results)} checks at load {load:.1f}; "
                  f"not passed: {', '.join(not_passed) or 'none'}", flush=True)
    for label, values in seconds.items():
        print(f"{label}: median {statistics.median(values):.1f} s, {min(values):.1f}-{max(values):.1f} s over "
              f"{len(values)} runs")


if __name__ == "__main__":
    main()
