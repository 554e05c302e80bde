#!/usr/bin/env bash
# Install system packages where possible (scripts/system-deps.sh), set up .venv
# (scripts/setup.sh), then lint, type-check and run the whole test suite (or pytest with the
# arguments given).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check gdbext backends tests bench fixtures
.venv/bin/ruff format --check gdbext backends tests bench fixtures
echo "== mypy --strict"
.venv/bin/mypy
if [ "$#" -gt 0 ]; then
    echo "== pytest $*"
    exec .venv/bin/python -m pytest -q "$@"
fi
# The whole suite in two runs: the tests that boot no guest on every core (pytest-xdist, see
# conftest.py), then those that do in one process, where the guests booted once a session are
# shared.
echo "== pytest -m 'not qemu'"
.venv/bin/python -m pytest -q -m "not qemu"
echo "== pytest -m qemu"
.venv/bin/python -m pytest -q -m qemu
