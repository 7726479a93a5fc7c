# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source it
# Shared by the scripts of deploy/compose-e2e (sourced, not run): paths, logging, the
# docker command, and a bounded poll.
#
# Env:
#   FIT_CHECK_CACHE     cache root (default ~/.cache/fit-check); this run's files go under
#                       $FIT_CHECK_CACHE/compose-e2e
#   DOCKER              the docker CLI (default: docker on PATH)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
E2E_DIR="$REPO_ROOT/deploy/compose-e2e"
CACHE="${FIT_CHECK_CACHE:-$HOME/.cache/fit-check}"
E2E_CACHE="$CACHE/compose-e2e"
# State of this machine's run: the dockerd this run started, the wheelhouse server, logs.
E2E_RUN="$E2E_CACHE/run"
DOCKER="${DOCKER:-docker}"
# Every image this test builds is named under this prefix, so none of them replaces an
# image of the user's own stack (python:3.11-slim, fit-check:local, ...).
IMAGE_PREFIX="fit-check-e2e"

log() { printf '[compose-e2e] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# wait_for SECONDS WHAT COMMAND...: run COMMAND every 0.2 s until it succeeds; fail after
# SECONDS. The one way these scripts wait for anything.
wait_for() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what: not ready after ${limit}s"
    sleep 0.2
  done
}

# alive PID: the process runs (a zombie, exited but not yet reaped, does not count).
alive() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z ]]
}

sha256_text() { sha256sum | cut -c1-16; }

image_label() { # image_label IMAGE LABEL: the label's value, empty when there is no image
  "$DOCKER" image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}
