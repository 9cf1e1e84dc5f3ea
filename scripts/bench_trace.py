#!/usr/bin/env python3
"""What the call tracer costs on a `generate` (a benchmark, not a test).

Three arms, each its own process holding a loaded model and a context: the fixture built untraced, the fixture
built `--traced` with tracing off (no LLAMA_MIGRATE_TRACE: the wrappers only check a flag), and the traced build
with tracing on (two JSON lines appended per llama.cpp call). Rounds interleave the arms in a shuffled order, one
greedy generate each, so drift of a shared machine hits every arm alike; the figures are per-arm medians with the
spread (10th-90th percentile) and the median of the per-round ratios to the untraced arm.

    .venv/bin/python scripts/bench_trace.py --rounds 200 --max-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = """
import sys, time
from pathlib import Path
from verify.prompts import PROMPT_A
from verify.session import Options, Session, Target
lib, header, model, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
session = Session(Target(Path(lib), Path(header), Path(model), "bench"), Options())
ctx = session.context(512, 1)
sampling = session.options.sampling(max_tokens)
session.shim.generate(ctx, PROMPT_A, sampling)  # warm-up: the first decode allocates graphs
print("ready", flush=True)
for line in sys.stdin:
    cpu, started = time.thread_time(), time.perf_counter()
    call = session.shim.generate(ctx, PROMPT_A, sampling)
    seconds, cpu = time.perf_counter() - started, time.thread_time() - cpu
    print(f"{seconds:.9f} {cpu:.9f} {int(call.ok)}", flush=True)
"""


class Arm:
    def __init__(self, name: str, library: Path, header: Path, model: Path, max_tokens: int,
                 trace: Path | None) -> None:  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("LLAMA_MIGRATE_TRACE", None)
        if trace is not None:
            env["LLAMA_MIGRATE_TRACE"] = str(trace)
        self.name = name
        self.trace = trace
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(library), str(header), str(model),
                                      str(max_tokens)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready", name
        self.seconds: list[float] = []
        self.cpu: list[float] = []

    def once(self) -> tuple[float, float]:
        """One generate: wall seconds and the calling thread's CPU seconds (contexts run one thread: the CPU
        time is the generate's own work, less disturbed by other processes than the wall time)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        seconds, cpu, ok = self.proc.stdout.readline().split()
        if ok != "1":
            raise SystemExit(f"{self.name}: generate failed")
        self.seconds.append(float(seconds))
        self.cpu.append(float(cpu))
        return float(seconds), float(cpu)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def spread(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=10)
    return statistics.median(values), q[0], q[-1]


def main() -> int:
    from migrate.build import BuildOptions, build
    from migrate.model import ensure_model
    from migrate.sources import resolve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="rounds; each runs one generate per arm")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--llama", default="b5421", help="llama.cpp version to build the fixture against")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    fixture = REPO / "fixtures" / "localllm"
    header = fixture / "custom_files" / "localllm_capi.h"
    tree = resolve(args.llama)
    libraries = {}
    for traced in (False, True):
        result = build(fixture, tree, BuildOptions(traced=traced))
        if not result.ok:
            raise SystemExit(f"build failed: {result.errors[:3]}")
        libraries[traced] = Path(result.library)
    model = ensure_model("tiny", args.llama)
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
        trace = Path(tmp) / "generate.trace"
        arms = [Arm("untraced build", libraries[False], header, model, args.max_tokens, None),
                Arm("traced build, tracing off", libraries[True], header, model, args.max_tokens, None),
                Arm("traced build, tracing on", libraries[True], header, model, args.max_tokens, trace)]
        started = time.monotonic()
        ratios: dict[str, dict[str, list[float]]] = {"wall": {a.name: [] for a in arms[1:]},
                                                     "cpu": {a.name: [] for a in arms[1:]}}  # fmt: skip
        rng = random.Random(42)
        for _ in range(args.rounds):
            order = arms[:]
            rng.shuffle(order)
            seconds = {arm.name: arm.once() for arm in order}
            for arm in arms[1:]:
                for k, kind in enumerate(("wall", "cpu")):
                    ratios[kind][arm.name].append(seconds[arm.name][k] / seconds[arms[0].name][k])
        wall = time.monotonic() - started
        for arm in arms:
            arm.close()
        lines = trace.read_text().count("\n")
        calls = (lines - 1) / 2 / (args.rounds + 1)  # call + ret per call, one open line; +1: the warm-up
    load = os.getloadavg()[0]
    print(f"{args.rounds} rounds x {len(arms)} arms, greedy generate of {args.max_tokens} tokens on the tiny model, "
          f"llama.cpp {tree.provided}; {wall:.1f} s; 1-minute load {load:.2f}")  # fmt: skip
    print(f"traced llama.cpp calls per generate: {calls:.1f}")
    figures: dict = {"rounds": args.rounds, "max_tokens": args.max_tokens, "calls_per_generate": calls,
                     "load": load, "wall": {}, "cpu": {}}  # fmt: skip
    for kind in ("wall", "cpu"):
        print(f"{kind + ' time, arm':28} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} "
              f"{'ratio to untraced: median (p10-p90)':>38}")  # fmt: skip
        for arm in arms:
            median, p10, p90 = spread(arm.seconds if kind == "wall" else arm.cpu)
            row = {"median_s": median, "p10_s": p10, "p90_s": p90}
            text = ""
            if arm.name in ratios[kind]:
                r_median, r10, r90 = spread(ratios[kind][arm.name])
                row |= {"ratio_median": r_median, "ratio_p10": r10, "ratio_p90": r90}
                text = f"{r_median:.3f} ({r10:.3f}-{r90:.3f})"
            figures[kind][arm.name] = row
            print(f"{arm.name:28} {median * 1e3:10.2f} {p10 * 1e3:8.2f} {p90 * 1e3:8.2f} {text:>38}")
        on, off = figures[kind]["traced build, tracing on"], figures[kind]["untraced build"]
        per_call = (on["median_s"] - off["median_s"]) / calls * 1e6 if calls else 0.0
        print(f"{kind}: tracing on vs untraced {per_call:+.1f} µs per traced call (difference of medians / calls)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
