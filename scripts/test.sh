#!/usr/bin/env bash
# Set up (if needed), lint, and run the whole test suite (slow end-to-end tests included).
# pytest's summary ends with the time budget (tests/time_budget.py, docs/testing.md); the last
# line is this script's own total, setup and lint included.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
bash scripts/setup.sh
bash scripts/setup-browser.sh  # Chromium for tests/test_report_browser.py
.venv/bin/ruff check raydistill tests benchmarks
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
echo "test.sh: $((SECONDS - started)) s in all (setup, lint and tests), exit status $status"
exit "$status"
