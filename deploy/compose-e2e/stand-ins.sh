#!/usr/bin/env bash
# Builds, with no container registry, the images that stand in for the upstream images
# docker-compose.yml names, under fit-check-e2e/ names (docker-compose.e2e.yml swaps them
# in; no image of the user's own is replaced):
#
#   python:3.11-slim                             Debian bookworm minbase + python3 (3.11),
#                                                made with mmdebstrap and `docker import`
#   busybox:1.37-musl                            Debian's busybox-static
#   otel/opentelemetry-collector-contrib:0.165.0 the collector build-tools.sh builds (ocb)
#   jaegertracing/jaeger:2.13.0                  Jaeger build-tools.sh builds (Go module)
#   victoriametrics/victoria-logs:v1.52.1        VictoriaLogs build-tools.sh builds
#   prom/prometheus:v2.42.0                      Debian's prometheus in a minbase rootfs
#   redis:7.0                                    Debian's redis-server in a minbase rootfs
#   nginx:1.22                                   Debian's nginx in a minbase rootfs
#
# (the last two for docker-compose.replicas.yml, named in docker-compose.replicas.e2e.yml)
#
# Each image carries the key of its inputs (Dockerfile, binary, package list) as a label
# and is rebuilt only when that key changes; the root file systems are cached as tar
# files under $FIT_CHECK_CACHE/compose-e2e/rootfs, keyed the same way. Builds run with
# --network none and FROM only scratch or images made here: nothing is pulled.
#
# Env: FIT_CHECK_E2E_DEBIAN_MIRROR (default http://deb.debian.org/debian) for mmdebstrap.
set -euo pipefail
# shellcheck source=deploy/compose-e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITE=bookworm # python3 is 3.11 there, as in python:3.11-slim
MIRROR="${FIT_CHECK_E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BIN="$CACHE/bin"
ROOTFS_DIR="$E2E_CACHE/rootfs"
KEY_LABEL="fit-check.e2e.key"
# Docs, manuals and translations are left out of the root file systems.
DPKG_EXCLUDES=('/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*')

# rootfs NAME PACKAGES [EXCLUDED PATHS...]: the path of a cached tar of a minbase root
# file system with PACKAGES (comma-separated), made with mmdebstrap when the cache has none.
rootfs() {
  local name=$1 packages=$2 key tar log tmp
  shift 2
  local args=(--variant=minbase "--include=$packages")
  for pattern in "${DPKG_EXCLUDES[@]}" "$@"; do args+=("--dpkgopt=path-exclude=$pattern"); done
  local sources=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main")
  key=$(printf '%s\n' "$SUITE" "${args[@]}" "${sources[@]}" | sha256_text)
  tar="$ROOTFS_DIR/$name-$key.tar"
  if [[ -f "$tar" ]]; then
    echo "$tar"
    return
  fi
  mkdir -p "$ROOTFS_DIR"
  tmp="$ROOTFS_DIR/.$name-$key.$$.tar"
  log="$ROOTFS_DIR/$name-$key.log"
  log "making the $name root file system with mmdebstrap ($packages)"
  if ! mmdebstrap "${args[@]}" "$SUITE" "$tmp" "${sources[@]}" >"$log" 2>&1; then
    rm -f "$tmp"
    tail -n 30 "$log" >&2
    die "mmdebstrap failed (log above, whole in $log)"
  fi
  mv -f "$tmp" "$tar"
  echo "$tar"
}

# build IMAGE KEY STANDS_FOR DOCKERFILE CONTEXT [BUILD ARGS...]: docker build, unless IMAGE
# already carries KEY.
build() {
  local image=$1 key=$2 stands_for=$3 dockerfile=$4 context=$5
  shift 5
  if [[ $(image_label "$image" "$KEY_LABEL") == "$key" ]]; then
    log "$image: up to date"
    return
  fi
  log "building $image (stands in for $stands_for)"
  local output
  output="$E2E_RUN/build-$(basename "${image%%:*}").log"
  "$DOCKER" build --network none --file "$dockerfile" --tag "$image" \
    --label "$KEY_LABEL=$key" --label "fit-check.e2e.stands-in-for=$stands_for" \
    "$@" "$context" >"$output" 2>&1 || { cat "$output" >&2; die "could not build $image"; }
}

# from_binary IMAGE STANDS_FOR DOCKERFILE BINARY [BASE]: an image of one file, staged alone
# as its build context (a hard link where it can be), on scratch or on the image BASE made
# here (passed as the build argument BUSYBOX_IMAGE; its key is part of this image's).
from_binary() {
  local image=$1 stands_for=$2 dockerfile=$3 binary=$4 base=${5:-} key context
  local args=()
  [[ -x "$binary" ]] || die "$binary is missing: run deploy/local/build-tools.sh (make stack-tools)"
  [[ -z "$base" ]] || args=(--build-arg "BUSYBOX_IMAGE=$base")
  key=$({ cat "$dockerfile" && sha256sum <"$binary" && echo "$base" &&
    { [[ -z "$base" ]] || image_label "$base" "$KEY_LABEL"; }; } | sha256_text)
  if [[ $(image_label "$image" "$KEY_LABEL") == "$key" ]]; then
    log "$image: up to date"
    return
  fi
  context=$(mktemp -d "$E2E_CACHE/context.XXXXXX")
  ln "$(readlink -f "$binary")" "$context/" 2>/dev/null || cp "$(readlink -f "$binary")" "$context/"
  build "$image" "$key" "$stands_for" "$dockerfile" "$context" "${args[@]}"
  rm -rf "$context"
}

# on_rootfs IMAGE STANDS_FOR DOCKERFILE TAR: TAR imported as a base image (its own
# fit-check-e2e/rootfs-<name> image, tagged with the tar's key), then DOCKERFILE built on
# it (as the build argument ROOTFS_IMAGE) with stand-ins/ as its context.
on_rootfs() {
  local image=$1 stands_for=$2 dockerfile=$3 tar=$4 base key name
  name=$(basename "$tar" .tar)
  base="$IMAGE_PREFIX/rootfs-${name%-*}:$name"
  imported "$base" "the root file system of $stands_for" "$tar"
  key=$({ cat "$dockerfile" && echo "$base"; } | sha256_text)
  build "$image" "$key" "$stands_for" "$dockerfile" "$STANDS" --build-arg "ROOTFS_IMAGE=$base"
}

# imported IMAGE STANDS_FOR TAR [CHANGES...]: `docker import` of TAR with a PATH (an
# imported image has no environment), unless IMAGE already holds that TAR.
imported() {
  local image=$1 stands_for=$2 tar=$3 key
  shift 3
  key=$(basename "$tar" .tar)
  if [[ $(image_label "$image" "$KEY_LABEL") == "$key" ]]; then
    log "$image: up to date"
    return
  fi
  log "importing $image from $(basename "$tar")"
  local changes=(
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "ENV LANG=C.UTF-8"
    "LABEL $KEY_LABEL=\"$key\""
    "LABEL fit-check.e2e.stands-in-for=\"$stands_for\""
  )
  for change in "$@"; do changes+=("$change"); done
  local flags=()
  for change in "${changes[@]}"; do flags+=(--change "$change"); done
  "$DOCKER" import "${flags[@]}" "$tar" "$image" >/dev/null
}

mkdir -p "$E2E_CACHE" "$E2E_RUN"
STANDS="$E2E_DIR/stand-ins"

python_tar=$(rootfs python python3,python3-venv,python-is-python3,passwd,ca-certificates)
imported "$IMAGE_PREFIX/python:3.11-slim" python:3.11-slim "$python_tar" 'CMD ["python3"]'

from_binary "$IMAGE_PREFIX/busybox:1.37-musl" busybox:1.37-musl \
  "$STANDS/busybox.Dockerfile" /bin/busybox
from_binary "$IMAGE_PREFIX/opentelemetry-collector-contrib:0.165.0" \
  otel/opentelemetry-collector-contrib:0.165.0 \
  "$STANDS/otel-collector.Dockerfile" "$BIN/otelcol-fit-check"
from_binary "$IMAGE_PREFIX/jaeger:2.13.0" jaegertracing/jaeger:2.13.0 \
  "$STANDS/jaeger.Dockerfile" "$BIN/jaeger" "$IMAGE_PREFIX/busybox:1.37-musl"
from_binary "$IMAGE_PREFIX/victoria-logs:v1.52.1" victoriametrics/victoria-logs:v1.52.1 \
  "$STANDS/victoria-logs.Dockerfile" "$BIN/victoria-logs"

# The time zones of the classic web UI's date picker (214 MB) are left out: the API is
# what is queried.
prometheus_tar=$(rootfs prometheus prometheus,busybox-static '/usr/share/javascript/moment-timezone/*')
on_rootfs "$IMAGE_PREFIX/prometheus:v2.42.0" prom/prometheus:v2.42.0 \
  "$STANDS/prometheus.Dockerfile" "$prometheus_tar"

redis_tar=$(rootfs redis redis-server)
on_rootfs "$IMAGE_PREFIX/redis:7.0" redis:7.0 "$STANDS/redis.Dockerfile" "$redis_tar"
nginx_tar=$(rootfs nginx nginx)
on_rootfs "$IMAGE_PREFIX/nginx:1.22" nginx:1.22 "$STANDS/nginx.Dockerfile" "$nginx_tar"
