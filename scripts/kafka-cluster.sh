#!/usr/bin/env bash
# A local three-node KRaft cluster (make kafka-up BROKERS=3), each node broker and controller:
#   up | down | status                clients on 127.0.0.1:19192,19193,19194 (see BASE)
#   kill N | start N                  SIGKILL node N (1-3) / start it again (fault tests)
#   restart N                         stop node N (SIGTERM), start it, wait until it answers
#   controller                        prints the node id of the active controller
#   transactions                      the open transactions and their coordinators
#   bootstrap                         prints the bootstrap servers
# Data, logs and pids under var/kafka-cluster/nodeN (ignored by git; KAFKA_CLUSTER_VAR_DIR
# moves them, as the tests do to start from empty nodes). The broker jars are the
# ones `make setup` resolved (build/lib/kafka, the version of versions.env), as for
# scripts/kafka.sh; configuration conf/kafka/cluster.properties.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# KAFKA_CLUSTER_LIB_DIR: another broker version's jars (make test-faults KAFKA_BROKER_VERSION=...).
LIB_DIR=${KAFKA_CLUSTER_LIB_DIR:-$ROOT/build/lib/kafka}
VAR=${KAFKA_CLUSTER_VAR_DIR:-$ROOT/var/kafka-cluster}
HEAP=${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}
PY=$ROOT/.venv/bin/python
NODES=(1 2 3)
# Node N listens for clients on BASE+N and as a controller on BASE+100+N; KAFKA_CLUSTER_PORT_BASE
# moves them (tests run clusters of their own side by side). Below Linux's ephemeral range
# (32768-60999): an outgoing connection of some other process can never hold one of these
# ports when a node binds it.
BASE=${KAFKA_CLUSTER_PORT_BASE:-19191}
client_port() { echo $((BASE + $1)); }
controller_port() { echo $((BASE + 100 + $1)); }
BOOTSTRAP=$(for n in "${NODES[@]}"; do printf '127.0.0.1:%s,' "$(client_port "$n")"; done)
BOOTSTRAP=${BOOTSTRAP%,}
VOTERS=$(for n in "${NODES[@]}"; do printf '%s@127.0.0.1:%s,' "$n" "$(controller_port "$n")"; done)
VOTERS=${VOTERS%,}

# shellcheck disable=SC2206
JAVA=(java $HEAP -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  -Dlog4j.configuration="file:$ROOT/conf/kafka/log4j.properties" -cp "$LIB_DIR/*")

node_dir() { echo "$VAR/node$1"; }
pid_file() { echo "$(node_dir "$1")/kafka.pid"; }
running() { [[ -f $(pid_file "$1") ]] && kill -0 "$(cat "$(pid_file "$1")")" 2>/dev/null; }

render() {  # node N's server.properties
  local dir
  dir=$(node_dir "$1")
  mkdir -p "$dir/data" "$dir/logs"
  sed -e "s#@NODE@#$1#g" -e "s#@PORT@#$(client_port "$1")#g" \
    -e "s#@CONTROLLER_PORT@#$(controller_port "$1")#g" -e "s#@VOTERS@#$VOTERS#g" \
    -e "s#@VAR_DIR@#$dir#g" conf/kafka/cluster.properties > "$dir/server.properties"
}

port_free() {  # 0 when nothing listens on 127.0.0.1:$1
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {  # node N, formatted once with the cluster's id
  local dir port
  dir=$(node_dir "$1")
  if running "$1"; then return; fi
  for port in "$(client_port "$1")" "$(controller_port "$1")"; do
    port_free "$port" || { echo "kafka-cluster: port $port (node $1) is taken by another process" >&2; return 1; }
  done
  render "$1"
  if [[ ! -f $dir/data/meta.properties ]]; then
    [[ -f $VAR/cluster.id ]] || "${JAVA[@]}" kafka.tools.StorageTool random-uuid > "$VAR/cluster.id"
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$(cat "$VAR/cluster.id")" \
      -c "$dir/server.properties" > "$dir/logs/format.out"
  fi
  nohup "${JAVA[@]}" -Dkafka.logs.dir="$dir/logs" kafka.Kafka \
    "$dir/server.properties" > "$dir/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$(pid_file "$1")"
}

stop() {  # nodes $@ together: SIGTERM, then SIGKILL for a node that cannot finish (said)
  # Together: a KRaft node shuts down only once the controller quorum has recorded that it
  # may, so a node stopped after the others have gone would wait for a quorum for ever. Even
  # stopped together, the last one can lose the race: it is killed as soon as it is alone
  # (its log recovers at the next start), else after 30 s.
  local n pids=() left
  for n in "$@"; do
    if running "$n"; then pids+=("$n:$(cat "$(pid_file "$n")")"); kill -TERM "${pids[-1]#*:}"; fi
    rm -f "$(pid_file "$n")"
  done
  local alone=0
  for _ in $(seq 1 60); do
    left=()
    for n in "${pids[@]}"; do kill -0 "${n#*:}" 2>/dev/null && left+=("$n"); done
    ((${#left[@]})) || return 0
    # One node left of three: no quorum will ever record its shutdown.
    if ((${#pids[@]} == 3 && ${#left[@]} == 1 && (alone += 1) >= 10)); then break; fi
    sleep 0.5
  done
  for n in "${left[@]}"; do
    echo "kafka-cluster: node ${n%%:*} could not finish its shutdown (no controller quorum" \
      "left): SIGKILL" >&2
    kill -KILL "${n#*:}"
  done
}

wait_ready() {  # nodes $@ each answer a metadata request that lists all three brokers
  local deadline=$((SECONDS + 120)) n
  for n in "$@"; do
    while ! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(client_port "$n") "$PY" -m dlq.cli wait --brokers 3 \
      --timeout 5 2>/dev/null; do
      if ((SECONDS >= deadline)) || ! running "$n"; then
        echo "kafka-cluster: node $n did not answer; its last log lines:" >&2
        tail -n 20 "$(node_dir "$n")/logs/stdout.log" >&2 || true
        return 1
      fi
    done
  done
}

tool() {  # one of the broker's admin tools, against the nodes that run
  java -Xmx256m -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$ROOT/conf/kafka/tools-log4j.properties" -cp "$LIB_DIR/*" \
    "org.apache.kafka.tools.$1" --bootstrap-server "$BOOTSTRAP" "${@:2}"
}

case ${1:-} in
  up)
    [[ -d $LIB_DIR ]] || { echo "kafka-cluster: $LIB_DIR missing, run 'make setup'" >&2; exit 2; }
    mkdir -p "$VAR"
    for n in "${NODES[@]}"; do
      start "$n" || { stop "${NODES[@]}"; exit 1; }
    done
    if ! wait_ready "${NODES[@]}"; then stop "${NODES[@]}"; exit 1; fi
    echo "kafka-cluster: up, three nodes on $BOOTSTRAP (replication 3, min.insync.replicas 2)" ;;
  down)
    stop "${NODES[@]}"
    echo "kafka-cluster: stopped" ;;
  status)
    up=0
    for n in "${NODES[@]}"; do if running "$n"; then up=$((up + 1)); fi; done
    echo "kafka-cluster: $up of 3 nodes running"
    ((up == 3)) ;;
  kill)
    running "$2" || { echo "kafka-cluster: node $2 is not running" >&2; exit 1; }
    kill -KILL "$(cat "$(pid_file "$2")")"
    rm -f "$(pid_file "$2")"
    echo "kafka-cluster: node $2 killed (SIGKILL)" ;;
  start) start "$2" || exit 1; wait_ready "$2"; echo "kafka-cluster: node $2 started and answering" ;;
  restart)
    running "$2" || { echo "kafka-cluster: node $2 is not running" >&2; exit 1; }
    stop "$2"
    start "$2" || exit 1
    wait_ready "$2"
    echo "kafka-cluster: node $2 restarted and answering" ;;
  controller)
    # "LeaderId: N" of the metadata quorum (the KRaft controller that is active now).
    tool MetadataQuorumCommand describe --status | awk -F': *' '$1 == "LeaderId" {print $2}' ;;
  transactions) tool TransactionsCommand list ;;
  bootstrap) echo "$BOOTSTRAP" ;;
  *)
    echo "usage: $0 up|down|status|kill N|start N|restart N|controller|transactions|bootstrap" >&2
    exit 2 ;;
esac
