#!/usr/bin/env bash
# Starts the local RabbitMQ server (the Celery broker of tests/test_celery.py) if it is installed but
# down, then waits until 127.0.0.1:5672 accepts connections. Like start-postgres.sh.
set -uo pipefail
HOST=${RABBITMQ_HOST_TEST:-127.0.0.1}
PORT=${RABBITMQ_PORT_TEST:-5672}
up() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }
if up; then exit 0; fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "RabbitMQ is not installed: tests/test_celery.py will be skipped (apt-get install rabbitmq-server)" >&2
  exit 0
fi
if [ -x /etc/init.d/rabbitmq-server ]; then
  /etc/init.d/rabbitmq-server start >/dev/null 2>&1 || true
fi
if ! up && command -v rabbitmq-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
    su rabbitmq -s /bin/sh -c "rabbitmq-server -detached" >/dev/null 2>&1 || true
  else
    rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
fi
for _ in $(seq 1 60); do
  if up; then exit 0; fi
  sleep 1
done
echo "RabbitMQ is installed but not answering on $HOST:$PORT and could not be started; tests/test_celery.py needs it" >&2
exit 1
