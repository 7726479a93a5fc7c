#!/usr/bin/env bash
# `make e2e-compose`: the project's own docker-compose.yml, run by a real Docker engine
# with no container registry, checked from outside by pytest (tests/e2e_compose).
#
#   run.sh         engine (engine.sh), stand-in images (stand-ins.sh), wheelhouse
#                  (wheelhouse.sh) served on loopback for deploy/Dockerfile, compose build
#                  and up of every service but Grafana, pytest -m compose, then down -v;
#                  then the same for the replicas variant (docker-compose.replicas.yml:
#                  two replicas, Redis, nginx) as its own project, fit-check-e2e-replicas,
#                  from the same images: tests/e2e_compose/test_compose_replicas.py
#   run.sh clean   remove the fit-check-e2e/ images and the cached root file systems and
#                  wheelhouses: the next run starts cold
#
# Grafana is not started: its image can be neither pulled nor built here (no registry,
# no Debian package), and a stand-in would be no test of it.
#
# Env:
#   FIT_CHECK_EXTRAS                  extras built into the service image (as `make up`)
#   FIT_CHECK_E2E_WHEELHOUSE_PORT     loopback port of the wheelhouse (default 38417; a
#                                     fixed one keeps the image's pip layers cached)
#   FIT_CHECK_E2E_KEEP=1              leave the last stack (and a dockerd started here)
#                                     running
#   FIT_CHECK_E2E_VARIANTS            which stacks to run, in this order (default
#                                     "single replicas"; "replicas" alone skips the
#                                     docker-compose.yml checks)
#   PYTEST_ARGS                       more pytest arguments (e.g. -x, -k NAME), for both
set -euo pipefail
# shellcheck source=deploy/compose-e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMPOSE="$E2E_DIR/compose.sh"
PYTHON="$REPO_ROOT/.venv/bin/python"
SERVER_PID=""
STACK_STARTED=0
TAGGED=() # upstream names tagged onto stand-ins for the victorialogs build, to untag
TIMES=()
VARIANTS="${FIT_CHECK_E2E_VARIANTS:-single replicas}"
REPLICAS_TESTS="$REPO_ROOT/tests/e2e_compose/test_compose_replicas.py"
# The replicas variant's pace: each provider call takes 1 s, so a stream lasts about 4 s,
# long enough to be cut mid-way and read on from the other replica.
REPLICAS_SETTINGS=(FIT_CHECK_LATENCY_MS=1000)

phase() { # phase NAME COMMAND...: run COMMAND and record how long it took
  local name=$1 t0=$SECONDS
  shift
  "$@"
  TIMES+=("$name $((SECONDS - t0))s")
}

port_free() { "$PYTHON" -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$1"; }

serve_wheelhouse() { # serve_wheelhouse DIR: sets WHEELHOUSE_URL
  local dir=$1 port=${FIT_CHECK_E2E_WHEELHOUSE_PORT:-38417}
  if ! port_free "$port" 2>/dev/null; then
    port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    log "port ${FIT_CHECK_E2E_WHEELHOUSE_PORT:-38417} is taken: serving on $port (the image's pip layers rebuild)"
  fi
  "$PYTHON" -m http.server "$port" --bind 127.0.0.1 --directory "$dir" \
    >"$E2E_RUN/wheelhouse-server.log" 2>&1 &
  SERVER_PID=$!
  WHEELHOUSE_URL="http://127.0.0.1:$port/"
  wait_for 20 "the wheelhouse server" "$PYTHON" -c \
    'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$WHEELHOUSE_URL"
}

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

image_id() { "$DOCKER" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# deploy/victorialogs/Dockerfile names its bases by their upstream names: while it builds,
# each one this engine lacks is a tag on its stand-in (fit-check-e2e/<last path part>).
tag_victorialogs_bases() {
  local name stand_in
  while read -r name; do
    stand_in="$IMAGE_PREFIX/${name##*/}"
    if [[ -n $(image_id "$name") ]]; then
      log "$name: using this engine's own image"
      continue
    fi
    [[ -n $(image_id "$stand_in") ]] || die "no stand-in $stand_in for $name (stand-ins.sh)"
    "$DOCKER" tag "$stand_in" "$name"
    TAGGED+=("$name=$stand_in")
  done < <(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$REPO_ROOT/deploy/victorialogs/Dockerfile")
}

untag_victorialogs_bases() {
  local pair
  for pair in "${TAGGED[@]}"; do
    # Only the tag goes (the stand-in keeps its own name), and only if it is still ours.
    if [[ $(image_id "${pair%%=*}") == "$(image_id "${pair#*=}")" ]]; then
      "$DOCKER" rmi "${pair%%=*}" >/dev/null
    fi
  done
  TAGGED=()
}

build_images() {
  local wheelhouse target
  # The Python of the stand-in python:3.11-slim (Debian's 3.11.2): the wheelhouse has what
  # that version needs, not only what .venv's does.
  target=$("$DOCKER" run --rm --pull never --network none --entrypoint python3 \
    "$IMAGE_PREFIX/python:3.11-slim" -c 'import platform; print(platform.python_version())')
  wheelhouse=$(FIT_CHECK_EXTRAS="${FIT_CHECK_EXTRAS:-}" FIT_CHECK_E2E_TARGET_PYTHON="$target" \
    "$E2E_DIR/wheelhouse.sh")
  serve_wheelhouse "$wheelhouse"
  tag_victorialogs_bases
  log "building fit-check-e2e/fit-check:local with deploy/Dockerfile from the wheelhouse at $WHEELHOUSE_URL"
  "$COMPOSE" FIT_CHECK_PYTHON_IMAGE="$IMAGE_PREFIX/python:3.11-slim" \
    FIT_CHECK_PIP_FIND_LINKS="$WHEELHOUSE_URL" FIT_CHECK_EXTRAS="${FIT_CHECK_EXTRAS:-}" \
    build fit-check victorialogs >"$E2E_RUN/build.log" 2>&1 \
    || { tail -n 40 "$E2E_RUN/build.log" >&2; die "compose build failed (log: $E2E_RUN/build.log)"; }
  untag_victorialogs_bases
  stop_server
  prune_earlier_builds
}

# The classic builder leaves untagged images on every rebuild of the service image: its
# build stage, and the image the new one replaced. Remove them all but the newest build
# stage, which holds the cache of the next build (images on a stand-in base only).
prune_earlier_builds() {
  local ids newest_stage="" id
  mapfile -t ids < <("$DOCKER" image ls --quiet --no-trunc --filter dangling=true \
    --filter label=fit-check.e2e.stands-in-for)
  ((${#ids[@]})) || return 0
  newest_stage=$("$DOCKER" image inspect --format '{{.Created}} {{.Id}} {{.Config.WorkingDir}}' \
    "${ids[@]}" | awk '$3 == "/src"' | sort | tail -n 1 | cut -d' ' -f2)
  for id in "${ids[@]}"; do
    [[ "$id" == "$newest_stage" ]] || "$DOCKER" rmi "$id" >/dev/null 2>&1 || true
  done
}

services_but_grafana() { "$COMPOSE" config --services | grep -vx grafana; }

start_stack() { # start_stack [NAME=VALUE ...]: every service but Grafana, with those settings
  local services
  mapfile -t services < <(services_but_grafana)
  "$COMPOSE" down --volumes --remove-orphans >/dev/null 2>&1 # a clean start
  STACK_STARTED=1
  log "starting ${services[*]} (not grafana)${*:+ with $*}"
  "$COMPOSE" "$@" up --detach --no-build --pull never --wait --wait-timeout 180 \
    "${services[@]}" >"$E2E_RUN/up.log" 2>&1 \
    || { tail -n 40 "$E2E_RUN/up.log" >&2; die "compose up failed"; }
}

run_tests() { # run_tests PYTEST ARGUMENTS...
  local status=0
  # shellcheck disable=SC2086 # PYTEST_ARGS is a list of words
  FIT_CHECK_E2E_COMPOSE="$COMPOSE" "$PYTHON" -m pytest -q -m compose -rs -p no:cacheprovider \
    ${PYTEST_ARGS:-} "$@" || status=$?
  if ((status == 5)); then # PYTEST_ARGS selected none of this stack's tests
    log "no test of this stack selected"
    return 0
  fi
  return "$status"
}

stop_stack() { # stop_stack PHASE [last]: down -v, unless FIT_CHECK_E2E_KEEP=1 keeps the last
  local t0=$SECONDS
  if [[ "${2:-}" == last && "${FIT_CHECK_E2E_KEEP:-0}" == 1 ]]; then
    return 0 # cleanup says how to stop it
  fi
  "$COMPOSE" down --volumes --remove-orphans --timeout 30 >"$E2E_RUN/down.log" 2>&1 \
    || { cat "$E2E_RUN/down.log" >&2; die "compose down failed"; }
  STACK_STARTED=0
  TIMES+=("$1 $((SECONDS - t0))s")
}

wants() { [[ " $VARIANTS " == *" $1 "* ]]; }

cleanup() {
  local status=$?
  set +e
  stop_server
  untag_victorialogs_bases
  if ((STACK_STARTED)); then
    if ((status != 0)); then
      "$COMPOSE" ps --all >"$E2E_RUN/compose-ps.txt" 2>&1
      "$COMPOSE" logs --no-color --timestamps >"$E2E_RUN/compose-logs.txt" 2>&1
      log "failed: the stack's state and logs are in $E2E_RUN/compose-{ps,logs}.txt"
    fi
    if [[ "${FIT_CHECK_E2E_KEEP:-0}" == 1 ]]; then
      log "FIT_CHECK_E2E_KEEP=1: the stack stays up" \
        "(${FIT_CHECK_E2E_REPLICAS:+FIT_CHECK_E2E_REPLICAS=1 }deploy/compose-e2e/compose.sh down -v)"
      return
    fi
    "$COMPOSE" down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1
  fi
  [[ "${FIT_CHECK_E2E_KEEP:-0}" == 1 ]] || "$E2E_DIR/engine.sh" stop
  ((${#TIMES[@]})) && log "times: ${TIMES[*]}"
  exit "$status"
}

cmd_run() {
  [[ -x "$PYTHON" ]] || die "$PYTHON is missing: run make install"
  local variant
  for variant in $VARIANTS; do
    [[ "$variant" == single || "$variant" == replicas ]] \
      || die "FIT_CHECK_E2E_VARIANTS: \"$variant\" is neither single nor replicas"
  done
  mkdir -p "$E2E_RUN"
  trap cleanup EXIT
  phase engine "$E2E_DIR/engine.sh" start
  phase stand-ins "$E2E_DIR/stand-ins.sh"
  phase build build_images
  if wants single; then
    phase up start_stack
    phase tests run_tests "$REPO_ROOT/tests/e2e_compose" --ignore "$REPLICAS_TESTS"
    stop_stack down "$(wants replicas || echo last)"
  fi
  if wants replicas; then
    # From here on every compose.sh (the tests', the clean-up's) is the replicas project.
    export FIT_CHECK_E2E_REPLICAS=1
    phase replicas-up start_stack "${REPLICAS_SETTINGS[@]}"
    phase replicas-tests run_tests "$REPLICAS_TESTS"
    stop_stack replicas-down last
  fi
}

cmd_clean() {
  mkdir -p "$E2E_RUN"
  trap '"$E2E_DIR/engine.sh" stop' EXIT
  "$E2E_DIR/engine.sh" start
  "$COMPOSE" down --volumes --remove-orphans >/dev/null 2>&1 || true
  FIT_CHECK_E2E_REPLICAS=1 "$COMPOSE" down --volumes --remove-orphans >/dev/null 2>&1 || true
  local images
  mapfile -t images < <("$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}' \
    | grep "^$IMAGE_PREFIX/" || true)
  if ((${#images[@]})); then
    log "removing ${images[*]}"
    "$DOCKER" rmi "${images[@]}" >/dev/null
  fi
  # What the classic builder left of deploy/Dockerfile's build stage on a stand-in base.
  "$DOCKER" image prune --force --filter label=fit-check.e2e.stands-in-for >/dev/null
  log "removing the cached root file systems and wheelhouses in $E2E_CACHE"
  rm -rf "$E2E_CACHE/rootfs" "$E2E_CACHE/wheelhouse"
}

case "${1:-run}" in
  run) cmd_run ;;
  clean) cmd_clean ;;
  *) die "usage: $0 [run|clean]" ;;
esac
