#!/usr/bin/env bash
# The main job on the bundled default: set up (idempotent), then `migrate run` on fixtures/localllm with the
# generated tiny model. Extra arguments go to `migrate run`.
# llama.cpp's libraries: `--llama-build auto`, the registry package's prebuilt libraries of exactly the tree's release
# where one is published for this platform (the report's Builds table names them), else compiled from the tree
# (b5415 always; any npm failure too). `scripts/run.sh --llama-build source` compiles both (the last one given wins).
# Why auto (docs/performance.md, "A fresh clone"): the same statuses and greedy tokens on both kinds of build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/migrate run --llama-build auto "$@"
