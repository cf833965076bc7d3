#!/usr/bin/env bash
# Entry point of the image (Dockerfile): the first argument says which service this container is.
#   kafka         a single-node KRaft broker: conf/kafka/server.properties with the listeners of
#                 KAFKA_LISTENERS, KAFKA_ADVERTISED_LISTENERS, KAFKA_LISTENER_SECURITY_PROTOCOL_MAP
#                 and KAFKA_CONTROLLER_QUORUM_VOTERS; data in /opt/marketlag/var/kafka (a volume),
#                 formatted on the first start
#   jobmanager    the Flink JobManager, in the foreground, logging to the console
#   taskmanager   a Flink TaskManager, likewise
#   submit        `flink run -d` of the job (FLINK_SAVEPOINT: resume from that savepoint); prints
#                 the job id
#   anything else is run as it is (`dlq stats`, `flink list`, bash; the Kubernetes operator's
#                 commands, /docker-entrypoint.sh being this file)
# Flink's configuration: conf/flink/config.yaml with its placeholders filled in for the image,
# then FLINK_PROPERTIES ("key: value" lines) laid over it; for "anything else" only where there
# is none yet (the Kubernetes operator mounts its own).
set -euo pipefail
ROOT=/opt/marketlag
VAR=$ROOT/var
PY=/opt/venv/bin/python

flink_config() {
  mkdir -p "$VAR/flink/checkpoints" "$VAR/flink/savepoints"
  "$PY" "$ROOT/deploy/docker/flink_config.py" "$ROOT/conf/flink" "$FLINK_CONF_DIR"
}

kafka() {
  local data=$VAR/kafka config=$VAR/kafka/server.properties
  local lib=$ROOT/build/lib/kafka
  mkdir -p "$data/data" "$data/logs"
  sed -e "/^listeners=/c listeners=${KAFKA_LISTENERS:?}" \
      -e "/^advertised.listeners=/c advertised.listeners=${KAFKA_ADVERTISED_LISTENERS:?}" \
      -e "/^listener.security.protocol.map=/c listener.security.protocol.map=${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:?}" \
      -e "/^controller.quorum.voters=/c controller.quorum.voters=${KAFKA_CONTROLLER_QUORUM_VOTERS:?}" \
      -e "s#@VAR_DIR@#$data#g" "$ROOT/conf/kafka/server.properties" > "$config"
  # shellcheck disable=SC2206  # KAFKA_HEAP_OPTS: JVM options, word-split on purpose
  local java=(java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true
    -Dkafka.logs.dir="$data/logs" -Dlog4j.configuration="file:$ROOT/conf/kafka/log4j.properties"
    -cp "$lib/*")
  if [[ ! -f $data/data/meta.properties ]]; then
    "${java[@]}" kafka.tools.StorageTool format -t "$("${java[@]}" kafka.tools.StorageTool random-uuid)" \
      -c "$config" > "$data/logs/format.out"
    echo "kafka: formatted storage in $data"
  fi
  exec "${java[@]}" kafka.Kafka "$config"
}

submit() {
  flink_config
  local args=(run -d -py "$ROOT/jobs/dlq_job.py" -pyexec "$PY" -pyclientexec "$PY")
  [[ -n ${FLINK_SAVEPOINT:-} ]] && args+=(-s "$FLINK_SAVEPOINT")
  local out
  # shellcheck disable=SC2086  # JOB_ARGS: the job's own options, word-split on purpose
  out=$(flink "${args[@]}" -- --config "$ROOT/conf/job.yaml" ${JOB_ARGS:-} 2>&1) || {
    echo "$out" >&2
    exit 1
  }
  grep -oE 'JobID [0-9a-f]{32}' <<<"$out" | tail -n 1
}

case ${1:-} in
  kafka) kafka ;;
  jobmanager) flink_config; exec jobmanager.sh start-foreground ;;
  taskmanager) flink_config; exec taskmanager.sh start-foreground ;;
  submit) submit ;;
  *)
    [[ -f $FLINK_CONF_DIR/config.yaml ]] || flink_config
    exec "$@" ;;
esac
