#!/usr/bin/env bash
# The test command: set up (idempotent), then the whole test suite. llama.cpp builds land in the user
# cache (~/.cache/llama-migrate) on the first run and are reused afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
