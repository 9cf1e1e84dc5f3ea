#!/usr/bin/env bash
# The test command: set up (idempotent), then the whole test suite. llama.cpp builds land in the user
# cache (~/.cache/llama-migrate) on the first run and are reused afterwards. This is what CI runs (.ci/run).
#
# scripts/test.sh --fast [PYTEST ARGS]: the developer's loop — ruff and the `unit` tier only (tests that need no
# llama.cpp tree; tiers are set in tests/conftest.py), without the setup step. It runs with an empty cache and no
# way to fetch a tree (npm offline with an empty npm cache, git limited to local files), so a test that needs a tree
# but is marked `unit` fails here instead of passing slowly.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fast" ]; then
  shift
  [ -x .venv/bin/python ] || { echo "scripts/test.sh --fast: no .venv here; run scripts/setup.sh once" >&2; exit 2; }
  empty=$(mktemp -d)
  trap 'rm -rf "$empty"' EXIT
  .venv/bin/ruff check .
  LLAMA_MIGRATE_CACHE="$empty" npm_config_cache="$empty/npm" npm_config_offline=true GIT_ALLOW_PROTOCOL=file \
    .venv/bin/python -m pytest -q -m unit "$@"
  exit
fi
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
