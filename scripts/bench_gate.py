"""The tokens/s gate, run for real (a script, not a timed test): `migrate gate` N times in a row on the bundled
fixture, unchanged or with a planted slowdown (verify/faults.py SLOWDOWNS), printing each run's exit code and its
throughput rows (median paired new/old ratio, 95 % CI, pairs; instructions per call where counted).

    .venv/bin/python scripts/bench_gate.py --variant unchanged --runs 10
    .venv/bin/python scripts/bench_gate.py --variant slow_30 --runs 10 --checks generate,throughput
    .venv/bin/python scripts/bench_gate.py --variant slow_5 --runs 10 --checks generate,throughput --size small

`--size small` verifies with the generated small model (per-token cost dominates the per-call overhead) instead of
the default tiny one. Each line says the load average when the run ended: the gate's timing shares the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from verify.faults import SLOWDOWNS, copy_fixture, make_variant  # noqa: E402

LOCALLLM = REPO / "fixtures" / "localllm"


def variant(name: str, dest: Path) -> Path:
    if name == "unchanged":
        return copy_fixture(LOCALLLM, dest)
    return make_variant(LOCALLLM, dest, SLOWDOWNS[name])


def row_text(call: str, row: dict) -> str:
    if row.get("new_over_old") is None:
        return f"{call}: not measured ({row.get('note', '')})"
    text = f"{call} {row['new_over_old']} [{row['ci95'][0]}, {row['ci95'][1]}] n={row['pairs']}"
    wall = row.get("wall")
    if wall:
        text += f" (wall {wall['new_over_old']} [{wall['ci95'][0]}, {wall['ci95'][1]}])"
    counts = row.get("instructions") or {}
    if counts.get("new_over_old") is not None:
        text += f" instr x{counts['new_over_old']}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="unchanged", choices=["unchanged", *SLOWDOWNS])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--checks", help="--checks for the gate (default: the whole checklist)")
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny", help="generated model to verify with")
    parser.add_argument("--max-tps-regression", default="25")
    parser.add_argument("--json", help="write every run's exit code and rows here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    src = variant(args.variant, work / "localllm")
    extra = ["--checks", args.checks] if args.checks else []
    if args.size != "tiny":
        from migrate.model import ensure_model

        extra += ["--model", str(ensure_model(args.size, "b5421"))]
    codes, runs = [], []
    print(f"# migrate gate on fixtures/localllm ({args.variant}), model {args.size}, threshold "
          f"{args.max_tps_regression}%, {args.runs} runs; {os.cpu_count()} CPUs", flush=True)  # fmt: skip
    for index in range(args.runs):
        out = work / f"run{index}"
        out.mkdir(parents=True, exist_ok=True)  # --json's folder must exist (the gate checks it before running)
        command = [sys.executable, "-m", "migrate", "gate", str(src), "--quiet", "--out", str(out), "--json",
                   str(out / "gate.json"), "--max-tps-regression", args.max_tps_regression, *extra]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        seconds = time.monotonic() - started
        codes.append(proc.returncode)
        data = json.loads((out / "gate.json").read_text()) if (out / "gate.json").is_file() else {}
        rows = ((data.get("verification") or {}).get("differential") or {}).get("throughput") or {}
        verdict = next((line for line in proc.stderr.splitlines() if line.startswith("GATE ")), "?")
        print(f"run {index + 1}: exit {proc.returncode} ({seconds:.0f} s, load {os.getloadavg()[0]:.1f}) "
              f"{'; '.join(row_text(c, r) for c, r in rows.items())} | {verdict}", flush=True)  # fmt: skip
        runs.append({"exit": proc.returncode, "seconds": round(seconds, 1), "load": os.getloadavg()[0], "rows": rows})
        if proc.returncode not in (0, 14, 17):
            print(proc.stderr[-2000:], flush=True)
    print(f"exit codes: {codes}; counts {dict(Counter(codes))}")
    if args.json:
        Path(args.json).write_text(json.dumps({"variant": args.variant, "size": args.size, "runs": runs}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
