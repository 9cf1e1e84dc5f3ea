"""What the model check before the checklist costs: llama.cpp's own loader run from a built library in a probe
child (verify/modelprobe.py), on the generated tiny model, N times per library.

    .venv/bin/python scripts/bench_model_probe.py LIB [LIB ...] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from migrate.model import ensure_model
from verify.modelprobe import probe_model
from verify.observe import find_llama_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("libraries", nargs="+", help="libraries `migrate build` made")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    model = ensure_model("tiny", "b5421")
    for library in map(Path, args.libraries):
        tree = find_llama_tree(library)
        results = [probe_model(model, library, tree) for _ in range(args.runs)]
        seconds = [r.seconds for r in results]
        statuses = sorted({r.status.value for r in results})
        print(f"{tree.name}: {', '.join(statuses)}; median {statistics.median(seconds):.2f} s, "
              f"{min(seconds):.2f}-{max(seconds):.2f} s over {args.runs} runs")


if __name__ == "__main__":
    main()
