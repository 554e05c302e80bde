#!/usr/bin/env bash
# Install system packages where possible (scripts/system-deps.sh), set up .venv
# (scripts/setup.sh), then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check gdbext backends tests bench fixtures
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
