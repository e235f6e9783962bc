#!/usr/bin/env bash
# Creates .venv with the locked dependencies and the project installed editable. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "integrations-dagster needs Python 3.11 (found $("$PY" --version 2>&1))" >&2
  exit 1
fi
stamp=.venv/.lock-installed
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.lock "$stamp" 2>/dev/null; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  cp requirements.lock "$stamp"
fi
