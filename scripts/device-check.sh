#!/usr/bin/env bash
# The one prepared run for the GPU machine (16 cores, CUDA 13, CMake, Ninja, Python 3.12 without cffi, no
# network): everything issue 6 wants measured there, in one call, bounded to ~9 minutes, results into OUTDIR.
#
#   scripts/device-check.sh OUTDIR [--cpu] [--wheelhouse DIR] [--cache DIR] [--budget S] [--steps a,b,...]
#                              [--python PY]   (default: python3; with --cpu the repo's .venv)
#                              [--cuda-arch 90] (default: the visible GPU's; name it to test this script's GPU
#                                                mode up to the GPU on a machine without one)
#
# The caller carries `wheelhouse/` (made here by scripts/make-wheelhouse.sh: Python 3.12 wheels and slim
# llama.cpp trees, ~29 MB), e.g. with the device tool:
#   run(command="scripts/device-check.sh $OUT", carry=["wheelhouse"], timeout_s=600)
# Expected there: builds ~5 min (b5415 121 s + b7836 190 s measured cold on 16 cores, run side by side here),
# gate ~2 min, bench what is left (it writes its table after every build, so a cut-short run keeps its rows).
#
# Steps (each bounded by what is left of --budget, default 560 s; each one's rc and seconds go to summary.md):
#   env      nvidia-smi -L, nvcc, cmake, python versions
#   python   offline install of the carried wheels into a --target folder when the python lacks cffi
#   sources  unpack the slim llama.cpp trees into the cache and record them (no git, no npm needed)
#   build    both llama.cpp versions with CUDA, in parallel (-j nproc each; the b7836 shim of the UNmigrated
#            fixture is expected to fail — only its llama.cpp libraries are wanted, the gate reuses them), while
#            the tiny and 1b models are generated
#   gate     migrate gate on the fixture: migrate a copy, build both, the checklist old vs new with every layer
#            on the GPU (+ the gpu_offload check: device, layers offloaded, flash attention used) -> report, JSON,
#            JUnit in OUTDIR
#   bench    scripts/bench_gpu.py on the 1b f16 model: old vs new (+fa, -kv_unified) at 1, 8, 32 slots
#
# --cpu runs the same steps with the CPU backend (no --gpu, n_gpu_layers 0, tiny model for the bench, smaller
# figures) on the existing venv and cache: how this script is tested on a machine without a GPU.
# OUTDIR gets at most 8 files (the device tool returns no more): summary.md, device-check.log, the gate's
# report/JSON/JUnit, bench.md, bench.json, env.txt. summary.md ends with the gate's report: it is the GPU report
# to commit (reports/gpu-<device>-b5421-b7785.md).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

OUTDIR=${1:?usage: scripts/device-check.sh OUTDIR [--cpu] [--wheelhouse DIR] [--cache DIR] [--budget S] [--steps ...]}
shift
MODE=gpu WHEELHOUSE=$REPO/wheelhouse CACHE="" BUDGET=560 STEPS=env,python,sources,build,gate,bench PY= CUDA_ARCH=
while [ $# -gt 0 ]; do
  case $1 in
    --cpu) MODE=cpu ;;
    --wheelhouse) WHEELHOUSE=$(realpath "$2"); shift ;;
    --cache) CACHE=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --steps) STEPS=$2; shift ;;
    --python) PY=$2; shift ;;
    --cuda-arch) CUDA_ARCH=$2; shift ;;
    *) echo "device-check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUTDIR"
OUTDIR=$(realpath "$OUTDIR")
LOG=$OUTDIR/device-check.log
SUMMARY=$OUTDIR/summary.md
WORK=$(mktemp -d /tmp/device-check.XXXXXX)
START=$(date +%s)
DEADLINE=$((START + BUDGET))
export PYTHONUNBUFFERED=1
: > "$LOG"
STEP_ROWS=()

if [ "$MODE" = gpu ]; then
  CACHE=${CACHE:-/tmp/llama-migrate-cache}
  GPU_ARGS="--gpu cuda${CUDA_ARCH:+ --cuda-arch $CUDA_ARCH}" N_GPU_LAYERS=99 BENCH_SIZE=1b
  BENCH_ARGS="$GPU_ARGS --n-gpu-layers 99 --size 1b --slots 1,8,32 --prompt-tokens 512 --gen-tokens 64 --timeout 90"
else
  GPU_ARGS="" N_GPU_LAYERS=0 BENCH_SIZE=tiny
  BENCH_ARGS="--size tiny --slots 1,8,32 --prompt-tokens 128 --gen-tokens 16 --threads 1 --timeout 120"
fi
[ -n "$CACHE" ] && export LLAMA_MIGRATE_CACHE=$CACHE
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ] && [ "$MODE" = cpu ]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

say() { echo "[$(($(date +%s) - START)) s] $*" | tee -a "$LOG" >&2; }
left() { echo $((DEADLINE - $(date +%s))); }
wanted() { [[ ",$STEPS," == *",$1,"* ]]; }

# run_step NAME MAX_SECONDS FUNCTION: bounded by the step's own limit and by what is left of the budget; the
# function runs in a child bash (exported below) so that timeout can end it with everything it started
run_step() {
  local name=$1 limit=$2 rc started
  shift 2
  local budget
  budget=$(($(left) - 5))
  [ "$budget" -lt "$limit" ] && limit=$budget
  if [ "$limit" -le 10 ]; then
    say "$name: skipped, budget spent"
    STEP_ROWS+=("| $name | skipped: budget spent | 0 |")
    return 124
  fi
  say "$name: start (limit ${limit} s): $*"
  started=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c "$*" >> "$LOG" 2>&1
  rc=$?
  STEP_ROWS+=("| $name | $rc$([ $rc -eq 124 ] && echo ' (timed out)') | $(($(date +%s) - started)) |")
  say "$name: rc $rc after $(($(date +%s) - started)) s"
  return $rc
}

step_env() {
  {
    echo "mode: $MODE; budget ${BUDGET} s; cache ${LLAMA_MIGRATE_CACHE:-default}; python $PY"
    nvidia-smi -L 2>&1 || echo "nvidia-smi: not available"
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1 || true
    (nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>&1 | tail -2
    cmake --version | head -1; ninja --version; "$PY" --version; nproc; uptime
  } > "$OUTDIR/env.txt" 2>&1
  cat "$OUTDIR/env.txt" >> "$LOG"
}

step_python() {
  if "$PY" -c "import cffi, gguf, clang.cindex, tree_sitter_cpp" 2>/dev/null; then
    echo "python: everything importable already"
    return 0
  fi
  local site=$WORK/site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$WHEELHOUSE"/wheels/*.whl || return 1
  export PYTHONPATH=$REPO:$site${PYTHONPATH:+:$PYTHONPATH}
  "$PY" -c "import cffi, gguf, clang.cindex, tree_sitter_cpp, jinja2, yaml, rich, numpy; print('python: ok')"
}

python_field() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# The cache checks a tree by `git rev-parse HEAD` == its recorded commit. A slim tree has no history: give it a
# detached HEAD naming the commit (rev-parse does not look the object up). Without git on the machine, a stand-in
# on PATH answers that one query and refuses every other (llama.cpp's build-info then says "unknown").
mark_head() {
  local tree=$1 commit=$2
  if command -v git >/dev/null && [ ! -x "$WORK/bin/git" ]; then
    git -C "$tree" init -q || return 1
  else
    mkdir -p "$tree/.git" "$WORK/bin"
    printf '#!/bin/sh\nif [ "$1 $2" = "rev-parse HEAD" ] && [ -f .git/HEAD ]; then cat .git/HEAD; exit 0; fi\n%s\n' \
      'echo "git: not installed here (stand-in for rev-parse HEAD only)" >&2; exit 1' > "$WORK/bin/git"
    chmod +x "$WORK/bin/git"
  fi
  echo "$commit" > "$tree/.git/HEAD"
}

step_sources() {
  local cache
  cache=$("$PY" -c "from migrate.paths import cache_root; print(cache_root())")
  mkdir -p "$cache/src"
  for archive in "$WHEELHOUSE"/llama/*.tar.xz; do
    local name record
    name=$(basename "$archive" .tar.xz)
    record=$cache/src/$name.json
    if [ -f "$record" ] && [ -d "$cache/src/$name" ]; then echo "sources: $name already in $cache"; continue; fi
    rm -rf "${cache:?}/src/$name" && mkdir -p "$cache/src/$name"
    tar -xJf "$archive" -C "$cache/src/$name" || return 1
    mark_head "$cache/src/$name" "$(python_field "${archive%.tar.xz}.json" commit)" || return 1
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); r["path"]=sys.argv[2]; json.dump(r, open(sys.argv[3],"w"))' \
      "${archive%.tar.xz}.json" "$cache/src/$name" "$record" || return 1
    echo "sources: $name unpacked into $cache/src"
  done
  "$PY" -m migrate sources b5421 && "$PY" -m migrate sources b7785
}

step_build() {
  "$PY" -m migrate model --size tiny > "$WORK/model-tiny.txt" 2>&1 &
  local models=$!
  local bench_model=""
  if [ "$BENCH_SIZE" != tiny ]; then
    "$PY" -m migrate model --size "$BENCH_SIZE" > "$WORK/model-bench.txt" 2>&1 &
    bench_model=$!
  fi
  # the old fixture builds at b5415; the unmigrated fixture must fail at b7836 (shim stage) after the libraries
  "$PY" -m migrate build fixtures/localllm --llama b5421 $GPU_ARGS --json "$WORK/build-old.json" &
  local old=$!
  "$PY" -m migrate build fixtures/localllm --llama b7785 $GPU_ARGS --json "$WORK/build-new.json"
  local new_rc=$?
  wait $old; local old_rc=$?
  wait $models; [ -n "$bench_model" ] && wait "$bench_model"
  cat "$WORK"/model-*.txt
  echo "build: old rc $old_rc, new rc $new_rc (1 expected: unmigrated shim at b7836)"
  [ $old_rc -eq 0 ] && [ $new_rc -le 1 ] && grep -q '"stage": "shim"' "$WORK/build-new.json"
}

step_gate() {
  "$PY" -m migrate gate fixtures/localllm $GPU_ARGS --n-gpu-layers "$N_GPU_LAYERS" --out "$OUTDIR" \
    --json "$OUTDIR/gate.json" --junit "$OUTDIR/gate.xml" --quiet
}

step_bench() {
  "$PY" scripts/bench_gpu.py $BENCH_ARGS --work "$WORK/bench" --json "$OUTDIR/bench.json" \
    --markdown "$OUTDIR/bench.md"
}

summarise() {
  {
    echo "# device-check ($MODE) — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(($(date +%s) - START)) s of ${BUDGET} s"
    echo
    echo '```'; cat "$OUTDIR/env.txt" 2>/dev/null; echo '```'
    echo
    echo "| step | rc | seconds |"; echo "| --- | --- | ---: |"
    printf '%s\n' "${STEP_ROWS[@]}"
    echo
    for f in "$WORK"/build-old.json "$WORK"/build-new.json; do
      [ -f "$f" ] && "$PY" - "$f" <<'PYTHON'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"- build {d['llama']['provided']} {d['backend']}: llama.cpp {d['llama_seconds']:.0f} s "
      f"(reused={d['llama_reused']}, {d['llama_objects_rebuilt']} objects compiled), shim {d['shim_seconds']:.0f} s, "
      f"ok={d['ok']} (stage {d['stage']}), cuda={d.get('cuda')}")
PYTHON
    done
    echo
    [ -f "$OUTDIR/gate.json" ] && "$PY" - "$OUTDIR/gate.json" <<'PYTHON'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"## Gate: exit {d.get('exit_code')}")
print()
for k in (d.get("gate") or {}).get("classes", []):
    print(f"- class {k['code']} {k['title']}: {k['count']}; first: {k['findings'][0]['where']}: {k['findings'][0]['message'][:200]}")
v = d.get("verification") or {}
for label, c in (v.get("counts") or {}).items():
    print(f"- checklist on {label}: {c}")
for label, results in (v.get("results") or {}).items():
    for r in results:
        if r["name"] == "gpu_offload":
            seen = r.get("summary") if r["status"] == "passed" else r.get("message", "").removeprefix("skipped: ")
            print(f"- gpu_offload on {label}: {r['status']}: {seen}")
for c in v.get("devices") or []:
    print(f"- CPU vs GPU on {c['build']}: {c['status']}, failed={c['failed']}: {c['message']}")
print()
PYTHON
    [ -f "$OUTDIR/bench.md" ] && { echo "## Benchmark"; echo; cat "$OUTDIR/bench.md"; echo; }
    echo "## Log tail"; echo; echo '```'; tail -40 "$LOG"; echo '```'
    # the gate's own report last, headings one level down: summary.md alone is the GPU report to commit
    for report in "$OUTDIR"/*-b5421-b7785.md; do
      [ -f "$report" ] || continue
      echo; echo "## The gate's report ($(basename "$report"))"; echo
      sed 's/^#/##/' "$report"
    done
  } > "$SUMMARY"
}

export MODE PY WORK OUTDIR WHEELHOUSE REPO GPU_ARGS BENCH_ARGS N_GPU_LAYERS BENCH_SIZE LOG BUDGET
export -f step_env step_python step_sources step_build step_gate step_bench python_field mark_head
trap summarise EXIT
wanted env && run_step env 60 step_env
wanted python && { run_step python 120 step_python || { say "python setup failed: stopping"; exit 1; }; }
# the wheels went into a --target folder in the step's child bash: later steps need it on PYTHONPATH too
[ -d "$WORK/site" ] && export PYTHONPATH=$REPO:$WORK/site${PYTHONPATH:+:$PYTHONPATH}
command -v git >/dev/null || export PATH=$WORK/bin:$PATH  # the stand-in that mark_head writes, where git is missing
wanted sources && { run_step sources 120 step_sources || { say "sources failed: stopping"; exit 1; }; }
wanted build && run_step build 360 step_build
wanted gate && run_step gate 200 step_gate
wanted bench && run_step bench 300 step_bench
say "done: $OUTDIR"
