#!/usr/bin/env bash
# Create .venv and install raydistill with its test tools. Idempotent: skips pip when
# pyproject.toml has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.raydistill-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing raydistill and its dependencies into $VENV (first time: a few minutes)"
  # torch first, so nothing else pulls a different build (torchvision must match it)
  "$VENV/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
  "$VENV/bin/python" -m pip install --quiet -e '.[test]'
  "$VENV/bin/python" -c "import raydistill, ray, torch, torchvision"
  echo "$want" > "$stamp"
fi
