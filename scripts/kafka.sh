#!/usr/bin/env bash
# Local single-node KRaft broker: up | down | status.
# Data, logs and the pid live under var/kafka (ignored by git). Uses the broker jars that
# `make setup` resolved into build/lib/kafka; the version is pinned in versions.env.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VAR_DIR=${KAFKA_VAR_DIR:-$ROOT/var/kafka}
PID_FILE=$VAR_DIR/kafka.pid
LIB_DIR=$ROOT/build/lib/kafka
HEAP=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
PORT=9092
PY=$ROOT/.venv/bin/python

running() { [[ -f $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

# shellcheck disable=SC2206
JAVA=(java $HEAP -XX:+UseG1GC -Djava.awt.headless=true
  -Dkafka.logs.dir="$VAR_DIR/logs" -Dlog4j.configuration="file:$ROOT/conf/kafka/log4j.properties"
  -cp "$LIB_DIR/*")

up() {
  [[ -d $LIB_DIR ]] || { echo "kafka: $LIB_DIR missing, run 'make setup'" >&2; exit 2; }
  if running; then
    echo "kafka: already running (pid $(cat "$PID_FILE")) on 127.0.0.1:$PORT"
    return
  fi
  mkdir -p "$VAR_DIR/data" "$VAR_DIR/logs"
  sed "s#@VAR_DIR@#$VAR_DIR#g" conf/kafka/server.properties > "$VAR_DIR/server.properties"
  if [[ ! -f $VAR_DIR/data/meta.properties ]]; then
    cluster_id=$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$VAR_DIR/server.properties" \
      > "$VAR_DIR/logs/format.out"
    echo "kafka: formatted storage (cluster $cluster_id)"
  fi
  nohup "${JAVA[@]}" kafka.Kafka "$VAR_DIR/server.properties" \
    > "$VAR_DIR/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
  # Ready means: the broker answers a metadata request (not merely that the port is open).
  if ! "$PY" -m dlq.admin --bootstrap-servers "127.0.0.1:$PORT" wait --timeout 90; then
    echo "kafka: did not become ready; last log lines:" >&2
    tail -n 30 "$VAR_DIR/logs/stdout.log" "$VAR_DIR/logs/server.log" >&2 || true
    down
    exit 1
  fi
  echo "kafka: up (pid $(cat "$PID_FILE")) on 127.0.0.1:$PORT, data in $VAR_DIR"
}

down() {
  if ! running; then
    rm -f "$PID_FILE"
    echo "kafka: not running"
    return
  fi
  pid=$(cat "$PID_FILE")
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "kafka: pid $pid still alive after 30 s, sending SIGKILL" >&2
    kill -KILL "$pid" || true
  fi
  rm -f "$PID_FILE"
  echo "kafka: stopped (pid $pid)"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) if running; then echo "kafka: running (pid $(cat "$PID_FILE"))"; else echo "kafka: not running"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
