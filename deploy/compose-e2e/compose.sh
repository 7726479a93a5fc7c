#!/usr/bin/env bash
# Docker Compose on the test project of `make e2e-compose`: docker-compose.yml with
# docker-compose.e2e.yml over it, as project fit-check-e2e (its own containers, network
# and volumes: a `make up` stack is another project and is not touched).
#
#   compose.sh [NAME=VALUE ...] COMPOSE ARGS...
#
# With FIT_CHECK_E2E_REPLICAS=1 in its environment: the replicas variant instead, as
# project fit-check-e2e-replicas, docker-compose.replicas.yml and
# docker-compose.replicas.e2e.yml layered over those two (two replicas, Redis, nginx).
#
# Compose runs with no variable of the caller's environment but PATH, HOME and DOCKER_*,
# and the NAME=VALUE pairs given: docker-compose.yml's defaults apply unless a test sets
# one, and no key (OPENAI_API_KEY, ...) of the shell reaches the containers.
# `docker compose` when the docker CLI has the plugin, else a standalone docker-compose v2+
# (on PATH, or the one `make stack-tools` builds into $FIT_CHECK_CACHE/bin).
set -euo pipefail
# shellcheck source=deploy/compose-e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROJECT="${FIT_CHECK_E2E_PROJECT:-fit-check-e2e}"
FILES=(--file "$REPO_ROOT/docker-compose.yml" --file "$E2E_DIR/docker-compose.e2e.yml")
if [[ "${FIT_CHECK_E2E_REPLICAS:-0}" == 1 ]]; then
  PROJECT="${FIT_CHECK_E2E_PROJECT:-fit-check-e2e-replicas}"
  FILES+=(--file "$REPO_ROOT/docker-compose.replicas.yml"
    --file "$E2E_DIR/docker-compose.replicas.e2e.yml")
fi

compose_command() {
  if "$DOCKER" compose version >/dev/null 2>&1; then
    echo "$DOCKER compose"
    return
  fi
  local candidate
  for candidate in "$(command -v docker-compose || true)" "$CACHE/bin/docker-compose"; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    if "$candidate" version 2>/dev/null | grep -Eq 'version v?([2-9]|[1-9][0-9])\.'; then
      echo "$candidate"
      return
    fi
  done
  die "no Docker Compose v2+: install docker-compose-plugin, or run make stack-tools"
}

environment=(PATH="$PATH" HOME="$HOME")
while IFS='=' read -r name value; do
  environment+=("$name=$value")
done < <(env | grep -E '^DOCKER_[A-Z_]*=' || true)
while (($#)) && [[ "$1" =~ ^[A-Z_][A-Z0-9_]*= ]]; do
  environment+=("$1")
  shift
done

read -r -a compose <<<"$(compose_command)"
exec env -i "${environment[@]}" "${compose[@]}" --project-name "$PROJECT" \
  --project-directory "$REPO_ROOT" "${FILES[@]}" "$@"
