#!/usr/bin/env bash
# Set up .venv (if needed) and run the test suite: bash scripts/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# the formatter and the linter first (ruff.toml): a one-line reason and a non-zero exit when either fails
.venv/bin/ruff format --check --quiet . || { echo "run_tests.sh: ruff format would change the files above: run .venv/bin/ruff format ." >&2; exit 1; }
.venv/bin/ruff check --quiet . || { echo "run_tests.sh: ruff check found the problems above" >&2; exit 1; }
exec .venv/bin/python -m pytest -q -m "not slow" tests "$@"
