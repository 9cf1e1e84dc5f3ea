"""How fast can a libclang plan of the b5415 tools/ + examples/ tree be on this machine? (a script, not a timed test)

    .venv/bin/pip install -e '.[bench]'      # ast-grep (PyPI package ast-grep-cli)
    .venv/bin/python scripts/bench_plan_floor.py [--reps 3]

`migrate plan` compiles every unit that includes llama.cpp (its diagnostics are part of the plan) and resolves
every use. This script measures lower bounds for that work, whatever the plan does around it, in one run beside
ast-grep's one-pass scan of the same files (bench_plan.py's rules):

- every unit parsed plainly (what the sequential plan does);
- every unit parsed after ONE precompiled header holding every llama.cpp and system header any unit includes
  (function bodies of those headers skipped) — the best any sharing of header work can do, since nothing of the
  headers is parsed per unit; how long that header takes to build is printed too;
- the same with the unit's own function bodies skipped as well: what is left when the consumer's code is not
  compiled either (a plan that did this would no longer report errors inside those bodies);
- with `--own-preamble`, also the four slowest units parsed plainly against libclang's own precompiled preamble
  (made on the first parse, function bodies skipped in it): the exact alternative for units that share no run.

The bounds on wall-clock time assume perfect parallelism over `os.cpu_count()` CPUs and add the interpreter's start
(`python -m migrate plan --help`), but no walking of the cursors, no API cross reference and no rules: a real plan
takes longer than each.
"""

from __future__ import annotations

import argparse
import os
import re
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

INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*([<"][^>"\n]+[>"])', re.MULTILINE)
CONDITIONAL = re.compile(r"^[ \t]*#[ \t]*(if|ifdef|ifndef|endif)\b", re.MULTILINE)


def unconditional_includes(text: str) -> list[str]:
    """The `#include`s of a file outside any `#if` block, as written."""
    found, depth = [], 0
    for match in re.finditer(rf"{INCLUDE.pattern}|{CONDITIONAL.pattern}", text, re.MULTILINE):
        if match.group(2):
            depth += -1 if match.group(2) == "endif" else 1
        elif depth == 0:
            found.append(match.group(1))
    return found


def shared_header(units: list[Path], consumer: Path, flags_for) -> list[str]:  # noqa: ANN001
    """Every header a unit includes unconditionally that is not the consumer's own (first seen first)."""
    seen: dict[str, None] = {}
    for unit in units:
        mine = [Path(f[2:]) for f in flags_for(unit) if f.startswith("-I") and Path(f[2:]).is_relative_to(consumer)]
        for spelled in unconditional_includes(unit.read_text(errors="replace")):
            name = spelled[1:-1]
            if (unit.parent / name).exists() or any((folder / name).exists() for folder in mine):
                continue
            seen.setdefault(spelled)
    return list(seen)


def startup_seconds(reps: int) -> float:
    runs = []
    for _ in range(reps):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "migrate", "plan", "--help"], cwd=REPO, capture_output=True, check=True)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def own_preamble(units: list[tuple[float, Path]], root: Path, flags_for, detailed: int) -> None:  # noqa: ANN001
    """A unit's plain parse against one that makes libclang's precompiled preamble of its leading directives on
    the way (CXTranslationUnit_PrecompiledPreamble | CreatePreambleOnFirstParse | LimitSkipFunctionBodiesToPreamble),
    as a cold plan would: the preamble serves this one parse."""
    import clang.cindex as ci

    from migrate.rewrite.parse import _index

    preamble = ci.TranslationUnit.PARSE_PRECOMPILED_PREAMBLE | 0x100 | 0x800
    print("\n| unit | plain parse, s | with its own preamble made on the way, s |\n| --- | ---: | ---: |")
    for _, unit in units:
        times = []
        for options in (detailed, detailed | preamble):
            started = time.perf_counter()
            _index().parse(str(unit), args=flags_for(unit), options=options)
            times.append(time.perf_counter() - started)
        print(f"| {unit.relative_to(root)} | {times[0]:.2f} | {times[1]:.2f} |")


def main() -> int:
    import clang.cindex as ci

    from migrate.rewrite.parse import ParseConfig, _header_flags, _index
    from migrate.sources import resolve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="ast-grep runs and interpreter starts (median)")
    parser.add_argument("--own-preamble", action="store_true", help="also time libclang's own preamble")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-plan-floor-"))
    try:
        root = bench_plan.copy_tree(work)
        names = bench_plan.old_api_functions()
        files = [str(p.relative_to(root)) for p in bench_plan.consumer_files(root)]
        grep_s = statistics.median(bench_plan.ast_grep_one_pass(root, files, names)[0] for _ in range(args.reps))
        config = ParseConfig(resolve("b5421").path, root)
        units = [root / f for f in files if f.endswith((".cpp", ".cc", ".cxx"))]
        detailed = ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD
        header = work / "all.hpp"
        directives = shared_header(units, root, config.flags_for)
        flags = config.flags_for(units[0])
        dropped: list[str] = []
        while True:  # a header this machine cannot find is left out (the units that include it are not compared)
            header.write_text("".join(f"#include {d}\n" for d in directives))
            started = time.perf_counter()
            tu = _index().parse(str(header), args=_header_flags(flags),
                                options=detailed | ci.TranslationUnit.PARSE_INCOMPLETE
                                | ci.TranslationUnit.PARSE_SKIP_FUNCTION_BODIES)  # fmt: skip
            errors = [d for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
            bad = [d.location.line for d in errors if d.location.file and d.location.file.name == str(header)]
            if not bad:
                break
            dropped.append(directives.pop(bad[0] - 1))
        pch = work / "all.pch"
        tu.save(str(pch))
        pch_s = time.perf_counter() - started
        plain = with_pch = bodiless = 0.0
        parsed = 0
        slowest: list[tuple[float, Path]] = []
        for unit in units:
            unit_flags = config.flags_for(unit)
            if unit_flags != flags:
                continue  # another language or other flags: that header does not apply
            times = []
            after = ["-include-pch", str(pch)]
            for extra, options in (
                ([], detailed),
                (after, detailed),
                (after, detailed | ci.TranslationUnit.PARSE_SKIP_FUNCTION_BODIES),
            ):
                started = time.perf_counter()
                try:
                    unit_tu = _index().parse(str(unit), args=[*unit_flags, *extra], options=options)
                except ci.TranslationUnitLoadError:
                    break
                times.append(time.perf_counter() - started)
                if any(d.severity >= ci.Diagnostic.Fatal for d in unit_tu.diagnostics):
                    break  # a header not found, or the PCH refused: not comparable
            if len(times) == 3:
                slowest.append((times[0], unit))
                parsed += 1
                plain, with_pch, bodiless = plain + times[0], with_pch + times[1], bodiless + times[2]
        cpus = os.cpu_count() or 1
        start = startup_seconds(args.reps)
        print(
            f"{len(files)} C/C++ files, {parsed} C++ units parsed all three ways; {cpus} CPUs; "
            f"1-minute load {os.getloadavg()[0]:.1f}"
        )
        print(
            f"one header of {len(directives)} #includes, built in {pch_s:.2f} s ({len(errors)} errors"
            + (f"; left out, not found here: {', '.join(dropped)})" if dropped else ")")
        )
        print(f"interpreter start (`python -m migrate plan --help`, median of {args.reps}): {start:.2f} s")
        print(f"ast-grep scan (median of {args.reps}): {grep_s:.2f} s; 25x that is {25 * grep_s:.2f} s\n")
        print(
            "| parse of every unit | CPU-seconds | lower bound, warm header | × ast-grep | with the header built |"
            " × ast-grep |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for label, total, header_s in (
            ("plain", plain, 0.0),
            ("after the all-headers PCH", with_pch, pch_s),
            ("after it, own bodies skipped too", bodiless, pch_s),
        ):
            warm = start + total / cpus
            cold = warm + header_s
            print(f"| {label} | {total:.2f} | {warm:.2f} | {warm / grep_s:.0f}× | {cold:.2f} | {cold / grep_s:.0f}× |")
        if args.own_preamble:
            own_preamble(sorted(slowest, reverse=True)[:4], root, config.flags_for, detailed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
