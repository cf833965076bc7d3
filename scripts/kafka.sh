#!/usr/bin/env bash
# Local single-node KRaft brokers:
#   up | down | status                      PLAINTEXT on 127.0.0.1:9092 (var/kafka)
#   up-secure | down-secure | status-secure  SASL_SSL on 127.0.0.1:9094, ACLs (var/kafka-secure)
# Data, logs and the pid live under var/ (ignored by git). Uses the broker jars that
# `make setup` resolved into build/lib/kafka; the version is pinned in versions.env.
#
# On its first start the secure broker makes, under var/kafka-secure (mode 700): a CA and the
# broker's certificate (tls/ca.pem, tls/broker.p12), random passwords, the SCRAM-SHA-512 users
# "admin" (super user) and "marketlag" (the application, with ACLs on the project's topics,
# groups and transactional ids), the same two as PLAIN users, and client.env with the KAFKA_*
# settings of the application user:   set -a; . var/kafka-secure/client.env; set +a
# shellcheck disable=SC1091,SC2153  # env files (secrets.env, admin.env) are written at run time
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LIB_DIR=$ROOT/build/lib/kafka
HEAP=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
PY=$ROOT/.venv/bin/python

# KAFKA_VAR_DIR (KAFKA_SECURE_VAR_DIR), KAFKA_PORT and KAFKA_CONTROLLER_PORT run another
# broker beside these (tests that stop and start a broker of their own).
case ${1:-} in
  *-secure)
    SECURE=1 VAR_DIR=${KAFKA_SECURE_VAR_DIR:-$ROOT/var/kafka-secure}
    PORT=${KAFKA_PORT:-9094} CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19094}
    TEMPLATE=conf/kafka/server-secure.properties ;;
  *)
    SECURE=0 VAR_DIR=${KAFKA_VAR_DIR:-$ROOT/var/kafka}
    PORT=${KAFKA_PORT:-9092} CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
    TEMPLATE=conf/kafka/server.properties ;;
esac
PID_FILE=$VAR_DIR/kafka.pid
TLS=$VAR_DIR/tls

running() { [[ -f $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

# shellcheck disable=SC2206
JAVA=(java $HEAP -XX:+UseG1GC -Djava.awt.headless=true
  -Dkafka.logs.dir="$VAR_DIR/logs" -Dlog4j.configuration="file:$ROOT/conf/kafka/log4j.properties"
  -cp "$LIB_DIR/*")

# The secure broker's CA, certificate, passwords and client settings: made once, kept.
secrets() {
  [[ -f $VAR_DIR/secrets.env ]] && return
  mkdir -p "$TLS"
  chmod 700 "$VAR_DIR"
  umask 077
  local admin_password app_password keystore_password
  admin_password=$(openssl rand -hex 16)
  app_password=$(openssl rand -hex 16)
  keystore_password=$(openssl rand -hex 16)
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=MarketLag local CA" \
    -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$TLS/broker.key" -out "$TLS/broker.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
    > "$TLS/broker.ext"
  openssl x509 -req -in "$TLS/broker.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
    -CAcreateserial -days 825 -extfile "$TLS/broker.ext" -out "$TLS/broker.pem" 2>/dev/null
  openssl pkcs12 -export -in "$TLS/broker.pem" -inkey "$TLS/broker.key" \
    -certfile "$TLS/ca.pem" -name broker -out "$TLS/broker.p12" -passout "pass:$keystore_password"
  rm -f "$TLS/broker.csr" "$TLS/broker.ext" "$TLS/broker.key" "$TLS/ca.srl"
  chmod 644 "$TLS/ca.pem"
  printf 'ADMIN_PASSWORD=%s\nAPP_PASSWORD=%s\nKEYSTORE_PASSWORD=%s\n' \
    "$admin_password" "$app_password" "$keystore_password" > "$VAR_DIR/secrets.env"
  client_env marketlag "$app_password" > "$VAR_DIR/client.env"
  client_env admin "$admin_password" > "$VAR_DIR/admin.env"
  echo "kafka: made a CA, the broker certificate and passwords in $VAR_DIR"
}

client_env() {  # the KAFKA_* settings (SPEC section 6) of user $1 with password $2
  printf '%s\n' "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$PORT" "KAFKA_SECURITY_PROTOCOL=SASL_SSL" \
    "KAFKA_SASL_MECHANISM=SCRAM-SHA-512" "KAFKA_SASL_USERNAME=$1" "KAFKA_SASL_PASSWORD=$2" \
    "KAFKA_SSL_CA_LOCATION=$TLS/ca.pem"
}

render() {  # the broker's server.properties from the template (mode 600: it holds passwords)
  local places=(-e "s#@VAR_DIR@#$VAR_DIR#g" -e "s#@PORT@#$PORT#g"
    -e "s#@CONTROLLER_PORT@#$CONTROLLER_PORT#g")
  if ((SECURE)); then
    # shellcheck disable=SC1091
    . "$VAR_DIR/secrets.env"
    (umask 077; sed "${places[@]}" -e "s#@ADMIN_PASSWORD@#$ADMIN_PASSWORD#g" \
      -e "s#@APP_PASSWORD@#$APP_PASSWORD#g" -e "s#@KEYSTORE_PASSWORD@#$KEYSTORE_PASSWORD#g" \
      "$TEMPLATE" > "$VAR_DIR/server.properties")
  else
    sed "${places[@]}" "$TEMPLATE" > "$VAR_DIR/server.properties"
  fi
}

format() {  # first start: format the storage (the secure broker: with its SCRAM users)
  local cluster_id scram=()
  cluster_id=$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)
  if ((SECURE)); then
    scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$ADMIN_PASSWORD]"
      --add-scram "SCRAM-SHA-512=[name=marketlag,password=$APP_PASSWORD]")
  fi
  "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$VAR_DIR/server.properties" \
    "${scram[@]}" > "$VAR_DIR/logs/format.out"
  echo "kafka: formatted storage (cluster $cluster_id)"
}

as_admin() {  # runs a project tool against this broker, as its admin on the secure one
  # (over PLAIN: its users are in server.properties, so nothing in the cluster can lose them)
  if ((SECURE)); then
    (set -a; . "$VAR_DIR/admin.env"; set +a; KAFKA_SASL_MECHANISM=PLAIN "$@")
  else
    env -u KAFKA_SECURITY_PROTOCOL -u KAFKA_SASL_MECHANISM -u KAFKA_SASL_USERNAME \
      -u KAFKA_SASL_PASSWORD -u KAFKA_SSL_CA_LOCATION KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$PORT" "$@"
  fi
}

up() {
  [[ -d $LIB_DIR ]] || { echo "kafka: $LIB_DIR missing, run 'make setup'" >&2; exit 2; }
  if running; then
    echo "kafka: already running (pid $(cat "$PID_FILE")) on 127.0.0.1:$PORT"
    return
  fi
  # Another process on our ports (a broker of another checkout, say) would answer the
  # readiness check below in this broker's place while this one fails to bind.
  local port
  for port in "$PORT" "$CONTROLLER_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "kafka: 127.0.0.1:$port is taken by another process (a broker of another" \
        "checkout? its 'make kafka-down'); not starting one here" >&2
      exit 1
    fi
  done
  mkdir -p "$VAR_DIR/data" "$VAR_DIR/logs"
  if ((SECURE)); then secrets; fi
  render
  [[ -f $VAR_DIR/data/meta.properties ]] || format
  nohup "${JAVA[@]}" kafka.Kafka "$VAR_DIR/server.properties" \
    > "$VAR_DIR/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
  # Ready means: the broker answers a metadata request (not merely that the port is open).
  local deadline=$((SECONDS + 90)) ready=0
  while running && ((SECONDS < deadline)); do
    if as_admin "$PY" -m dlq.cli wait --timeout 5 2>/dev/null; then ready=1; break; fi
  done
  if ((!ready)); then
    echo "kafka: did not become ready; last log lines:" >&2
    tail -n 30 "$VAR_DIR/logs/stdout.log" "$VAR_DIR/logs/server.log" >&2 || true
    down
    exit 1
  fi
  if ((SECURE)); then
    # The SCRAM users live in the cluster metadata. A restart once found them gone (after a
    # run that created and deleted other users and ACLs; not reproduced since): make any
    # that are missing again from secrets.env, say so, and check the application user gets
    # in with SCRAM before calling the broker up.
    (. "$VAR_DIR/secrets.env"; export SCRAM_PASSWORD_ADMIN=$ADMIN_PASSWORD \
      SCRAM_PASSWORD_MARKETLAG=$APP_PASSWORD; as_admin "$PY" -m kafkaio.scram ensure admin marketlag)
    as_admin "$PY" -m kafkaio.acl grant app User:marketlag
    if ! (set -a; . "$VAR_DIR/client.env"; set +a; "$PY" -m dlq.cli wait --timeout 60); then
      echo "kafka: the application user cannot authenticate with SCRAM" >&2
      down
      exit 1
    fi
    echo "kafka: up (pid $(cat "$PID_FILE")) on 127.0.0.1:$PORT (SASL_SSL, ACLs), data in" \
      "$VAR_DIR; client settings: set -a; . $VAR_DIR/client.env; set +a"
  else
    echo "kafka: up (pid $(cat "$PID_FILE")) on 127.0.0.1:$PORT, data in $VAR_DIR"
  fi
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
  up | up-secure) up ;;
  down | down-secure) down ;;
  status | status-secure)
    if running; then
      echo "kafka: running (pid $(cat "$PID_FILE")) on 127.0.0.1:$PORT"
    else
      echo "kafka: not running"
      exit 1
    fi ;;
  *) echo "usage: $0 up|down|status|up-secure|down-secure|status-secure" >&2; exit 2 ;;
esac
