#!/usr/bin/env bash
# Set up .venv (if needed) and run the test suite: bash scripts/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q -m "not slow" tests "$@"
