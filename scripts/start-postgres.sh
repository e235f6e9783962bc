#!/usr/bin/env bash
# Starts the local PostgreSQL server if it is installed but down, then waits until it answers.
set -uo pipefail
HOST=${PGHOST_TEST:-127.0.0.1}
if command -v pg_isready >/dev/null 2>&1 && pg_isready -h "$HOST" -p 5432 -q; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  done
fi
for _ in $(seq 1 30); do
  if pg_isready -h "$HOST" -p 5432 -q 2>/dev/null; then exit 0; fi
  sleep 1
done
echo "PostgreSQL is not running on $HOST:5432 and could not be started; the test suite needs it" >&2
exit 1
