#!/usr/bin/env bash
# Local Kafka (KRaft, single node) + Redis without Docker.
#   .ci/stack.sh up|down|status
# Kafka comes from Maven Central (cached in ~/.cache/healthmon), Redis from Debian's redis-server.
# Only processes this script started (by PID file) are ever stopped.
set -euo pipefail

KAFKA_VERSION="${HEALTHMON_KAFKA_VERSION:-3.9.1}"
KAFKA_PORT="${HEALTHMON_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${HEALTHMON_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
REDIS_PORT="${HEALTHMON_REDIS_PORT:-6379}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${HEALTHMON_STACK_DIR:-$ROOT/.local/stack-$KAFKA_PORT}"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/healthmon"
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KAFKA_DIR="$STACK_DIR/kafka"
REDIS_DIR="$STACK_DIR/redis"

say() { printf '[stack] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

fetch_kafka() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v java >/dev/null || die "java not found: install a JDK 17 (Debian: apt-get install openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "mvn not found: install Maven (Debian: apt-get install maven)"
  say "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $LIBS (once)"
  local work="$CACHE_DIR/kafka-$KAFKA_VERSION"
  mkdir -p "$work"
  cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.healthmon</groupId><artifactId>kafka-local</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>
  </dependencies>
</project>
POM
  rm -rf "$LIBS.tmp"
  mvn -B -q -f "$work/pom.xml" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DoutputDirectory="$LIBS.tmp" -DincludeScope=runtime || die "Maven could not fetch Kafka $KAFKA_VERSION"
  rm -rf "$LIBS" && mv "$LIBS.tmp" "$LIBS" && touch "$LIBS/.complete"
}

kafka_up() {
  if alive "$KAFKA_DIR/pid"; then say "kafka already running on 127.0.0.1:$KAFKA_PORT (pid $(cat "$KAFKA_DIR/pid"))"; return 0; fi
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process: set HEALTHMON_KAFKA_PORT"
  fetch_kafka
  mkdir -p "$KAFKA_DIR/data"
  cat >"$KAFKA_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
PROPS
  cat >"$KAFKA_DIR/log4j.properties" <<'L4J'
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
L4J
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cid
    cid=$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    java -cp "$LIBS/*" kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_DIR/server.properties" \
      --ignore-formatted >"$KAFKA_DIR/format.log" 2>&1 || { cat "$KAFKA_DIR/format.log" >&2; die "kafka storage format failed"; }
  fi
  say "starting kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (logs: $KAFKA_DIR/server.log)"
  : >"$KAFKA_DIR/server.log"
  nohup java -Xms256m -Xmx768m -XX:+UseG1GC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KAFKA_DIR" -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" \
    -cp "$LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/stdout.log" 2>&1 &
  echo $! >"$KAFKA_DIR/pid"
  for _ in $(seq 1 120); do
    if grep -q "started (kafka.server" "$KAFKA_DIR/server.log" 2>/dev/null || grep -q "Kafka Server started" "$KAFKA_DIR/server.log" 2>/dev/null; then
      if port_open "$KAFKA_PORT"; then say "kafka is up"; return 0; fi
    fi
    alive "$KAFKA_DIR/pid" || { tail -n 30 "$KAFKA_DIR/stdout.log" "$KAFKA_DIR/server.log" >&2; die "kafka exited during start-up"; }
    sleep 0.5
  done
  tail -n 30 "$KAFKA_DIR/server.log" >&2
  die "kafka did not become ready within 60 s"
}

ensure_redis_server() {
  command -v redis-server >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's redis-server"
    (apt-get install -y -qq redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server; }) >&2 \
      || die "apt-get could not install redis-server"
    # The package starts a system service on 6379; it is not ours to keep running.
    command -v systemctl >/dev/null && systemctl disable --now redis-server >/dev/null 2>&1 || true
  else
    die "redis-server not found: install it (Debian: sudo apt-get install redis-server)"
  fi
}

redis_up() {
  if alive "$REDIS_DIR/pid"; then say "redis already running on 127.0.0.1:$REDIS_PORT (pid $(cat "$REDIS_DIR/pid"))"; return 0; fi
  port_open "$REDIS_PORT" && die "port $REDIS_PORT is taken by another process: set HEALTHMON_REDIS_PORT"
  ensure_redis_server
  mkdir -p "$REDIS_DIR"
  say "starting redis on 127.0.0.1:$REDIS_PORT"
  # Append-only persistence (fsync every second, no RDB snapshots): silences, the notification log and
  # the read model survive a Redis restart.
  nohup redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --save "" --appendonly yes \
    --appendfsync everysec \
    --daemonize no --logfile "$REDIS_DIR/redis.log" >/dev/null 2>&1 &
  echo $! >"$REDIS_DIR/pid"
  for _ in $(seq 1 50); do
    port_open "$REDIS_PORT" && { say "redis is up"; return 0; }
    alive "$REDIS_DIR/pid" || die "redis exited during start-up (see $REDIS_DIR/redis.log)"
    sleep 0.1
  done
  die "redis did not become ready"
}

stop_pid() {
  local name=$1 pidfile=$2
  if alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    say "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

status() {
  local rc=0
  if alive "$KAFKA_DIR/pid"; then echo "kafka: running, pid $(cat "$KAFKA_DIR/pid"), 127.0.0.1:$KAFKA_PORT"; else echo "kafka: stopped"; rc=1; fi
  if alive "$REDIS_DIR/pid"; then echo "redis: running, pid $(cat "$REDIS_DIR/pid"), 127.0.0.1:$REDIS_PORT"; else echo "redis: stopped"; rc=1; fi
  return $rc
}

case "${1:-}" in
  up) kafka_up; redis_up ;;
  kafka) kafka_up ;;
  redis) redis_up ;;
  down) stop_pid kafka "$KAFKA_DIR/pid"; stop_pid redis "$REDIS_DIR/pid" ;;
  clean) stop_pid kafka "$KAFKA_DIR/pid"; stop_pid redis "$REDIS_DIR/pid"; rm -rf "$STACK_DIR" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status|clean   (env: HEALTHMON_KAFKA_PORT, HEALTHMON_REDIS_PORT, HEALTHMON_STACK_DIR)" >&2; exit 2 ;;
esac
