#!/usr/bin/env bash
# Benchmark-only venv for the dlt peer in bench/github.py (never the product's lock or .venv).
#   bash bench/setup-dlt.sh        -> bench/.venv-dlt with dlt[postgres] from bench/requirements-dlt.lock
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv-dlt
.venv-dlt/bin/pip install -q --no-deps -r requirements-dlt.lock
.venv-dlt/bin/python -c "import dlt; from dlt.sources.rest_api import rest_api_source; print('dlt', dlt.__version__)"
