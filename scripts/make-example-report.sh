#!/usr/bin/env bash
# Regenerate the committed example report: `migrate run` on the bundled default (fixtures/localllm, the generated
# tiny model, b5421 -> b7785) and copy the report it writes to reports/, so the example never drifts from what the
# tool produces. Paths in the report are relative to the consumer tree or ~; timings are this machine's.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/migrate ] || scripts/setup.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
report=$(.venv/bin/migrate run --quiet --out "$out")
cp "$report" reports/example-localllm-b5421-b7785.md
echo reports/example-localllm-b5421-b7785.md
