#!/usr/bin/env bash
# The Docker engine for `make e2e-compose`, from Debian's packages only.
#
#   engine.sh start   install what is missing (docker.io, mmdebstrap, busybox-static), then
#                     use the running dockerd, or start one and record its PID
#   engine.sh stop    stop the dockerd that `start` started (by that PID), and nothing else
#
# A dockerd that was already running is used and left running, unless engine.sh started
# it (its PID file is there: a run with FIT_CHECK_E2E_KEEP=1 left it). Installing needs
# root; so does starting dockerd.
set -euo pipefail
# shellcheck source=deploy/compose-e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PID_FILE="$E2E_RUN/dockerd.pid"
DOCKERD_LOG="$E2E_RUN/dockerd.log"

install_missing() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  # The static build: the stand-in busybox image has no C library.
  dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
    || missing+=(busybox-static)
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "missing ${missing[*]}: install them (apt-get install) as root"
  log "installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p "$E2E_RUN"
  local apt_log="$E2E_RUN/apt.log"
  { apt-get install -y -qq "${missing[@]}" \
    || { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }; } >"$apt_log" 2>&1 \
    || { tail -n 20 "$apt_log" >&2; die "apt-get could not install ${missing[*]}"; }
}

not_alive() { ! alive "$1"; }

engine_answers() { "$DOCKER" info >/dev/null 2>&1; }

cmd_start() {
  install_missing
  if engine_answers; then
    log "using the Docker engine that is already running"
    return
  fi
  [[ $(id -u) == 0 ]] || die "no Docker engine answers, and only root can start dockerd"
  mkdir -p "$E2E_RUN"
  log "starting dockerd (log: $DOCKERD_LOG)"
  # Its own session: a Ctrl-C of `make` reaches the scripts, whose clean-up still needs it.
  setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local deadline=$((SECONDS + 60))
  until engine_answers; do
    if ! alive "$(cat "$PID_FILE")"; then
      rm -f "$PID_FILE"
      tail -n 20 "$DOCKERD_LOG" >&2
      die "dockerd exited during start-up (log above)"
    fi
    ((SECONDS < deadline)) || die "dockerd did not answer within 60s (log: $DOCKERD_LOG)"
    sleep 0.2
  done
  log "dockerd $(cat "$PID_FILE") is up"
}

cmd_stop() {
  [[ -f "$PID_FILE" ]] || return 0
  local pid
  pid=$(cat "$PID_FILE")
  rm -f "$PID_FILE"
  alive "$pid" || return 0
  [[ $(cat "/proc/$pid/comm") == dockerd ]] || die "PID $pid is no longer dockerd: not stopping it"
  log "stopping dockerd $pid (started by engine.sh start)"
  kill -TERM "$pid"
  # dockerd stops its containers first (10 s each at most), then its containerd.
  wait_for 60 "dockerd $pid's exit" not_alive "$pid"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) die "usage: $0 start|stop" ;;
esac
