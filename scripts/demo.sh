#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and walk the page tables of the shipped demo scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/gdbext walk --backend sim --scenario fixtures/scenarios/demo.json "$@"
