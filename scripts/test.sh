#!/usr/bin/env bash
# The second README command: set up, make sure PostgreSQL is up, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/start-postgres.sh
bash scripts/start-rabbitmq.sh  # the Celery broker of tests/test_celery.py
bash scripts/install-chromium.sh  # the browser tests drive Debian's Chromium
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DAGSTER_DISABLE_TELEMETRY=yes
# Lint and types first (config in pyproject.toml; scope: integrations_dagster/ and providers/).
.venv/bin/ruff check integrations_dagster providers
.venv/bin/mypy
export INTEGRATIONS_SLOW_TESTS=1  # also run the real dagster-daemon test (~30 s)
export INTEGRATIONS_KILL_TRIALS="${INTEGRATIONS_KILL_TRIALS:-20}"  # kill -9 short mode: trials per database (issue 9)
exec .venv/bin/pytest -n "${TEST_WORKERS:-2}" -q -p no:cacheprovider "$@"
