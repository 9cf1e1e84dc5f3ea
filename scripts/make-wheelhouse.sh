#!/usr/bin/env bash
# Make the folder that scripts/device-check.sh needs on the GPU machine, which has no network, Python 3.12 without
# cffi, and takes at most 64 MiB of working tree + carried folders per call:
#
#   wheelhouse/wheels/*.whl        Python 3.12 manylinux x86_64 wheels of what that machine lacks, pinned to this
#                                  venv's versions: cffi, pycparser, gguf, libclang, tree-sitter, tree-sitter-cpp.
#                                  Already there (its PyTorch image): numpy, jinja2, pyyaml, rich, requests, tqdm,
#                                  and nvidia-cublas (CUDA 13), which migrate/cuda.py finds when the toolkit has no
#                                  cuBLAS. nvidia-cublas is NOT carried: its wheel is ~440 MB, over the limit.
#   wheelhouse/llama/*.tar.xz      the two llama.cpp trees (b5415 for b5421, b7836 for b7785) without .git, docs,
#   wheelhouse/llama/*.json        examples, tools, tests and the vocab files other than llama-spm: what a build, the
#                                  rewrite and the generated models use (~3 MB each instead of 21 + 28 MB of npm
#                                  tarballs, which also need git there to unpack their bundles), and their records.
#
# Usage: scripts/make-wheelhouse.sh [DIR]   (default: wheelhouse; ignored through .git/info/exclude, carried with
#        `carry: ["wheelhouse"]`). Needs the venv (scripts/setup.sh) and the two trees in the cache; network only
#        for the wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-wheelhouse}
PY=.venv/bin/python
WHEELS=(cffi pycparser gguf libclang tree-sitter tree-sitter-cpp)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64
           manylinux_2_5_x86_64)
# Folders of a llama.cpp tree the builds (LLAMA_BUILD_TESTS/EXAMPLES/TOOLS/SERVER off) never read.
SKIP_TOP='^(\.git|\.github|\.devops|docs|media|examples|tools|tests|benches|models|pocs|prompts|grammars|licenses)$'

mkdir -p "$OUT/wheels" "$OUT/llama"
grep -qx "/$OUT/" .git/info/exclude 2>/dev/null || echo "/$OUT/" >> .git/info/exclude

specs=()
for name in "${WHEELS[@]}"; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
  [ -n "$version" ] || { echo "make-wheelhouse: $name is not in the venv (run scripts/setup.sh)" >&2; exit 2; }
  specs+=("$name==$version")
done
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
rm -f "$OUT"/wheels/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platform_args[@]}" -d "$OUT/wheels" "${specs[@]}"

for tag in b5421 b7785; do
  record=$(mktemp)
  "$PY" -m migrate sources "$tag" --json "$record" >/dev/null
  read -r path provided commit < <("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]));
print(r["path"], r["provided"], r["commit"])' "$record")
  name="$provided-${commit:0:12}"
  (cd "$path" && { ls -A | grep -Ev "$SKIP_TOP"; ls models/ggml-vocab-llama-spm.gguf*; } \
    | tar --exclude-vcs -cJf - -T -) > "$OUT/llama/$name.tar.xz"
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]));
json.dump({"path": None, "provided": r["provided"], "commit": r["commit"], "source": r["source"] + " (slim copy)"},
          open(sys.argv[2], "w"), indent=1)' "$record" "$OUT/llama/$name.json"
  rm -f "$record"
done
du -sh "$OUT" "$OUT"/wheels "$OUT"/llama
ls -l "$OUT"/wheels "$OUT"/llama
