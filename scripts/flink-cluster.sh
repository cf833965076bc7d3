#!/usr/bin/env bash
# Local standalone Flink cluster from the distribution inside the PyFlink wheel:
#   up | down | status | submit [SAVEPOINT] | savepoint | cancel | jobs
#   taskmanager-kill | taskmanager-kill-one | taskmanager-start   (fault injection)
# TASKMANAGERS=N (default 1): how many TaskManagers `up` starts.
# Config: conf/flink (copied to var/flink/conf with its @...@ placeholders filled in).
# Classpath: the wheel's lib/ plus flink-python (from opt/) and the Kafka connector and the
# project's jar, linked into var/flink/lib. Logs, pids, checkpoints and savepoints live under
# var/flink.
# A second cluster beside the first (the managed Flink application's test): FLINK_VAR_DIR (its
# folder), FLINK_REST_PORT and FLINK_RPC_PORT (8081, 6123), FLINK_PYTHON (the Python workers'
# interpreter), FLINK_PROJECT_JARS=0 (only Flink's own jars on the classpath, as on a managed
# service, where the job brings its connector itself).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VAR=${FLINK_VAR_DIR:-$ROOT/var/flink}
PY=$ROOT/.venv/bin/python
WORKER_PY=${FLINK_PYTHON:-$PY}
REST_PORT=${FLINK_REST_PORT:-8081}
RPC_PORT=${FLINK_RPC_PORT:-6123}
FLINK_DIST=$("$PY" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')
export FLINK_CONF_DIR=$VAR/conf FLINK_LIB_DIR=$VAR/lib FLINK_LOG_DIR=$VAR/log FLINK_PID_DIR=$VAR/pid
export PYFLINK_CLIENT_EXECUTABLE=$WORKER_PY
REST=http://localhost:$REST_PORT

prepare() {
  mkdir -p "$VAR/conf" "$VAR/lib" "$VAR/log" "$VAR/pid" "$VAR/checkpoints" "$VAR/savepoints"
  for f in conf/flink/*; do
    sed -e "s#@ROOT@#$ROOT#g" -e "s#@VAR@#$VAR#g" -e "s#@PYTHON@#$WORKER_PY#g" \
      -e "s#@RPC_PORT@#$RPC_PORT#g" -e "s#@REST_PORT@#$REST_PORT#g" "$f" > "$VAR/conf/$(basename "$f")"
  done
  rm -f "$VAR/lib"/*.jar
  ln -s "$FLINK_DIST"/lib/*.jar "$VAR/lib/"
  ln -s "$FLINK_DIST"/opt/flink-python-*.jar "$VAR/lib/"
  if [[ ${FLINK_PROJECT_JARS:-1} != 0 ]]; then
    ln -s "$ROOT"/build/lib/flink/*.jar "$VAR/lib/"
  fi
}

pid_file() { echo "$VAR/pid/flink-${USER:-}-$1.pid"; }  # named as Flink's scripts name it

pid_of() {  # pid of a running jobmanager or taskmanager (standalonesession / taskexecutor)
  local f
  f=$(pid_file "$1")
  [[ -f $f ]] || return 1
  local pid
  pid=$(tail -n 1 "$f")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

rest_up() { curl -fsS "$REST/overview" >/dev/null 2>&1; }

registered_tms() {  # TaskManagers registered with the JobManager
  curl -fsS "$REST/overview" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["taskmanagers"])'
}

running_tms() {  # TaskManager processes of the pid file that are alive
  local f n=0 pid
  f=$(pid_file taskexecutor)
  if [[ -f $f ]]; then
    while read -r pid; do
      if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then n=$((n + 1)); fi
    done < "$f"
  fi
  echo "$n"
}

up() {
  [[ -d build/lib/flink || ${FLINK_PROJECT_JARS:-1} == 0 ]] || {
    echo "flink: jars missing, run 'make setup'" >&2
    exit 2
  }
  prepare
  if pid=$(pid_of standalonesession); then
    echo "flink: JobManager already running (pid $pid)"
  else
    "$FLINK_DIST/bin/jobmanager.sh" start >/dev/null
  fi
  local want=${TASKMANAGERS:-1} have
  have=$(running_tms)
  if ((have >= want)); then
    echo "flink: $have TaskManager(s) already running"
  fi
  for _ in $(seq $((have + 1)) "$want"); do
    "$FLINK_DIST/bin/taskmanager.sh" start >/dev/null
  done
  for _ in $(seq 1 120); do
    if rest_up && [[ $(registered_tms) -ge $want ]]; then
      echo "flink: cluster up, web UI on $REST (JobManager pid $(pid_of standalonesession), $want TaskManager(s))"
      return
    fi
    sleep 0.5
  done
  echo "flink: cluster did not come up; see $VAR/log" >&2
  exit 1
}

stop_pid() {
  local pid=$1 name=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { echo "flink: $name stopped (pid $pid)"; return 0; }; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
  echo "flink: $name killed after 30 s (pid $pid)"
}

down() {
  local any=0
  for role in taskexecutor standalonesession; do
    # every pid the scripts recorded (a TaskManager may have been restarted)
    local f
    f=$(pid_file "$role")
    [[ -f $f ]] || continue
    while read -r pid; do
      [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && { stop_pid "$pid" "$role"; any=1; }
    done < "$f"
    rm -f "$f"
  done
  [[ $any == 1 ]] || echo "flink: not running"
}

flink() { "$FLINK_DIST/bin/flink" "$@"; }

submit() {
  local args=(run -d -py "$ROOT/jobs/dlq_job.py" -pyexec "$WORKER_PY" -pyclientexec "$WORKER_PY")
  [[ -n ${1:-} ]] && args+=(-s "$1")
  local out
  # shellcheck disable=SC2086  # JOB_ARGS: the job's own options, word-split on purpose
  out=$(flink "${args[@]}" -- ${JOB_ARGS:-} 2>&1) || { echo "$out" >&2; exit 1; }
  local id
  id=$(grep -oE 'JobID [0-9a-f]{32}' <<<"$out" | awk '{print $2}' | tail -n 1)
  [[ -n $id ]] || { echo "$out" >&2; echo "flink: no job id in the output" >&2; exit 1; }
  echo "$id" > "$VAR/job.id"
  echo "$id"
}

job_id() {
  if [[ -f $VAR/job.id ]]; then
    cat "$VAR/job.id"
  else
    echo "flink: no submitted job (var/flink/job.id)" >&2
    exit 2
  fi
}

# Fault injection (tests/e2e): kill every TaskManager with SIGKILL; start a new one.
descendants() {  # every process below pid $1
  local child
  for child in $(ps -o pid= --ppid "$1"); do
    echo "$child"
    descendants "$child"
  done
}

# Fails when there was no TaskManager to kill, so a fault test cannot pass without its fault.
kill_tm() {
  local f killed=0
  f=$(pid_file taskexecutor)
  [[ -f $f ]] || { echo "flink: no TaskManager pid file ($f)" >&2; exit 1; }
  while read -r pid; do
    [[ -n $pid ]] || continue
    # The whole TaskManager dies, as in a machine loss: its Python workers too (they would
    # linger as orphans otherwise).
    local family
    family=$(descendants "$pid")
    if kill -KILL "$pid" 2>/dev/null; then
      # shellcheck disable=SC2086
      [[ -n $family ]] && kill -KILL $family 2>/dev/null
      echo "flink: TaskManager pid $pid killed (SIGKILL)"
      killed=1
    fi
  done < "$f"
  rm -f "$f"
  ((killed)) || { echo "flink: no running TaskManager to kill" >&2; exit 1; }
}

# One TaskManager of several dies (the last one started), as when one machine of a cluster
# is lost: the job fails over onto the slots that are left.
kill_one_tm() {
  local f pid family
  f=$(pid_file taskexecutor)
  pid=$(grep -v '^$' "$f" 2>/dev/null | tail -n 1) || true
  if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
    echo "flink: no running TaskManager to kill" >&2
    exit 1
  fi
  family=$(descendants "$pid")
  kill -KILL "$pid"
  # shellcheck disable=SC2086
  [[ -n $family ]] && kill -KILL $family 2>/dev/null
  grep -v -x "$pid" "$f" > "$f.tmp" || true
  mv "$f.tmp" "$f"
  echo "flink: TaskManager pid $pid killed (SIGKILL), $(running_tms) still running"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status)
    if rest_up; then curl -fsS "$REST/overview"; echo; else echo "flink: not running"; exit 1; fi ;;
  submit) submit "${2:-}" ;;
  savepoint) flink stop --savepointPath "$VAR/savepoints" "$(job_id)" ;;
  cancel) flink cancel "$(job_id)" ;;
  jobs) flink list -a ;;
  taskmanager-kill) kill_tm ;;
  taskmanager-kill-one) kill_one_tm ;;
  taskmanager-start) "$FLINK_DIST/bin/taskmanager.sh" start >/dev/null; echo "flink: TaskManager started (pid $(pid_of taskexecutor))" ;;
  *)
    echo "usage: $0 up|down|status|submit [SAVEPOINT]|savepoint|cancel|jobs|taskmanager-kill|" \
      "taskmanager-kill-one|taskmanager-start" >&2
    exit 2 ;;
esac
