#!/usr/bin/env bash
# The first README command: set up, then run the bundled demo through the real Dagster job on SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
export DAGSTER_DISABLE_TELEMETRY=yes
exec .venv/bin/python -m integrations_app.demo "$@"
