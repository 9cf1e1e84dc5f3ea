"""Throughput with a confidence statement (a script, not a timed test): A/A and A/B comparisons of fixtures/localllm
built at b5415 and, migrated, at b7836 (with and without the opt-in kv-unified rule), through verify/throughput.py
(both builds resident, calls alternated, median of paired new/old ratios, 95 % bootstrap CI); and instructions per
call under callgrind, on builds without llama.cpp's native CPU flags (valgrind cannot run AVX-512).

    .venv/bin/python scripts/bench_throughput.py [--sizes tiny,small] [--instructions]

The first run builds what it needs (shims: seconds; with --instructions llama.cpp itself twice more, with
-DGGML_NATIVE=OFF: minutes). Each line: the comparison, the call, new/old [95 % CI] (pairs), the wall-clock ratio
beside it, and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migrate.build import BuildOptions, build  # noqa: E402
from migrate.model import ensure_model  # noqa: E402
from migrate.sources import resolve  # noqa: E402
from verify.faults import migrate_copy  # noqa: E402
from verify.session import Options, Target  # noqa: E402
from verify.throughput import Settings, compare, count_instructions  # noqa: E402

LOCALLLM = REPO / "fixtures" / "localllm"
HEADER = Path("custom_files") / "localllm_capi.h"


def builds(work: Path, cmake_args: tuple[str, ...] = ()) -> dict[str, tuple[Path, Path]]:
    """label -> (library, header): the original at b5415, the migrated copy at b7836 with and without kv_unified."""
    options = BuildOptions(cmake_args=cmake_args)
    old = build(LOCALLLM, resolve("b5421"), options)
    assert old.ok, old.log[-2000:]
    found = {"b5415": (Path(old.library), LOCALLLM / HEADER)}
    for label, enable in (("b7836 kv_unified", ("kv-unified",)), ("b7836 no kv_unified", ())):
        copy = work / label.replace(" ", "-")
        if not copy.exists():
            migrate_copy(LOCALLLM, copy, enable=enable)
        new = build(copy, resolve("b7785"), options)
        assert new.ok, [str(e) for e in new.errors]
        found[label] = (Path(new.library), copy / HEADER)
    return found


def target(found: dict[str, tuple[Path, Path]], label: str, model: Path, side: str) -> Target:
    library, header = found[label]
    return Target(library, header, model, side)


PAIRS = (("A/A", "b5415", "b5415"), ("A/B", "b5415", "b7836 kv_unified"), ("A/B", "b5415", "b7836 no kv_unified"),
         ("rule alone", "b7836 no kv_unified", "b7836 kv_unified"))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--instructions", action="store_true", help="also count instructions (GGML_NATIVE=OFF)")
    parser.add_argument("--no-timing", action="store_true", help="only the instruction counts")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    try:
        found = {} if args.no_timing else builds(work)
        print("| comparison | model | call | new / old [95% CI] | pairs | wall clock new / old | load |")
        print("| --- | --- | --- | --- | ---: | --- | ---: |")
        for size in [] if args.no_timing else args.sizes.split(","):
            model = ensure_model(size, "b5421")
            for kind, old, new in PAIRS:
                result = compare(target(found, old, model, "old"), target(found, new, model, "new"), Options(),
                                 Settings(instructions=False))  # fmt: skip
                for call, row in result.rows.items():
                    wall = row.get("wall") or {}
                    print(f"| {kind}: {old} → {new} | {size} | {call} | {row['new_over_old']} "
                          f"[{row['ci95'][0]}, {row['ci95'][1]}] | {row['pairs']} | {wall.get('new_over_old')} "
                          f"{wall.get('ci95')} | {os.getloadavg()[0]:.1f} |", flush=True)  # fmt: skip
        if args.instructions:
            plain = builds(work / "native-off", ("-DGGML_NATIVE=OFF",))
            print("\n| build (GGML_NATIVE=OFF) | model | call | instructions per call | vs b5415 |")
            print("| --- | --- | --- | ---: | ---: |")
            for size in args.sizes.split(","):
                model = ensure_model(size, "b5421")
                counts: dict[str, dict] = {}
                for label in plain:
                    found_counts = count_instructions({"x": target(plain, label, model, "x")}, Options(),
                                                      Settings(instruction_calls=2, callgrind=True))  # fmt: skip
                    counts[label] = found_counts.get("x", found_counts)
                for label, per in counts.items():
                    for call in ("generate", "generate_parallel"):
                        value = (per.get(call) or {}).get("per_call")
                        base = (counts["b5415"].get(call) or {}).get("per_call")
                        ratio = f"x{value / base:.3f}" if value and base else "-"
                        shown = f"{value:,}" if value else str(per.get("error") or per.get("skipped"))[:120]
                        print(f"| {label} | {size} | {call} | {shown} | {ratio} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
