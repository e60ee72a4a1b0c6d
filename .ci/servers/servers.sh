#!/usr/bin/env bash
# Real Apache Kafka (KRaft, one combined broker and controller), Apache Cassandra and Apicurio
# Registry (a Confluent-compatible schema registry) for the test suite, from Maven Central
# artifacts started with `java`, on free loopback ports.
#
#   servers.sh fetch         copy the jars into $TALLY_SERVERS_CACHE (once; kept between runs)
#   servers.sh start DIR     configure and start the servers under DIR, wait until they serve,
#                            and write DIR/env (the variables the suite reads)
#   servers.sh stop DIR      stop whatever `start` started under DIR
#
# DIR/env sets TALLY_TEST_KAFKA (host:port of the broker, read by the broker-facing suites),
# TALLY_TEST_SCYLLA (host:port of Cassandra's CQL port, read by the store's suites) and
# TALLY_TEST_SCHEMA_REGISTRY (the registry's Confluent-compatible API URL). A server
# that cannot be fetched or started is left out of DIR/env with a printed notice; the suites that
# need it then print that they skipped.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${TALLY_SERVERS_CACHE:-$HOME/.cache/tally-servers}"
KAFKA_VERSION=4.4.0
CASSANDRA_VERSION=5.0.8
APICURIO_VERSION=3.3.3
KAFKA_JARS="$CACHE/kafka-$KAFKA_VERSION"
CASSANDRA_JARS="$CACHE/cassandra-$CASSANDRA_VERSION"
APICURIO_APP="$CACHE/apicurio-registry-$APICURIO_VERSION"
# Start-up on 2 busy cores: Kafka takes seconds, Cassandra about a minute.
KAFKA_START_TIMEOUT=180
CASSANDRA_START_TIMEOUT=420
APICURIO_START_TIMEOUT=300

# Copies one server's jars (its pom.xml in $HERE/$1) into $2, unless a finished copy is there.
fetch_jars() {
  local name=$1 into=$2
  if [[ -f "$into/.complete" ]]; then
    echo "$name: jars cached in $into"
    return 0
  fi
  echo "$name: fetching jars from Maven Central into $into"
  rm -rf "$into" && mkdir -p "$into"
  (cd "$HERE/$name" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory="$into") \
    && touch "$into/.complete"
}

# Apicurio Registry's runnable Quarkus application (the `all` tar.gz of apicurio-registry-app),
# unpacked into $APICURIO_APP unless a finished copy is there.
fetch_apicurio() {
  if [[ -f "$APICURIO_APP/.complete" ]]; then
    echo "apicurio: application cached in $APICURIO_APP"
    return 0
  fi
  echo "apicurio: fetching io.apicurio:apicurio-registry-app:$APICURIO_VERSION (tar.gz, all) from Maven Central"
  rm -rf "$APICURIO_APP" && mkdir -p "$APICURIO_APP"
  mvn -q -B -Dstyle.color=never dependency:copy \
    -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
    -DoutputDirectory="$APICURIO_APP" \
    && tar -xzf "$APICURIO_APP"/apicurio-registry-app-*-all.tar.gz -C "$APICURIO_APP" \
    && rm -f "$APICURIO_APP"/apicurio-registry-app-*-all.tar.gz \
    && touch "$APICURIO_APP/.complete"
}

fetch() {
  fetch_jars kafka "$KAFKA_JARS" || echo "notice: the Kafka jars could not be fetched"
  fetch_jars cassandra "$CASSANDRA_JARS" || echo "notice: the Cassandra jars could not be fetched"
  fetch_apicurio || echo "notice: Apicurio Registry could not be fetched"
}

# A `java` of version 21 or later (Apicurio Registry 3 is built for 21): the default one, or
# one under /usr/lib/jvm. Prints nothing if there is none.
java_21() {
  local candidate major
  for candidate in java /usr/lib/jvm/*/bin/java; do
    command -v "$candidate" > /dev/null 2>&1 || continue
    major=$("$candidate" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [[ -n "$major" && "${major%%.*}" -ge 21 ]]; then
      echo "$candidate"
      return 0
    fi
  done
}

# A free TCP port on 127.0.0.1 (the kernel's choice; closed again at once).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until $2 (a log file) contains $3, while process $1 lives, for at most $4 seconds.
wait_for_line() {
  local pid=$1 log=$2 line=$3 timeout=$4 waited=0
  until grep -q "$line" "$log" 2> /dev/null; do
    if ! kill -0 "$pid" 2> /dev/null; then
      echo "the process exited before logging '$line'; the end of $log:"
      tail -n 30 "$log"
      return 1
    fi
    if ((waited >= timeout)); then
      echo "no '$line' in $log after ${timeout}s; its end:"
      tail -n 30 "$log"
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
    if ((waited % 30 == 0)); then echo "  ... still waiting (${waited}s)"; fi
  done
}

start_kafka() {
  local dir=$1/kafka port controller
  [[ -f "$KAFKA_JARS/.complete" ]] || { echo "notice: no Kafka jars; Kafka is not started"; return 1; }
  mkdir -p "$dir/data"
  port=$(free_port) && controller=$(free_port)
  cat > "$dir/server.properties" << EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
# One node: the internal topics cannot have more replicas than that.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests join and leave groups all the time; the default 3 s delay would slow every first join.
group.initial.rebalance.delay.ms=0
# Tally creates its topics itself, with their configuration: a topic made on first use would
# have the broker's defaults, which is exactly what the suite must notice.
auto.create.topics.enable=false
EOF
  local cp="$KAFKA_JARS/*"
  local id
  id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2> "$dir/format.log") || {
    echo "notice: Kafka's StorageTool failed:"; cat "$dir/format.log"; return 1; }
  java -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" \
    >> "$dir/format.log" 2>&1 || { echo "notice: formatting Kafka's storage failed:"; cat "$dir/format.log"; return 1; }
  java -Xms256m -Xmx768m -cp "$cp" kafka.Kafka "$dir/server.properties" > "$dir/kafka.log" 2>&1 &
  echo $! > "$dir/pid"
  echo "kafka: starting on 127.0.0.1:$port (pid $(cat "$dir/pid"), log $dir/kafka.log)"
  echo "$port" > "$dir/port"
}

start_cassandra() {
  local dir=$1/cassandra port storage
  [[ -f "$CASSANDRA_JARS/.complete" ]] || { echo "notice: no Cassandra jars; Cassandra is not started"; return 1; }
  mkdir -p "$dir/data" "$dir/commitlog" "$dir/saved_caches" "$dir/hints" "$dir/cdc_raw" "$dir/logs"
  port=$(free_port) && storage=$(free_port)
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$port#g" -e "s#@STORAGE_PORT@#$storage#g" \
    "$HERE/cassandra/cassandra.yaml" > "$dir/cassandra.yaml"
  # The module flags are those of Cassandra's own conf/jvm17-server.options.
  java -Xms1g -Xmx1g -XX:+UseG1GC \
    -Djdk.attach.allowAttachSelf=true \
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED \
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED \
    --add-exports java.sql/java.sql=ALL-UNNAMED \
    --add-exports java.base/java.lang.ref=ALL-UNNAMED \
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED \
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED \
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED \
    --add-opens java.base/java.lang.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED \
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED \
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
    --add-opens java.base/java.io=ALL-UNNAMED \
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED \
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED \
    --add-opens java.base/java.lang=ALL-UNNAMED \
    --add-opens java.base/java.util=ALL-UNNAMED \
    -Dio.netty.tryReflectionSetAccessible=true \
    -Dcassandra-foreground=yes \
    -Dcassandra.config="file://$dir/cassandra.yaml" \
    -Dcassandra.storagedir="$dir" \
    -Dcassandra.logdir="$dir/logs" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dlogback.configurationFile="$HERE/cassandra/logback.xml" \
    -cp "$CASSANDRA_JARS/*" org.apache.cassandra.service.CassandraDaemon > "$dir/cassandra.log" 2>&1 &
  echo $! > "$dir/pid"
  echo "cassandra: starting on 127.0.0.1:$port (pid $(cat "$dir/pid"), log $dir/cassandra.log)"
  echo "$port" > "$dir/port"
}

start_apicurio() {
  local dir=$1/apicurio port java
  [[ -f "$APICURIO_APP/.complete" ]] || { echo "notice: no Apicurio Registry; it is not started"; return 1; }
  java=$(java_21)
  [[ -n "$java" ]] || { echo "notice: no Java 21 or later for Apicurio Registry; it is not started"; return 1; }
  mkdir -p "$dir"
  port=$(free_port)
  # In-memory storage (the default): every run starts empty.
  "$java" -Xms128m -Xmx512m -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
    -jar "$APICURIO_APP/quarkus-run.jar" > "$dir/apicurio.log" 2>&1 &
  echo $! > "$dir/pid"
  echo "apicurio: starting on 127.0.0.1:$port (pid $(cat "$dir/pid"), $java, log $dir/apicurio.log)"
  echo "$port" > "$dir/port"
}

# Waits for server $2 started under $1 to log $3 (for at most $4 seconds); then appends
# `export $5` with the server's port put in place of PORT to $1/env, or prints $6.
await_server() {
  local dir=$1 name=$2 line=$3 timeout=$4 variable=$5 notice=$6 port
  [[ -f "$dir/$name/pid" ]] || return 0
  port=$(cat "$dir/$name/port")
  if wait_for_line "$(cat "$dir/$name/pid")" "$dir/$name/$name.log" "$line" "$timeout"; then
    echo "$name: serving on 127.0.0.1:$port"
    echo "export ${variable//PORT/$port}" >> "$dir/env"
  else
    echo "notice: $notice"
  fi
}

start() {
  local dir=$1
  mkdir -p "$dir"
  : > "$dir/env"
  start_kafka "$dir"
  start_cassandra "$dir"
  start_apicurio "$dir"
  await_server "$dir" kafka "Kafka Server started" $KAFKA_START_TIMEOUT \
    "TALLY_TEST_KAFKA=127.0.0.1:PORT" \
    "Kafka did not start; the suites print that they skipped real Kafka"
  await_server "$dir" cassandra "Starting listening for CQL clients" $CASSANDRA_START_TIMEOUT \
    "TALLY_TEST_SCYLLA=127.0.0.1:PORT" \
    "Cassandra did not start; the store's Cassandra suites print that they skipped"
  await_server "$dir" apicurio "Installed features" $APICURIO_START_TIMEOUT \
    "TALLY_TEST_SCHEMA_REGISTRY=http://127.0.0.1:PORT/apis/ccompat/v7" \
    "Apicurio Registry did not start; the schema-registry tests print that they skipped"
}

stop() {
  local dir=$1 server pid
  for server in kafka cassandra apicurio; do
    [[ -f "$dir/$server/pid" ]] || continue
    pid=$(cat "$dir/$server/pid")
    kill "$pid" 2> /dev/null || continue
    # A clean shutdown takes seconds; after 20 the process is killed.
    for _ in $(seq 20); do kill -0 "$pid" 2> /dev/null || break; sleep 1; done
    kill -9 "$pid" 2> /dev/null || true
    echo "$server: stopped"
  done
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "${2:?usage: servers.sh start DIR}" ;;
  stop) stop "${2:?usage: servers.sh stop DIR}" ;;
  *) echo "usage: servers.sh fetch | start DIR | stop DIR" >&2; exit 2 ;;
esac
