#!/usr/bin/env bash
# Set up (if needed) and run the quickstart job end to end on a local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/raydistill train jobs/digits.yaml "$@"
