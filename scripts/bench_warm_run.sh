#!/usr/bin/env bash
# Warm `migrate run` on the bundled fixture, two checkouts interleaved (a script, not a timed test):
#   scripts/bench_warm_run.sh BEFORE_DIR AFTER_DIR [PAIRS] [OUT]
# BEFORE_DIR / AFTER_DIR: trees of two commits (`git archive C | tar -x -C DIR`), each run as `python -m migrate
# run --quiet --json` from its folder with this checkout's .venv; the first AFTER run is a primer (it stores what a
# later run may reuse) and is listed as such. Prints one line per run: exit code, wall seconds, the 1-minute load
# before and after, the stage seconds, what was reused, the throughput pairs and the statuses on both builds.
set -uo pipefail
BEFORE=$1 AFTER=$2 PAIRS=${3:-3} OUT=${4:-$(mktemp -d /tmp/bench-warm-run-XXXX)}
PYTHON=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python
mkdir -p "$OUT"
one() {  # NAME DIR
  local name=$1 dir=$2 l0 l1 t0 t1 rc
  l0=$(cut -d' ' -f1 /proc/loadavg); t0=$(date +%s.%N)
  (cd "$dir" && "$PYTHON" -m migrate run --quiet --json "$OUT/$name.json" --out "$OUT/$name" >"$OUT/$name.log" 2>&1)
  rc=$?; t1=$(date +%s.%N); l1=$(cut -d' ' -f1 /proc/loadavg)
  "$PYTHON" - "$OUT" "$name" "$rc" "$t0" "$t1" "$l0" "$l1" <<'PY'
import json, sys
out, name, rc, t0, t1, l0, l1 = sys.argv[1:]
d = json.load(open(f"{out}/{name}.json"))
checks = d["verification"]["differential"]["checks"]
pairs = {k: v.get("pairs") for k, v in d["verification"]["differential"]["throughput"].items()}
passed = [sum(1 for c in checks if c[side]["status"] == "passed") for side in ("old", "new")]
print(f"{name}: exit {rc}, {float(t1) - float(t0):.1f} s wall, load {l0}->{l1}, stages {d['stage_seconds']}, "
      f"reused {[r['stage'] for r in d.get('reused', [])]}, throughput pairs {pairs}, "
      f"passed old/new {passed[0]}/{passed[1]} of {len(checks)}", flush=True)
PY
}
echo "start $(date -u +%T), results in $OUT"
one prime "$AFTER"
for i in $(seq 1 "$PAIRS"); do one "before$i" "$BEFORE"; one "after$i" "$AFTER"; done
echo "end $(date -u +%T)"
