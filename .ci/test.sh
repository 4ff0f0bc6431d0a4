#!/usr/bin/env bash
# Runs the whole suite against a private Kafka + Redis on test ports, and stops only what it started.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Below Linux's ephemeral range (32768-60999): probing a free port in that range can connect a socket
# to itself and leave the port in TIME_WAIT, so the broker then cannot bind it.
export HEALTHMON_KAFKA_PORT="${HEALTHMON_TEST_KAFKA_PORT:-19092}"
export HEALTHMON_REDIS_PORT="${HEALTHMON_TEST_REDIS_PORT:-16379}"
export HEALTHMON_STACK_DIR="${HEALTHMON_TEST_STACK_DIR:-$PWD/.local/test-stack}"
export HEALTHMON_TEST_BROKER="kafka://127.0.0.1:$HEALTHMON_KAFKA_PORT"
export HEALTHMON_TEST_REDIS_URL="redis://127.0.0.1:$HEALTHMON_REDIS_PORT/0"
# A second broker whose only listener is SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256/512): the security tests.
export HEALTHMON_KAFKA_SASL="${HEALTHMON_TEST_SASL:-1}"
export HEALTHMON_KAFKA_SASL_PORT="$((HEALTHMON_KAFKA_PORT + 2))"
export HEALTHMON_STACK_SASL_PASSWORD="healthmon-secret"
if [ "$HEALTHMON_KAFKA_SASL" = 1 ]; then
  export HEALTHMON_TEST_SASL_BROKER="kafka://127.0.0.1:$HEALTHMON_KAFKA_SASL_PORT"
  export HEALTHMON_TEST_SASL_PASSWORD="$HEALTHMON_STACK_SASL_PASSWORD"
  export HEALTHMON_TEST_SASL_SSL_BROKER="kafka://127.0.0.1:$((HEALTHMON_KAFKA_SASL_PORT + 2))"
  export HEALTHMON_TEST_TLS_DIR="$HEALTHMON_STACK_DIR/kafka-sasl/tls"
fi
# Tests configure workers themselves; nothing from the caller's environment leaks into them.
unset HEALTHMON_BROKER HEALTHMON_REDIS_URL HEALTHMON_DATA_DIR HEALTHMON_TOPIC_PREFIX HEALTHMON_APP_ID

# Reuse a stack someone keeps up (stop only what this run started: the whole stack, or the SASL broker).
started=0
started_sasl=0
if ! HEALTHMON_KAFKA_SASL=0 .ci/stack.sh status >/dev/null 2>&1; then
  started=1
  if ! .ci/stack.sh up; then .ci/stack.sh clean; exit 1; fi
elif ! .ci/stack.sh status >/dev/null 2>&1; then
  started_sasl=1
  if ! .ci/stack.sh kafka-sasl; then .ci/stack.sh kafka-sasl-clean; exit 1; fi
fi
cleanup() {
  if [ "$started" = 1 ]; then .ci/stack.sh clean; fi
  if [ "$started_sasl" = 1 ]; then .ci/stack.sh kafka-sasl-clean; fi
}
trap cleanup EXIT

if [ "${HEALTHMON_TEST_LINT:-1}" = 1 ]; then
  .venv/bin/ruff check . || exit 1
  .venv/bin/ruff format --check . || exit 1
  .venv/bin/python -m mypy streams rules alerts || exit 1
fi

.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests (exit 5): treated as success, but the suite is empty" >&2
  rc=0
fi
exit $rc
