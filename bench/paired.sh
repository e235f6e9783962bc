#!/usr/bin/env bash
# Paired child runs of bench/github.py (docs/BENCHMARKS.md, "Fixed cost of one sync", 2026-12-04):
#   flock /tmp/bench.lock bash bench/paired.sh N R [old new off pipe loop]     # wall s per run
#   flock /tmp/bench.lock bash bench/paired.sh --cpu N 1 old new off pipe loop  # bench/cpu_account.py per run
# Per repeat, in the order given, each on a fresh database: old = the worktree $OLD (default
# /work/wt/old, e.g. `git worktree add --detach /work/wt/old c14c7e5` + its own scripts/setup.sh), new =
# this worktree, off = this worktree with INTEGRATIONS_APPLY_AT_WRITE=false, pipe = off plus
# INTEGRATIONS_PIPELINE_CHUNKS=true, loop = the hand-written loop. `nice -n -10` each.
set -uo pipefail
CPU=0; if [ "${1:-}" = "--cpu" ]; then CPU=1; shift; fi
N=$1; R=$2; shift 2; WHICH=${*:-old new loop}
HERE=$(cd "$(dirname "$0")/.." && pwd); OLD=${OLD:-/work/wt/old}
DB=${INTEGRATIONS_BENCH_DB:-bench_paired}; export DAGSTER_DISABLE_TELEMETRY=yes
URL="postgresql://postgres@127.0.0.1:5432/$DB"
for r in $(seq 1 "$R"); do
  for w in $WHICH; do
    dir=$HERE; kind=framework; extra=()
    case $w in
      old) dir=$OLD;;
      off) extra=(INTEGRATIONS_APPLY_AT_WRITE=false);;
      pipe) extra=(INTEGRATIONS_APPLY_AT_WRITE=false INTEGRATIONS_PIPELINE_CHUNKS=true);;
      loop) kind=loop;;
    esac
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" \
      -c "CREATE DATABASE $DB" >/dev/null 2>&1
    if [ $CPU = 1 ]; then
      out=$(cd "$dir" && env "${extra[@]}" PYTHONPATH="$dir" nice -n -10 .venv/bin/python "$HERE/bench/cpu_account.py" \
        $kind "$URL" "$N" 2>/dev/null | tail -1)
    else
      out=$(cd "$dir" && env "${extra[@]}" nice -n -10 .venv/bin/python bench/github.py --child $kind "$URL" "$N" \
        2>/dev/null | tail -1 | python3 -c 'import json,sys; print(round(json.loads(sys.stdin.read())["seconds"], 2))')
    fi
    echo "$N r$r $w ${out:-FAIL} load=$(cut -d' ' -f1 /proc/loadavg)"
  done
done
