#!/usr/bin/env bash
# The Docker side of the project: an engine, the image, the compose stack on the host network.
#   engine-up     a running engine: the one `docker info` reaches, else Debian's (docker.io,
#                 docker-compose, debootstrap; installed with apt-get when missing, as root)
#                 started as `dockerd --iptables=false --ip6tables=false --bridge=none`
#                 (pid and log in var/docker), and said so
#   engine-down   stops the dockerd that engine-up started (by its pid); any other is left alone
#   base-image    BASE_IMAGE (debian:bookworm-slim): present, pulled, or, where no registry
#                 answers, made with debootstrap (--variant=minbase bookworm) and imported
#   build         the image marketlag-dlq:0.1.0 from ./Dockerfile (the legacy builder, host
#                 network), versions from versions.env, the host's extra CA certificates trusted
#   compose ARGS  Compose (v2 if the client has it, else v1; COMPOSE=v1|v2 chooses) with
#                 docker-compose.yml and docker-compose.host.yml (COMPOSE_KAFKA_PORT, ...)
#   up | down     the stack up (built first), or down with its containers, networks and volumes
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VAR=$ROOT/var/docker
PID_FILE=$VAR/dockerd.pid
IMAGE=marketlag-dlq:0.1.0
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
# Debian's client where there is one: a newer client without buildx refuses the legacy builder.
if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0 BASE_IMAGE
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-marketlag}

say() { echo "docker: $*"; }
fail() { echo "docker: $*" >&2; exit 2; }

engine_answers() { "$DOCKER" info >/dev/null 2>&1; }

install_engine() {
  [[ $(id -u) == 0 ]] || fail "no Docker engine runs and none is installed; install Docker" \
    "(Debian: sudo apt-get install docker.io docker-compose) and start it"
  say "installing Debian's engine and compose (apt-get install docker.io docker-compose debootstrap)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io docker-compose debootstrap >/dev/null
  DOCKER=/usr/bin/docker
}

engine_up() {
  if engine_answers; then
    say "engine running ($("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null))"
    return
  fi
  if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null \
    || ! command -v debootstrap >/dev/null; then
    install_engine
  fi
  [[ $(id -u) == 0 ]] || fail "no Docker engine is running: start it (sudo systemctl start docker)"
  mkdir -p "$VAR"
  # No bridge and no iptables: what a machine without them (containers, CI sandboxes) allows;
  # the stack then runs on the host network (docker-compose.host.yml).
  nohup dockerd --iptables=false --ip6tables=false --bridge=none \
    --pidfile "$VAR/dockerd.daemon.pid" > "$VAR/dockerd.log" 2>&1 &
  echo $! > "$PID_FILE"
  for _ in $(seq 1 120); do
    engine_answers && { say "engine started (dockerd pid $(cat "$PID_FILE"), log $VAR/dockerd.log)"; return; }
    kill -0 "$(cat "$PID_FILE")" 2>/dev/null || break
    sleep 0.25
  done
  tail -n 20 "$VAR/dockerd.log" >&2
  engine_down >/dev/null
  fail "dockerd did not come up; see $VAR/dockerd.log"
}

engine_down() {
  [[ -f $PID_FILE ]] || { say "no engine started here"; return; }
  local pid
  pid=$(cat "$PID_FILE")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; say "dockerd killed after 30 s"; fi
    say "engine stopped (dockerd pid $pid)"
  fi
  rm -f "$PID_FILE"
}

base_image() {
  if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE present"
    return
  fi
  if timeout 60 "$DOCKER" pull "$BASE_IMAGE" >/dev/null 2>&1; then
    say "pulled $BASE_IMAGE"
    return
  fi
  [[ $BASE_IMAGE == debian:bookworm* ]] || fail "cannot pull $BASE_IMAGE"
  command -v debootstrap >/dev/null || fail "cannot pull $BASE_IMAGE and no debootstrap to make it"
  local rootfs=$ROOT/build/docker/rootfs
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  say "no registry answers: making $BASE_IMAGE with debootstrap (bookworm, minbase)"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
    > "$ROOT/build/docker/debootstrap.log" 2>&1 \
    || { tail -n 20 "$ROOT/build/docker/debootstrap.log" >&2; fail "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  say "made $BASE_IMAGE"
}

build() {
  base_image
  # Certificates this machine trusts beyond the system's (a proxy that intercepts TLS): the
  # image's pip and Maven must trust them too.
  rm -f deploy/docker/ca/*.crt
  local ca
  for ca in "${DOCKER_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"/*.crt; do
    [[ -f $ca ]] && cp "$ca" deploy/docker/ca/
  done
  local args=(--network host -t "$IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE")
  local pin
  for pin in FLINK_VERSION FLINK_KAFKA_CONNECTOR_VERSION KAFKA_VERSION SCALA_BINARY_VERSION; do
    args+=(--build-arg "$pin=$(grep "^$pin=" versions.env | cut -d= -f2)")
  done
  local started=$SECONDS
  "$DOCKER" build -q "${args[@]}" . >/dev/null || fail "the image did not build (see above)"
  say "built $IMAGE in $((SECONDS - started)) s ($("$DOCKER" image inspect "$IMAGE" \
    --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

# Compose v2 (`docker compose`) where the client has it, else v1 (`docker-compose`, Debian's
# 1.29); COMPOSE=v1 or COMPOSE=v2 picks one.
compose() {
  local files=(-f docker-compose.yml -f docker-compose.host.yml)
  case ${COMPOSE:-} in
    v1) docker-compose "${files[@]}" "$@" ;;
    v2) "$DOCKER" compose "${files[@]}" "$@" ;;
    *)
      if "$DOCKER" compose version >/dev/null 2>&1; then
        "$DOCKER" compose "${files[@]}" "$@"
      else
        docker-compose "${files[@]}" "$@"
      fi ;;
  esac
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The stack on the host network: its ports must be free, and a stack that does not come up
# (a broker or JobManager not healthy in time, a failed submission) is taken down again.
up() {
  local spec var port
  [[ -n $(compose ps -q 2>/dev/null) ]] && { compose up -d; return; }  # up already: up to date
  for spec in COMPOSE_KAFKA_PORT:29092 COMPOSE_KAFKA_CONTROLLER_PORT:29093 \
    COMPOSE_FLINK_REST_PORT:28081 COMPOSE_FLINK_RPC_PORT:26123; do
    var=${spec%%:*}
    port=${!var:-${spec#*:}}
    if port_taken "$port"; then
      fail "port $port ($var) is taken on 127.0.0.1: stop what listens there or set $var"
    fi
  done
  build
  if ! compose up -d; then
    echo "docker: the stack did not come up; its logs:" >&2
    compose logs --tail 30 >&2 || true
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    fail "stack taken down again (scripts/docker.sh compose logs shows nothing now: see above)"
  fi
  local rest=${COMPOSE_FLINK_REST_PORT:-28081} kafka=${COMPOSE_KAFKA_PORT:-29092}
  say "stack up: Kafka on 127.0.0.1:$kafka, the Flink UI on http://127.0.0.1:$rest"
}

case ${1:-} in
  engine-up) engine_up ;;
  engine-down) engine_down ;;
  base-image) engine_answers || fail "no engine: scripts/docker.sh engine-up"; base_image ;;
  build) engine_answers || fail "no engine: scripts/docker.sh engine-up"; build ;;
  compose) shift; compose "$@" ;;
  up) engine_answers || fail "no Docker engine answers: start one (sudo dockerd, or" \
        "systemctl start docker), or let scripts/docker.sh engine-up install and start Debian's"
      up ;;
  down) compose down -v --remove-orphans ;;
  *) echo "usage: $0 engine-up|engine-down|base-image|build|compose ARGS|up|down" >&2; exit 2 ;;
esac
