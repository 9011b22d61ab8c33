#!/usr/bin/env bash
# Set up and run every check CI runs: lint, type check, the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy contracts components infra policy review demo cli serving training
echo "== pytest"; pytest "$@"
