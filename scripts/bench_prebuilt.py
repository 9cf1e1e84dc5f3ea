"""Equivalence of prebuilt and source builds over every fixture (issue 26 item 2).

Each fixture is migrated b5421 -> b7785 on a copy (`migrate apply`, verify/faults.py migrate_copy), built at the
release provided for b7785 twice: llama.cpp compiled from the tree (`--llama-build source`) and the registry
package's prebuilt libraries of that release (`--llama-build prebuilt`). The whole checklist but `throughput`
(timing, not behaviour) runs on both builds; a fixture is equivalent when every check has the same status on both
and every greedy output is token-identical (libllama's argmax traces of `generate_matches_reference`).

    .venv/bin/python scripts/bench_prebuilt.py [--fixtures localllm,textgen] [--jobs 2] [--json out.json]
    .venv/bin/python scripts/bench_prebuilt.py --fixtures localllm-today-next --repeat CHECK --times 20

`--repeat CHECK --times N`: one check N times on each build of each fixture (both builds' runs alternating), its
statuses and failure messages counted per build: a check that fails on one build only once cannot say whether the
builds differ or the check flakes; N runs on both can.

Exit 0 when every fixture that built and could be bound is equivalent, 1 otherwise (a fixture that does not build,
or has no header to bind, is listed with why).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migrate.build import BuildOptions, build  # noqa: E402
from migrate.model import ensure_model  # noqa: E402
from migrate.sources import resolve  # noqa: E402
from verify.checks import checklist  # noqa: E402
from verify.cli import make_target  # noqa: E402
from verify.differential import compare_greedy  # noqa: E402
from verify.errors import ToolError  # noqa: E402
from verify.faults import migrate_copy  # noqa: E402
from verify.runner import run_builds  # noqa: E402
from verify.session import Options  # noqa: E402

KINDS = ("source", "prebuilt")


def fixture_names() -> list[str]:
    return sorted(p.name for p in (REPO / "fixtures").iterdir() if p.is_dir())


def compare_fixture(name: str, work: Path, tree: Any, model: Path, options: Options) -> dict[str, Any]:
    started = time.monotonic()
    copy = migrate_copy(REPO / "fixtures" / name, work / f"{len(list(work.iterdir()))}" / name)  # a name may repeat
    builds = {kind: build(copy, tree, BuildOptions(llama_build=kind)) for kind in KINDS}
    failed = {kind: (r.errors[:3] or [r.stage]) for kind, r in builds.items() if not r.ok}
    if failed:
        return {"fixture": name, "verdict": "not built", "why": {k: [str(e) for e in v] for k, v in failed.items()},
                "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    try:
        targets = [make_target(kind, str(builds[kind].library), None, model, None) for kind in KINDS]
    except ToolError as exc:  # no header to bind (a fixture for the rewriter only): not verifiable, said so
        return {"fixture": name, "verdict": "not verifiable", "why": str(exc),
                "seconds": round(time.monotonic() - started, 1)}
    names = [n for n in checklist(0) if n != "throughput"]
    results = run_builds(targets, options, names)
    status = {kind: {r.name: r.status for r in results[kind]} for kind in KINDS}
    message = {kind: {r.name: r.message for r in results[kind]} for kind in KINDS}
    differing = {n: [f"{status[k][n]}: {message[k][n]}"[:300] for k in KINDS] for n in names
                 if status["source"][n] != status["prebuilt"][n]}  # fmt: skip
    reference = {k: next((r for r in results[k] if r.name == "generate_matches_reference"), None) for k in KINDS}
    greedy = compare_greedy(reference["source"], reference["prebuilt"], tie_margin=0.0)
    not_identical = [g.prompt for g in greedy if g.verdict != "identical"]
    counts: dict[str, int] = {}
    for value in status["prebuilt"].values():
        counts[value] = counts.get(value, 0) + 1
    return {"fixture": name, "verdict": "equivalent" if not differing and not not_identical else "DIFFERENT",
            "checks": len(names), "statuses_differing": differing, "greedy_prompts": len(greedy),
            "greedy_not_identical": not_identical, "prebuilt_statuses": counts,
            "prebuilt": builds["prebuilt"].prebuilt and builds["prebuilt"].prebuilt["package"],
            "build_seconds": {k: round(builds[k].seconds, 1) for k in KINDS},
            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def repeat_check(name: str, work: Path, tree: Any, model: Path, options: Options, check: str,
                 times: int) -> dict[str, Any]:  # fmt: skip
    """`check` `times` times on the source and the prebuilt build of one migrated fixture: statuses per build."""
    started = time.monotonic()
    copy = migrate_copy(REPO / "fixtures" / name, work / f"{len(list(work.iterdir()))}" / name)
    builds = {kind: build(copy, tree, BuildOptions(llama_build=kind)) for kind in KINDS}
    if not all(r.ok for r in builds.values()):
        return {"fixture": name, "check": check, "verdict": "not built"}
    targets = [make_target(kind, str(builds[kind].library), None, model, None) for kind in KINDS]
    counts: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
    failures: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for _ in range(times):
        for kind, results in run_builds(targets, options, [check]).items():
            result = results[0]
            counts[kind][result.status] = counts[kind].get(result.status, 0) + 1
            if result.status != "passed":
                failures[kind].append(f"{result.status}: {result.message}"[:400])
    return {"fixture": name, "check": check, "times": times, "statuses": counts, "not_passed": failures,
            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", help="comma-separated fixture names (default: every folder under fixtures/)")
    parser.add_argument("--jobs", type=int, default=2, help="checks at once (default 2)")
    parser.add_argument("--json", help="write the per-fixture results here")
    parser.add_argument("--repeat", metavar="CHECK", help="only this check, --times times on each build")
    parser.add_argument("--times", type=int, default=20, help="runs of --repeat's check per build (default 20)")
    args = parser.parse_args(argv)
    names = args.fixtures.split(",") if args.fixtures else fixture_names()
    tree = resolve("b7785")
    model = ensure_model("tiny", "b5421")
    options = Options(jobs=args.jobs, eog_model=str(ensure_model("tiny", "b5421", eog=True)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-prebuilt-") as tmp:
        for name in names:
            if args.repeat:
                print(json.dumps(repeat_check(name, Path(tmp), tree, model, options, args.repeat, args.times)),
                      flush=True)  # fmt: skip
                continue
            row = compare_fixture(name, Path(tmp), tree, model, options)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.repeat:
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\n| fixture | verdict | checks | statuses differing | greedy prompts identical | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        if row["verdict"] in ("not built", "not verifiable"):
            print(f"| {row['fixture']} | {row['verdict']}: {row['why']} | | | | {row['seconds']} |")
            continue
        identical = row["greedy_prompts"] - len(row["greedy_not_identical"])
        print(f"| {row['fixture']} | {row['verdict']} | {row['checks']} | {len(row['statuses_differing'])} | "
              f"{identical}/{row['greedy_prompts']} | {row['seconds']} |")  # fmt: skip
    return 0 if all(r["verdict"] in ("equivalent", "not built", "not verifiable") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
