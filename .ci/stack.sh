#!/usr/bin/env bash
# Local Kafka (KRaft, single node) + Redis without Docker.
#   .ci/stack.sh up|down|status|clean
# Kafka comes from Maven Central (cached in ~/.cache/healthmon), Redis from Debian's redis-server.
# Only processes this script started (by PID file) are ever stopped.
#   HEALTHMON_KAFKA_VERSION  3.9.x (default) or 4.x (log4j2 logging, protocol floor of KIP-896)
#   HEALTHMON_KAFKA_SASL=1   `up` also starts a second broker with a SASL_PLAINTEXT listener on
#                            HEALTHMON_KAFKA_SASL_PORT (default: Kafka port + 2, controller + 3) that
#                            accepts PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for user healthmon /
#                            HEALTHMON_STACK_SASL_PASSWORD (default healthmon-secret), and a SASL_SSL
#                            listener on the SASL port + 2 (certificates in STACK_DIR/kafka-sasl/tls):
#                            for the security tests.
set -euo pipefail

KAFKA_VERSION="${HEALTHMON_KAFKA_VERSION:-3.9.1}"
KAFKA_MAJOR="${KAFKA_VERSION%%.*}"
KAFKA_PORT="${HEALTHMON_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${HEALTHMON_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
SASL_WANTED="${HEALTHMON_KAFKA_SASL:-0}"
SASL_PORT="${HEALTHMON_KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}"
SASL_USER="healthmon"
SASL_PASSWORD="${HEALTHMON_STACK_SASL_PASSWORD:-healthmon-secret}"
REDIS_PORT="${HEALTHMON_REDIS_PORT:-6379}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${HEALTHMON_STACK_DIR:-$ROOT/.local/stack-$KAFKA_PORT}"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/healthmon"
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KAFKA_DIR="$STACK_DIR/kafka"
SASL_DIR="$STACK_DIR/kafka-sasl"
REDIS_DIR="$STACK_DIR/redis"

say() { printf '[stack] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Kafka's published pom carries no logging binding: 3.x logs through log4j 1 (reload4j), 4.x through
# log4j2 behind slf4j 2 (its pom brings log4j-api/core; the binding is ours to add).
logging_dependencies() {
  if [ "$KAFKA_MAJOR" -ge 4 ]; then
    cat <<DEPS
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>2.25.5</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.25.5</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.25.5</version></dependency>
DEPS
  else
    cat <<DEPS
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>
DEPS
  fi
}

# The JVM flag and file that point Kafka at its logging configuration (written into dir $1).
write_logging_config() {
  local dir=$1
  if [ "$KAFKA_MAJOR" -ge 4 ]; then
    cat >"$dir/log4j2.properties" <<'L4J'
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = info
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = info
L4J
    echo "-Dlog4j2.configurationFile=file:$dir/log4j2.properties"
  else
    cat >"$dir/log4j.properties" <<'L4J'
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
L4J
    echo "-Dlog4j.configuration=file:$dir/log4j.properties"
  fi
}

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
$(logging_dependencies)
  </dependencies>
</project>
POM
  rm -rf "$LIBS.tmp"
  mvn -B -q -Dstyle.color=never -f "$work/pom.xml" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DoutputDirectory="$LIBS.tmp" -DincludeScope=runtime || die "Maven could not fetch Kafka $KAFKA_VERSION"
  rm -rf "$LIBS" && mv "$LIBS.tmp" "$LIBS" && touch "$LIBS/.complete"
}

# make_tls DIR: a private CA, a server certificate for 127.0.0.1/localhost (server.pem: key + chain, the
# PEM keystore Kafka reads) and a client certificate (client.pem, client.key), for the TLS tests.
make_tls() {
  local d=$1
  [ -f "$d/client.pem" ] && return 0
  command -v openssl >/dev/null || die "openssl not found (Debian: apt-get install openssl)"
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 -subj "/CN=healthmon test CA"
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt -days 30 -extfile server.ext
    cat server.key server.crt ca.pem >server.pem
    openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=healthmon"
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 30
  ) >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "could not make the test certificates"; }
}

# broker_up NAME DIR PORT CONTROLLER_PORT HEAP SASL(0|1): one KRaft node (broker + controller).
broker_up() {
  local name=$1 dir=$2 port=$3 cport=$4 heap=$5 sasl=$6
  if alive "$dir/pid"; then say "$name already running on 127.0.0.1:$port (pid $(cat "$dir/pid"))"; return 0; fi
  port_open "$port" && die "port $port is taken by another process: set HEALTHMON_KAFKA_PORT"
  port_open "$cport" && die "port $cport (controller) is taken by another process"
  [ "$sasl" = 1 ] && port_open "$((port + 2))" && die "port $((port + 2)) (SASL_SSL) is taken by another process"
  fetch_kafka
  mkdir -p "$dir/data"
  if [ -f "$dir/version" ] && [ "$(cat "$dir/version")" != "$KAFKA_VERSION" ]; then
    die "$dir holds Kafka $(cat "$dir/version") data, not $KAFKA_VERSION: use another HEALTHMON_STACK_DIR or '$0 clean'"
  fi
  local listener="PLAINTEXT" extra="" scram=() listeners advertised
  listeners="PLAINTEXT://127.0.0.1:$port"
  if [ "$sasl" = 1 ]; then
    listener="SASL_PLAINTEXT"
    # A SASL_PLAINTEXT listener on PORT and a SASL_SSL one on PORT + 2 (a private CA's certificate for
    # 127.0.0.1, client certificates required). PLAIN users live in the JAAS lines; SCRAM credentials
    # are written into the metadata log at format.
    make_tls "$dir/tls"
    listeners="SASL_PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$((port + 2))"
    local l jaas=""
    for l in sasl_plaintext sasl_ssl; do
      jaas+="listener.name.$l.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$SASL_USER\" password=\"$SASL_PASSWORD\" user_$SASL_USER=\"$SASL_PASSWORD\";
listener.name.$l.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.$l.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
"
    done
    extra="sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=PLAIN
$jaas
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.pem
listener.name.sasl_ssl.ssl.client.auth=required"
    scram=(--add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]"
           --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]")
  fi
  advertised="$listeners"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners,CONTROLLER://127.0.0.1:$cport
advertised.listeners=$advertised
inter.broker.listener.name=$listener
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
$extra
PROPS
  local logflag
  logflag=$(write_logging_config "$dir")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cid
    cid=$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    java -cp "$LIBS/*" kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" \
      --ignore-formatted "${scram[@]}" >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "kafka storage format failed"; }
    echo "$KAFKA_VERSION" >"$dir/version"
  fi
  say "starting $name $KAFKA_VERSION on 127.0.0.1:$port (logs: $dir/server.log)"
  : >"$dir/server.log"
  nohup java -Xms128m "-Xmx$heap" -XX:+UseG1GC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$dir" "$logflag" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 120); do
    if grep -q "started (kafka.server" "$dir/server.log" 2>/dev/null || grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null; then
      if port_open "$port"; then say "$name is up"; return 0; fi
    fi
    alive "$dir/pid" || { tail -n 30 "$dir/stdout.log" "$dir/server.log" >&2; die "$name exited during start-up"; }
    sleep 0.5
  done
  tail -n 30 "$dir/server.log" >&2
  die "$name did not become ready within 60 s"
}

kafka_up() { broker_up kafka "$KAFKA_DIR" "$KAFKA_PORT" "$CONTROLLER_PORT" 768m 0; }

sasl_up() { broker_up kafka-sasl "$SASL_DIR" "$SASL_PORT" "$((SASL_PORT + 1))" 384m 1; }

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
  if alive "$KAFKA_DIR/pid"; then echo "kafka: running, pid $(cat "$KAFKA_DIR/pid"), 127.0.0.1:$KAFKA_PORT, $(cat "$KAFKA_DIR/version" 2>/dev/null)"; else echo "kafka: stopped"; rc=1; fi
  if [ "$SASL_WANTED" = 1 ]; then
    if alive "$SASL_DIR/pid"; then echo "kafka-sasl: running, pid $(cat "$SASL_DIR/pid"), 127.0.0.1:$SASL_PORT"; else echo "kafka-sasl: stopped"; rc=1; fi
  fi
  if alive "$REDIS_DIR/pid"; then echo "redis: running, pid $(cat "$REDIS_DIR/pid"), 127.0.0.1:$REDIS_PORT"; else echo "redis: stopped"; rc=1; fi
  return $rc
}

case "${1:-}" in
  up) kafka_up; [ "$SASL_WANTED" = 1 ] && sasl_up; redis_up ;;
  kafka) kafka_up ;;
  kafka-sasl) sasl_up ;;
  kafka-sasl-clean) stop_pid kafka-sasl "$SASL_DIR/pid"; rm -rf "$SASL_DIR" ;;
  redis) redis_up ;;
  down) stop_pid kafka "$KAFKA_DIR/pid"; stop_pid kafka-sasl "$SASL_DIR/pid"; stop_pid redis "$REDIS_DIR/pid" ;;
  clean) stop_pid kafka "$KAFKA_DIR/pid"; stop_pid kafka-sasl "$SASL_DIR/pid"; stop_pid redis "$REDIS_DIR/pid"; rm -rf "$STACK_DIR" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status|clean|kafka|kafka-sasl|redis   (env: HEALTHMON_KAFKA_VERSION, HEALTHMON_KAFKA_PORT, HEALTHMON_KAFKA_SASL, HEALTHMON_REDIS_PORT, HEALTHMON_STACK_DIR)" >&2; exit 2 ;;
esac
