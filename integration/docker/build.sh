#!/usr/bin/env bash
# Builds the FROM-scratch images of the compose tier (compose.yaml) and prepares its state directory.
#
#   integration/docker/build.sh                  static release build, then images tagged :dev
#   integration/docker/build.sh --bin-dir DIR    images from binaries already built in DIR (e.g. target/debug;
#                                                dynamically linked ones get the libraries `ldd` lists)
#   options: --tag TAG (default $TETHER_TAG or dev)
#
# Images: tether/{mesos-emu,fake-rexray,tether-sidecar,tether-scheduler,es-standin}:TAG, each holding one
# binary as its entrypoint. The state directory ($TETHER_COMPOSE_DIR, default /tmp/tether-compose) gets
# the admin and agent tokens and the scheduler listener's TLS files (`tls/`, made with openssl);
# compose.yaml mounts it at the same path in every container, because the
# plugins' mountpoints must mean the same path to the host's Docker engine that bind-mounts them.
set -euo pipefail

BINS="mesos-emu fake-rexray es-standin tether-sidecar tether-scheduler"
TAG=${TETHER_TAG:-dev}
BIN_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --bin-dir) BIN_DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

if [ -z "$BIN_DIR" ]; then
  args=()
  for b in $BINS; do args+=(--bin "$b"); done
  # An explicit --target keeps these static artefacts apart from the normal (dynamic) build.
  (cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --target x86_64-unknown-linux-gnu "${args[@]}")
  BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/release
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
for b in $BINS; do
  src=$BIN_DIR/$b
  [ -x "$src" ] || { echo "build.sh: $src is missing; build it first" >&2; exit 1; }
  root=$ctx/$b/rootfs
  mkdir -p "$root/tmp"
  cp "$src" "$root/$b"
  # A static binary has no libraries for ldd to list; a dynamic one needs its loader and libraries.
  for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*' || true); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  if [ "$b" = es-standin ]; then
    # The official image's layout and user (es_standin::image): ES_HOME with config, data and logs owned
    # 1000:0 and group-writable, the bundled config files, and `USER 1000:0` as 8.x has.
    home=$ctx/$b/es-home
    mkdir -p "$home/config" "$home/data" "$home/logs"
    printf 'cluster.name: "docker-cluster"\nnetwork.host: 0.0.0.0\n' > "$home/config/elasticsearch.yml"
    printf -- '-XX:+UseG1GC\n' > "$home/config/jvm.options"
    printf 'status = error\n' > "$home/config/log4j2.properties"
    chmod 0775 "$home" "$home/config" "$home/data" "$home/logs"
    chmod 0664 "$home/config/"*
    printf 'FROM scratch\nCOPY rootfs/ /\nCOPY --chown=1000:0 es-home/ /usr/share/elasticsearch/\nUSER 1000:0\nWORKDIR /usr/share/elasticsearch\nENTRYPOINT ["/%s"]\n' "$b" > "$ctx/$b/Dockerfile"
  else
    printf 'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT ["/%s"]\n' "$b" > "$ctx/$b/Dockerfile"
  fi
  docker build -q --label tether.compose=1 -t "tether/$b:$TAG" "$ctx/$b" >/dev/null
  echo "built tether/$b:$TAG"
done

STATE=${TETHER_COMPOSE_DIR:-/tmp/tether-compose}
mkdir -p "$STATE/plugins" "$STATE/backend" "$STATE/scheduler" "$STATE/agents"
for t in admin agent; do
  if [ ! -s "$STATE/$t.token" ]; then
    (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$STATE/$t.token")
  fi
done
# The scheduler's gRPC listener runs TLS (the `elastic` password crosses it): a CA and a certificate for
# the scheduler's address, made anew each time (the subnet may differ from the last run's).
SUBNET=${TETHER_COMPOSE_SUBNET:-127.0.0}
tls=$STATE/tls
mkdir -p "$tls"
(
  umask 077
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=tether-compose listener CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=tether-scheduler" \
    -keyout "$tls/scheduler.key" -out "$tls/scheduler.csr" 2>/dev/null
  printf 'subjectAltName=IP:%s.2,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
    "$SUBNET" > "$tls/scheduler.ext"
  openssl x509 -req -in "$tls/scheduler.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 365 -extfile "$tls/scheduler.ext" -out "$tls/scheduler.crt" 2>/dev/null
)
chmod 644 "$tls/ca.crt" "$tls/scheduler.crt"
echo "state directory $STATE ready"
