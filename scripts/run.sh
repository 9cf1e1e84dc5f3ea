#!/usr/bin/env bash
# The main job on the bundled default: set up (idempotent), then `migrate run` on fixtures/localllm with the
# generated tiny model. Extra arguments go to `migrate run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/migrate run "$@"
