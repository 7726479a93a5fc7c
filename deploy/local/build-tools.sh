#!/usr/bin/env bash
# Builds the real telemetry back-ends for the local (no-Docker) stack, from source
# packages only (Go module proxy, Debian apt) -- no prebuilt release binaries:
#
#   (a) the OpenTelemetry Collector, built by ocb from deploy/collector/builder-config.yaml
#   (b) Jaeger v2 (all-in-one, `jaeger --config file.yaml`) from its Go module
#   (c) Prometheus + promtool from Debian's `prometheus` package
#   (e) VictoriaLogs (the log store, with its web UI vmui embedded) from its Go module
#   (f) redis-server + redis-cli and nginx from Debian's `redis-server` and `nginx-light`
#       packages: the shared session store and the round-robin front of the replica
#       tests (tests/e2e/replicas.py, deploy/nginx/fit-check.conf); their system
#       services are never started
#   (s) Sloth (the SLO rule generator, `sloth generate`) from its Go module: turns
#       deploy/slo/fit-check.yaml into deploy/prometheus/slo-rules.yml (deploy/slo/generate.sh)
#   (d) optional, WITH_COMPOSE=1: the docker compose v2+ CLI from its Go module, only to
#       validate docker-compose.yml (`docker-compose config -q`) where the docker CLI
#       has no compose plugin; it needs no Docker engine for that
#
# Idempotent: each step is skipped when the cached binary for the pinned version (and,
# for the collector, the same manifest) is already there; a version stamp file sits
# next to each binary. Re-run freely.
#
# Env:
#   FIT_CHECK_CACHE   cache root (default: $HOME/.cache/fit-check); binaries in $FIT_CHECK_CACHE/bin
#   FORCE=1           rebuild everything even when the stamps match
#   SKIP_PROMETHEUS=1 do not touch apt (e.g. not root); promtool/prometheus (and redis-server,
#                     redis-cli, nginx, or the replica tests skip) must then be on PATH
#   WITH_COMPOSE=1    also build $FIT_CHECK_CACHE/bin/docker-compose (step d)
#
# Needs: go (>= the version the pinned modules require: 1.26 for collector 0.165.0),
# network access to the Go module proxy, and root + apt for Prometheus, Redis and nginx.
# First build on 2 cores takes several minutes (mostly compiling the two Go binaries).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${FIT_CHECK_CACHE:-$HOME/.cache/fit-check}"
BIN="$CACHE/bin"
BUILD="$CACHE/build"

# --- pinned versions -------------------------------------------------------------
# Must equal dist.version / the component versions in deploy/collector/builder-config.yaml
# and the otel/opentelemetry-collector-contrib image tag in docker-compose.yml.
COLLECTOR_VERSION="0.165.0"
# Jaeger's Go module path has no /v2 suffix, so the v2.x tags are not usable as module
# versions. Jaeger tags v1.N and v2.M on the same commit: v1.76.0 is the commit of
# Jaeger v2.13.0 (CHANGELOG.md: "v1.76.0 / v2.13.0 (2025-12-03)"), which is the
# jaegertracing/jaeger image tag in docker-compose.yml. cmd/jaeger is the v2 binary.
JAEGER_MODULE="github.com/jaegertracing/jaeger"
JAEGER_MODULE_VERSION="v1.76.0"
JAEGER_V2_VERSION="v2.13.0"
# VictoriaLogs: the victoriametrics/victoria-logs image in docker-compose.yml has the
# same version (tag v1.52.1).
VICTORIALOGS_MODULE="github.com/VictoriaMetrics/VictoriaLogs"
VICTORIALOGS_VERSION="v1.52.1"
# Debian bookworm ships 2.42.0; whatever apt installs is used (recorded in the stamp).
PROMETHEUS_PACKAGE="prometheus"
# Debian bookworm: redis-server 7.0, nginx-light 1.22 (upstream, proxy, map: all the
# front needs); whatever apt installs is used (recorded in the stamps).
REDIS_PACKAGE="redis-server"
NGINX_PACKAGE="nginx-light"
# Newest compose release whose go.mod the Go toolchain here (1.26.8) accepts.
COMPOSE_MODULE="github.com/docker/compose/v5"
COMPOSE_VERSION="v5.6.0"
# Sloth: the newest release, and the only one the module proxy lists; its go.mod wants
# go 1.26.0 and has no replace directives. The
# version is stamped into every generated rule (label sloth_version) and the file
# header, so deploy/prometheus/slo-rules.yml changes when this does: re-run
# deploy/slo/generate.sh after a bump (tests/deploy/test_slo.py compares).
SLOTH_MODULE="github.com/slok/sloth"
SLOTH_VERSION="v0.16.0"

MANIFEST="$REPO_ROOT/deploy/collector/builder-config.yaml"
COLLECTOR_BIN="$BIN/otelcol-fit-check"
JAEGER_BIN="$BIN/jaeger"
VICTORIALOGS_BIN="$BIN/victoria-logs"
BUILDER_BIN="$BIN/builder"

log() { printf '[build-tools] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stamp_ok() { # stamp_ok FILE EXPECTED -> 0 when FILE's content equals EXPECTED and FORCE is unset
  [[ "${FORCE:-0}" != 1 && -f "$1" && "$(cat "$1")" == "$2" ]]
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

need_go() {
  command -v go >/dev/null 2>&1 || die "go is not on PATH (install Go >= 1.26)"
}

mkdir -p "$BIN" "$BUILD"
start_all=$SECONDS

# --- (a) ocb + collector -------------------------------------------------------------
build_collector() {
  local want_builder="builder v$COLLECTOR_VERSION"
  if stamp_ok "$BUILDER_BIN.version" "$want_builder" && [[ -x "$BUILDER_BIN" ]]; then
    log "ocb $COLLECTOR_VERSION: cached ($BUILDER_BIN)"
  else
    need_go
    log "installing ocb: go install go.opentelemetry.io/collector/cmd/builder@v$COLLECTOR_VERSION"
    (cd "$BUILD" && GOBIN="$BIN" go install "go.opentelemetry.io/collector/cmd/builder@v$COLLECTOR_VERSION")
    echo "$want_builder" >"$BUILDER_BIN.version"
  fi

  grep -q "^  version: $COLLECTOR_VERSION\$" "$MANIFEST" \
    || die "$MANIFEST dist.version is not $COLLECTOR_VERSION: bump both together"

  # The stamp includes the manifest hash: adding a component rebuilds the binary.
  local want="otelcol-fit-check $COLLECTOR_VERSION manifest-sha256=$(sha256_of "$MANIFEST")"
  if stamp_ok "$COLLECTOR_BIN.version" "$want" && [[ -x "$COLLECTOR_BIN" ]]; then
    log "collector $COLLECTOR_VERSION: cached ($COLLECTOR_BIN)"
    return
  fi
  need_go
  local t0=$SECONDS dir="$BUILD/collector"
  log "building collector $COLLECTOR_VERSION with ocb (sources in $dir/otelcol-fit-check)"
  mkdir -p "$dir"
  # dist.output_path (./otelcol-fit-check) is relative to the builder's working dir.
  (cd "$dir" && "$BUILDER_BIN" --config "$MANIFEST")
  install -m 0755 "$dir/otelcol-fit-check/otelcol-fit-check" "$COLLECTOR_BIN"
  echo "$want" >"$COLLECTOR_BIN.version"
  log "collector built in $((SECONDS - t0))s"
}

# build_in_module MODULE VERSION PACKAGE OUTPUT LDFLAGS
# `go install module/pkg@version` refuses modules whose go.mod has replace or exclude
# directives (Jaeger's and compose's do), so fetch the module's source from the module
# proxy and build inside a writable copy of it, honouring its go.mod/go.sum exactly.
build_in_module() {
  local module=$1 version=$2 pkg=$3 out=$4 ldflags=$5 moddir src
  src="$BUILD/src-$(basename "$out")-$version"
  moddir="$(cd "$BUILD" && go mod download -json "$module@$version" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -n "$moddir" && -d "$moddir" ]] || die "could not download $module@$version"
  rm -rf "$src"
  cp -r "$moddir" "$src"
  chmod -R u+w "$src"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg")
  mv -f "$out.tmp" "$out"
  rm -rf "$src" # the module cache keeps the source; the copy was only for the build
}

# build_cached LABEL BIN WANT NOTE MODULE VERSION PACKAGE LDFLAGS: BIN built from
# MODULE@VERSION unless its stamp already says WANT; LABEL and NOTE are for the log.
build_cached() {
  local label=$1 bin=$2 want=$3 note=$4 module=$5 version=$6 pkg=$7 ldflags=$8
  if stamp_ok "$bin.version" "$want" && [[ -x "$bin" ]]; then
    log "$label: cached ($bin)"
    return
  fi
  need_go
  local t0=$SECONDS
  log "building $label from $module@$version${note:+ ($note)}"
  build_in_module "$module" "$version" "$pkg" "$bin" "$ldflags"
  echo "$want" >"$bin.version"
  log "$label built in $((SECONDS - t0))s"
}

# --- (b) Jaeger v2 ---------------------------------------------------------------------
build_jaeger() {
  local vpkg="$JAEGER_MODULE/internal/version"
  build_cached "jaeger $JAEGER_V2_VERSION" "$JAEGER_BIN" \
    "jaeger $JAEGER_V2_VERSION ($JAEGER_MODULE@$JAEGER_MODULE_VERSION)" \
    "cmd/jaeger; no UI assets: the query API still serves" \
    "$JAEGER_MODULE" "$JAEGER_MODULE_VERSION" ./cmd/jaeger \
    "-s -w -X $vpkg.latestVersion=$JAEGER_V2_VERSION -X $vpkg.commitSHA=$JAEGER_MODULE_VERSION -X $vpkg.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}

# --- (e) VictoriaLogs ----------------------------------------------------------------------
build_victorialogs() {
  build_cached "victoria-logs $VICTORIALOGS_VERSION" "$VICTORIALOGS_BIN" \
    "victoria-logs $VICTORIALOGS_VERSION ($VICTORIALOGS_MODULE)" \
    "app/victoria-logs, vmui embedded" \
    "$VICTORIALOGS_MODULE" "$VICTORIALOGS_VERSION" ./app/victoria-logs \
    "-s -w -X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=victoria-logs-$VICTORIALOGS_VERSION"
}

# --- (c) Prometheus from Debian -------------------------------------------------------
prometheus_version() { prometheus --version 2>/dev/null | head -n1 | awk '{print $3}'; }

apt_install() { # apt_install PACKAGE...
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# apt_install_no_services PACKAGE...: installs with apt, never starting a system service.
# The packages' maintainer scripts would start a system prometheus on :9090, redis on
# :6379 or nginx on :80 where services can be started; forbid that for the install only
# (Docker-style policy).
apt_install_no_services() {
  [[ "$(id -u)" == 0 ]] || die "$* missing: run as root (apt-get install -y $*) or put them on PATH"
  command -v apt-get >/dev/null 2>&1 || die "$* missing and apt-get is not available"
  local t0=$SECONDS policy_created=0 rc=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  log "installing Debian package(s) $*"
  apt_install "$@" || { apt-get update && apt_install "$@"; } || rc=$?
  if [[ "$policy_created" == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
  [[ "$rc" == 0 ]] || die "apt-get install $* failed ($rc)"
  log "$* installed in $((SECONDS - t0))s"
}

install_prometheus() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    log "prometheus $(prometheus_version): present ($(command -v prometheus))"
  elif [[ "${SKIP_PROMETHEUS:-0}" == 1 ]]; then
    log "SKIP_PROMETHEUS=1: not installing prometheus/promtool"
    return
  else
    apt_install_no_services "$PROMETHEUS_PACKAGE"
  fi
  # Link into the cache bin dir so every tool is found in one place.
  ln -sfn "$(command -v prometheus)" "$BIN/prometheus"
  ln -sfn "$(command -v promtool)" "$BIN/promtool"
  echo "prometheus $(prometheus_version) (debian package $PROMETHEUS_PACKAGE)" >"$BIN/prometheus.version"
}

# --- (f) Redis and nginx from Debian (the replica tests) ----------------------------------
# install_debian_tools PACKAGE STAMP BINARY...: the package when a BINARY is missing, then
# each BINARY linked into the cache bin dir and the package's version in STAMP.version.
install_debian_tools() {
  local package=$1 stamp=$2 missing=0 binary
  shift 2
  for binary in "$@"; do command -v "$binary" >/dev/null 2>&1 || missing=1; done
  if [[ "$missing" == 0 ]]; then
    log "$package $(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || echo '?'): present"
  elif [[ "${SKIP_PROMETHEUS:-0}" == 1 ]]; then
    log "SKIP_PROMETHEUS=1: not installing $package (the replica tests skip without it)"
    return
  else
    apt_install_no_services "$package"
  fi
  for binary in "$@"; do ln -sfn "$(command -v "$binary")" "$BIN/$binary"; done
  echo "$package $(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || echo '?') (debian package)" \
    >"$BIN/$stamp.version"
}

install_redis() { install_debian_tools "$REDIS_PACKAGE" redis-server redis-server redis-cli; }
# nginx lives in /usr/sbin, which a non-root PATH may lack.
install_nginx() { PATH="$PATH:/usr/sbin" install_debian_tools "$NGINX_PACKAGE" nginx nginx; }

# --- (s) Sloth ------------------------------------------------------------------------------
build_sloth() {
  build_cached "sloth $SLOTH_VERSION" "$BIN/sloth" \
    "sloth $SLOTH_VERSION ($SLOTH_MODULE)" \
    "cmd/sloth, the SLO rule generator" \
    "$SLOTH_MODULE" "$SLOTH_VERSION" ./cmd/sloth \
    "-s -w -X $SLOTH_MODULE/internal/info.Version=$SLOTH_VERSION"
}

# --- (d) docker compose CLI (optional) ----------------------------------------------------
build_compose() {
  build_cached "docker-compose $COMPOSE_VERSION" "$BIN/docker-compose" \
    "docker-compose $COMPOSE_VERSION" "" \
    "$COMPOSE_MODULE" "$COMPOSE_VERSION" ./cmd \
    "-s -w -X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION"
}

build_collector
build_jaeger
build_victorialogs
build_sloth
install_prometheus
install_redis
install_nginx
if [[ "${WITH_COMPOSE:-0}" == 1 ]]; then build_compose; fi

log "done in $((SECONDS - start_all))s"
cat <<EOF
collector:  $COLLECTOR_BIN   ($(cat "$COLLECTOR_BIN.version"))
jaeger:     $JAEGER_BIN   ($(cat "$JAEGER_BIN.version"))
victorialogs: $VICTORIALOGS_BIN   ($(cat "$VICTORIALOGS_BIN.version"))
prometheus: $(readlink -f "$BIN/prometheus" 2>/dev/null || echo missing)   ($(cat "$BIN/prometheus.version" 2>/dev/null || echo missing))
promtool:   $(readlink -f "$BIN/promtool" 2>/dev/null || echo missing)
redis:      $(readlink "$BIN/redis-server" 2>/dev/null || echo missing)   ($(cat "$BIN/redis-server.version" 2>/dev/null || echo missing))
nginx:      $(readlink -f "$BIN/nginx" 2>/dev/null || echo missing)   ($(cat "$BIN/nginx.version" 2>/dev/null || echo missing))
sloth:      $BIN/sloth   ($(cat "$BIN/sloth.version"))
ocb:        $BUILDER_BIN
EOF
if [[ -x "$BIN/docker-compose" ]]; then
  echo "compose:    $BIN/docker-compose   ($(cat "$BIN/docker-compose.version" 2>/dev/null))"
fi
