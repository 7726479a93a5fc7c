#!/usr/bin/env bash
# The fit-check telemetry stack without Docker: the real Jaeger v2, VictoriaLogs,
# OpenTelemetry Collector and Prometheus, built/installed by deploy/local/build-tools.sh,
# run on 127.0.0.1 with the same config files as docker-compose.yml.
#
#   deploy/local/stack.sh up [--with-service]   start (idempotent), wait until ready
#   deploy/local/stack.sh status                what runs, and whether it answers
#   deploy/local/stack.sh down                  stop exactly the processes `up` started
#   deploy/local/stack.sh render DIR            write the loopback Prometheus config
#                                               (prometheus.yml + rules.yml) into DIR
#
# Run dir (pid files, logs, Prometheus data, rendered config):
#   FIT_CHECK_STACK_DIR (default $FIT_CHECK_CACHE/stack, FIT_CHECK_CACHE default $HOME/.cache/fit-check)
#
# Ports (env, with defaults):
#   OTEL_COLLECTOR_OTLP_GRPC_PORT=4317  OTEL_COLLECTOR_OTLP_HTTP_PORT=4318
#   OTEL_COLLECTOR_PROMETHEUS_PORT=8889 OTEL_COLLECTOR_TELEMETRY_PORT=8888
#   OTEL_COLLECTOR_HEALTH_PORT=13133
#   JAEGER_OTLP_GRPC_PORT=14317 JAEGER_OTLP_HTTP_PORT=14318 (not 4317/4318: the collector has them)
#   JAEGER_QUERY_HTTP_PORT=16686 JAEGER_QUERY_GRPC_PORT=16685
#   JAEGER_HEALTH_PORT=13134 JAEGER_METRICS_PORT=18888
#   PROMETHEUS_PORT=9090 VICTORIALOGS_PORT=9428
#   FIT_CHECK_PORT=8000 (only with --with-service)
# Other knobs: STACK_TIMEOUT (seconds to wait for each component, default 60),
#   COLLECTOR_BIN, JAEGER_BIN, PROMETHEUS_BIN (override the binaries' paths),
#   FIT_CHECK_STACK_KEEP_DATA=1 (keep Prometheus' TSDB and Jaeger's traces, in Badger
#   under $FIT_CHECK_STACK_DIR/jaeger-data, across `up`s; default: fresh), LOG_LEVEL /
#   OTEL_SERVICE_NAME /
#   OTEL_METRIC_EXPORT_INTERVAL (default 5000 ms) for the service.
# Logs: services write JSON lines to $FIT_CHECK_STACK_DIR/logs/*.log (FIT_CHECK_LOG_FILE);
#   the collector reads them (offsets in $FIT_CHECK_STACK_DIR/collector-storage) into
#   VictoriaLogs (data in $FIT_CHECK_STACK_DIR/victorialogs-data, fresh per `up` like
#   Prometheus' unless FIT_CHECK_STACK_KEEP_DATA=1).
# Tail sampling: FIT_CHECK_TRACE_SAMPLE_PERCENT (share of successful, fast traces kept;
#   default 100 here, 10 in compose), FIT_CHECK_TRACE_DECISION_WAIT (default 2s here: the
#   stack keeps every trace, and a later span of a kept trace follows its decision;
#   compose waits 135s), FIT_CHECK_TRACE_SLOW_MS.
#
# Prometheus cannot expand env vars in scrape targets, so `up` renders a copy of
# deploy/prometheus/prometheus.yml with the compose targets "otel-collector:8889" and
# "otel-collector:8888" replaced by 127.0.0.1:<port> (sed), plus rules.yml beside it,
# into $FIT_CHECK_STACK_DIR/prometheus/.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${FIT_CHECK_CACHE:-$HOME/.cache/fit-check}"
RUN_DIR="${FIT_CHECK_STACK_DIR:-$CACHE/stack}"
HOST=127.0.0.1

OTEL_COLLECTOR_OTLP_GRPC_PORT="${OTEL_COLLECTOR_OTLP_GRPC_PORT:-4317}"
OTEL_COLLECTOR_OTLP_HTTP_PORT="${OTEL_COLLECTOR_OTLP_HTTP_PORT:-4318}"
OTEL_COLLECTOR_PROMETHEUS_PORT="${OTEL_COLLECTOR_PROMETHEUS_PORT:-8889}"
OTEL_COLLECTOR_TELEMETRY_PORT="${OTEL_COLLECTOR_TELEMETRY_PORT:-8888}"
OTEL_COLLECTOR_HEALTH_PORT="${OTEL_COLLECTOR_HEALTH_PORT:-13133}"
JAEGER_OTLP_GRPC_PORT="${JAEGER_OTLP_GRPC_PORT:-14317}"
JAEGER_OTLP_HTTP_PORT="${JAEGER_OTLP_HTTP_PORT:-14318}"
JAEGER_QUERY_HTTP_PORT="${JAEGER_QUERY_HTTP_PORT:-16686}"
JAEGER_QUERY_GRPC_PORT="${JAEGER_QUERY_GRPC_PORT:-16685}"
JAEGER_HEALTH_PORT="${JAEGER_HEALTH_PORT:-13134}"
JAEGER_METRICS_PORT="${JAEGER_METRICS_PORT:-18888}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
VICTORIALOGS_PORT="${VICTORIALOGS_PORT:-9428}"
FIT_CHECK_PORT="${FIT_CHECK_PORT:-8000}"
STACK_TIMEOUT="${STACK_TIMEOUT:-60}"

COLLECTOR_BIN="${COLLECTOR_BIN:-$CACHE/bin/otelcol-fit-check}"
JAEGER_BIN="${JAEGER_BIN:-$CACHE/bin/jaeger}"
VICTORIALOGS_BIN="${VICTORIALOGS_BIN:-$CACHE/bin/victoria-logs}"
if [[ -z "${PROMETHEUS_BIN:-}" ]]; then
  if [[ -x "$CACHE/bin/prometheus" ]]; then PROMETHEUS_BIN="$CACHE/bin/prometheus"
  else PROMETHEUS_BIN="$(command -v prometheus || echo /usr/bin/prometheus)"; fi
fi
SERVICE_BIN="$REPO_ROOT/.venv/bin/fit-check"

COMPONENTS=(jaeger victorialogs collector prometheus service) # start order; stop is the reverse

log() { printf '[stack] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit "${1:-0}"
}

# --- process bookkeeping -------------------------------------------------------------
pidfile() { echo "$RUN_DIR/$1.pid"; }
exefile() { echo "$RUN_DIR/$1.exe"; }

# pid of a component we started and that still runs (same command line), else empty.
live_pid() {
  local name=$1 pid exe
  [[ -f "$(pidfile "$name")" ]] || return 0
  pid="$(cat "$(pidfile "$name")" 2>/dev/null || true)"
  exe="$(cat "$(exefile "$name")" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ && -n "$exe" && -r "/proc/$pid/cmdline" ]] || return 0
  # Guard against pid reuse: the process must still be running our binary.
  if tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$exe"; then echo "$pid"; fi
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

# start NAME EXE ARGS...: runs EXE in the background with the extra environment in the
# array START_ENV (NAME=value words), in directory START_DIR, logging to $RUN_DIR/NAME.log.
START_ENV=()
START_DIR="$REPO_ROOT"
start() {
  local name=$1 exe=$2; shift 2
  local pf; pf="$(pidfile "$name")"
  rm -f "$pf"
  # One log per run; the previous run's stays as NAME.log.1.
  if [[ -f "$RUN_DIR/$name.log" ]]; then mv -f "$RUN_DIR/$name.log" "$RUN_DIR/$name.log.1"; fi
  echo "$exe" >"$(exefile "$name")"
  # The background subshell execs setsid -> env -> bash, which writes its own pid and
  # execs the binary: the pid file holds the binary's pid whether or not setsid had
  # to fork, and no wrapper process is left holding this script's stdout (so
  # `stack.sh up | tail` returns). setsid detaches the binary from this terminal's
  # session, so ^C here or closing the shell does not stop it.
  (
    cd "$START_DIR" || exit 1
    exec setsid env "${START_ENV[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$pf" "$exe" "$@"
  ) </dev/null >>"$RUN_DIR/$name.log" 2>&1 &
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$pf" ]] && return 0
    sleep 0.1
  done
  die "$name did not start (no pid file $pf)"
}

# wait_ready NAME URL: poll URL until it answers 2xx; fail early if the process died.
wait_ready() {
  local name=$1 url=$2 deadline=$((SECONDS + STACK_TIMEOUT))
  while ((SECONDS < deadline)); do
    if [[ -z "$(live_pid "$name")" ]]; then
      log "$name exited during start-up; last lines of $RUN_DIR/$name.log:"
      tail -n 30 "$RUN_DIR/$name.log" >&2 || true
      return 1
    fi
    if http_ok "$url"; then
      log "$name ready ($url)"
      return 0
    fi
    sleep 0.2
  done
  log "$name not ready after ${STACK_TIMEOUT}s ($url); last lines of $RUN_DIR/$name.log:"
  tail -n 30 "$RUN_DIR/$name.log" >&2 || true
  return 1
}

require_free_ports() {
  local name=$1 port; shift
  for port in "$@"; do
    if port_in_use "$port"; then
      die "$name: port $HOST:$port is already in use (set the matching *_PORT variable)"
    fi
  done
}

require_exe() {
  [[ -x "$2" ]] || die "$1 binary not found at $2: run deploy/local/build-tools.sh"
}

# --- rendered Prometheus config ----------------------------------------------------------
render_prometheus() {
  local dir=$1 src="$REPO_ROOT/deploy/prometheus"
  mkdir -p "$dir"
  sed -e "s/\"otel-collector:8889\"/\"$HOST:$OTEL_COLLECTOR_PROMETHEUS_PORT\"/" \
      -e "s/\"otel-collector:8888\"/\"$HOST:$OTEL_COLLECTOR_TELEMETRY_PORT\"/" \
      "$src/prometheus.yml" >"$dir/prometheus.yml.tmp"
  if grep -v '^[[:space:]]*#' "$dir/prometheus.yml.tmp" | grep -q 'otel-collector:'; then
    rm -f "$dir/prometheus.yml.tmp"
    die "deploy/prometheus/prometheus.yml has an otel-collector target this script does not map to loopback"
  fi
  mv "$dir/prometheus.yml.tmp" "$dir/prometheus.yml"
  cp "$src/rules.yml" "$src/slo-rules.yml" "$dir/"
  echo "$dir/prometheus.yml"
}

# --- components ---------------------------------------------------------------------
up_jaeger() {
  require_exe jaeger "$JAEGER_BIN"
  require_free_ports jaeger "$JAEGER_OTLP_GRPC_PORT" "$JAEGER_OTLP_HTTP_PORT" \
    "$JAEGER_QUERY_HTTP_PORT" "$JAEGER_QUERY_GRPC_PORT" "$JAEGER_HEALTH_PORT" "$JAEGER_METRICS_PORT"
  if [[ "${FIT_CHECK_STACK_KEEP_DATA:-0}" != 1 ]]; then rm -rf "$RUN_DIR/jaeger-data"; fi
  mkdir -p "$RUN_DIR/jaeger-data"
  START_ENV=(JAEGER_HOST="$HOST" JAEGER_BADGER_DIR="$RUN_DIR/jaeger-data"
    JAEGER_OTLP_GRPC_PORT="$JAEGER_OTLP_GRPC_PORT" JAEGER_OTLP_HTTP_PORT="$JAEGER_OTLP_HTTP_PORT"
    JAEGER_QUERY_HTTP_PORT="$JAEGER_QUERY_HTTP_PORT" JAEGER_QUERY_GRPC_PORT="$JAEGER_QUERY_GRPC_PORT"
    JAEGER_HEALTH_PORT="$JAEGER_HEALTH_PORT" JAEGER_METRICS_PORT="$JAEGER_METRICS_PORT")
  start jaeger "$JAEGER_BIN" --config "$REPO_ROOT/deploy/jaeger/config.yaml"
  wait_ready jaeger "http://$HOST:$JAEGER_QUERY_HTTP_PORT/api/services"
}

up_victorialogs() {
  require_exe victorialogs "$VICTORIALOGS_BIN"
  require_free_ports victorialogs "$VICTORIALOGS_PORT"
  if [[ "${FIT_CHECK_STACK_KEEP_DATA:-0}" != 1 ]]; then rm -rf "$RUN_DIR/victorialogs-data"; fi
  START_ENV=()
  # Same flags as compose's victorialogs service (retention, listen address aside).
  start victorialogs "$VICTORIALOGS_BIN" \
    -storageDataPath="$RUN_DIR/victorialogs-data" \
    -retentionPeriod=7d \
    -httpListenAddr="$HOST:$VICTORIALOGS_PORT"
  wait_ready victorialogs "http://$HOST:$VICTORIALOGS_PORT/health"
}

up_collector() {
  require_exe collector "$COLLECTOR_BIN"
  require_free_ports collector "$OTEL_COLLECTOR_OTLP_GRPC_PORT" "$OTEL_COLLECTOR_OTLP_HTTP_PORT" \
    "$OTEL_COLLECTOR_PROMETHEUS_PORT" "$OTEL_COLLECTOR_TELEMETRY_PORT" "$OTEL_COLLECTOR_HEALTH_PORT"
  START_ENV=(OTEL_COLLECTOR_HOST="$HOST"
    OTEL_COLLECTOR_OTLP_GRPC_PORT="$OTEL_COLLECTOR_OTLP_GRPC_PORT"
    OTEL_COLLECTOR_OTLP_HTTP_PORT="$OTEL_COLLECTOR_OTLP_HTTP_PORT"
    OTEL_COLLECTOR_PROMETHEUS_PORT="$OTEL_COLLECTOR_PROMETHEUS_PORT"
    OTEL_COLLECTOR_TELEMETRY_PORT="$OTEL_COLLECTOR_TELEMETRY_PORT"
    OTEL_COLLECTOR_HEALTH_PORT="$OTEL_COLLECTOR_HEALTH_PORT"
    JAEGER_OTLP_ENDPOINT="$HOST:$JAEGER_OTLP_GRPC_PORT"
    VICTORIALOGS_URL="http://$HOST:$VICTORIALOGS_PORT"
    FIT_CHECK_LOG_FILES="$RUN_DIR/logs/*.log*"
    FIT_CHECK_COLLECTOR_STORAGE="$RUN_DIR/collector-storage"
    FIT_CHECK_TRACE_SAMPLE_PERCENT="${FIT_CHECK_TRACE_SAMPLE_PERCENT:-100}"
    FIT_CHECK_TRACE_DECISION_WAIT="${FIT_CHECK_TRACE_DECISION_WAIT:-2s}"
    FIT_CHECK_TRACE_SLOW_MS="${FIT_CHECK_TRACE_SLOW_MS:-60000}")
  mkdir -p "$RUN_DIR/logs" "$RUN_DIR/collector-storage"
  start collector "$COLLECTOR_BIN" --config "$REPO_ROOT/otel-collector.yaml"
  wait_ready collector "http://$HOST:$OTEL_COLLECTOR_HEALTH_PORT/"
}

up_prometheus() {
  require_exe prometheus "$PROMETHEUS_BIN"
  require_free_ports prometheus "$PROMETHEUS_PORT"
  local cfg
  cfg="$(render_prometheus "$RUN_DIR/prometheus")" || return 1
  # A fresh TSDB per start, like Jaeger's traces, so queries see only this
  # run's data; FIT_CHECK_STACK_KEEP_DATA=1 keeps it across restarts.
  if [[ "${FIT_CHECK_STACK_KEEP_DATA:-0}" != 1 ]]; then rm -rf "$RUN_DIR/prometheus-data"; fi
  mkdir -p "$RUN_DIR/prometheus-data"
  START_ENV=()
  start prometheus "$PROMETHEUS_BIN" \
    --config.file="$cfg" \
    --storage.tsdb.path="$RUN_DIR/prometheus-data" \
    --storage.tsdb.retention.time=2d \
    --web.listen-address="$HOST:$PROMETHEUS_PORT" \
    --enable-feature=exemplar-storage
  wait_ready prometheus "http://$HOST:$PROMETHEUS_PORT/-/ready"
}

up_service() {
  [[ -x "$SERVICE_BIN" ]] || die "service not installed at $SERVICE_BIN: run 'make install'"
  require_free_ports service "$FIT_CHECK_PORT"
  # Runs from the repo root like `make run` (START_DIR), so a .env there applies too.
  START_ENV=(HOST="$HOST" PORT="$FIT_CHECK_PORT" LOG_FORMAT=json
    LOG_LEVEL="${LOG_LEVEL:-INFO}"
    OTEL_EXPORTER_OTLP_ENDPOINT="http://$HOST:$OTEL_COLLECTOR_OTLP_HTTP_PORT"
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
    OTEL_SERVICE_NAME="${OTEL_SERVICE_NAME:-fit-check}"
    OTEL_METRIC_EXPORT_INTERVAL="${OTEL_METRIC_EXPORT_INTERVAL:-5000}"
    # This Jaeger has no UI: the demo page's trace links go to the service's own /trace
    # page, which reads the trace from Jaeger's query API.
    FIT_CHECK_JAEGER_URL="http://$HOST:$JAEGER_QUERY_HTTP_PORT"
    FIT_CHECK_JAEGER_UI_URL="http://$HOST:$FIT_CHECK_PORT"
    # JSON lines for the collector's file log receiver, and links to them in vmui.
    FIT_CHECK_LOG_FILE="$RUN_DIR/logs/fit-check.log"
    FIT_CHECK_LOGS_UI_URL="http://$HOST:$VICTORIALOGS_PORT")
  start service "$SERVICE_BIN" serve
  wait_ready service "http://$HOST:$FIT_CHECK_PORT/health"
}

component_url() {
  case $1 in
    jaeger) echo "http://$HOST:$JAEGER_QUERY_HTTP_PORT/api/services" ;;
    victorialogs) echo "http://$HOST:$VICTORIALOGS_PORT/health" ;;
    collector) echo "http://$HOST:$OTEL_COLLECTOR_HEALTH_PORT/" ;;
    prometheus) echo "http://$HOST:$PROMETHEUS_PORT/-/ready" ;;
    service) echo "http://$HOST:$FIT_CHECK_PORT/health" ;;
  esac
}

# --- subcommands ----------------------------------------------------------------------
cmd_up() {
  local with_service=0 arg
  for arg in "$@"; do
    case $arg in
      --with-service) with_service=1 ;;
      -h | --help) usage 0 ;;
      *) log "unknown option: $arg"; usage 2 ;;
    esac
  done
  mkdir -p "$RUN_DIR"
  # On any failure (including die) stop everything this stack runs: no half-started
  # stack is left behind.
  trap 'log "start-up failed: stopping the stack"; cmd_down' EXIT
  local name
  for name in "${COMPONENTS[@]}"; do
    [[ "$name" == service && "$with_service" == 0 ]] && continue
    if [[ -n "$(live_pid "$name")" ]]; then
      log "$name already running (pid $(live_pid "$name"))"
      continue
    fi
    "up_$name" || die "$name failed to start"
  done
  trap - EXIT
  cmd_status
}

stop_pid() {
  local name=$1 pid=$2 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || { log "$name stopped (pid $pid)"; return 0; }
    sleep 0.1
  done
  log "$name (pid $pid) ignored SIGTERM for 15s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

cmd_down() {
  local i name pid
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name=${COMPONENTS[i]}
    pid="$(live_pid "$name")"
    if [[ -n "$pid" ]]; then stop_pid "$name" "$pid"; fi
    rm -f "$(pidfile "$name")" "$(exefile "$name")"
  done
}

cmd_status() {
  local name pid state=0
  printf '%-13s %-8s %-7s %s\n' COMPONENT PID READY URL
  for name in "${COMPONENTS[@]}"; do
    pid="$(live_pid "$name")"
    if [[ -z "$pid" ]]; then
      [[ "$name" == service ]] || state=1
      printf '%-13s %-8s %-7s %s\n' "$name" - - "(not running)"
      continue
    fi
    if http_ok "$(component_url "$name")"; then
      printf '%-13s %-8s %-7s %s\n' "$name" "$pid" yes "$(component_url "$name")"
    else
      state=1
      printf '%-13s %-8s %-7s %s\n' "$name" "$pid" no "$(component_url "$name")"
    fi
  done
  cat <<EOF
OTLP:        grpc $HOST:$OTEL_COLLECTOR_OTLP_GRPC_PORT, http http://$HOST:$OTEL_COLLECTOR_OTLP_HTTP_PORT
Jaeger API:  http://$HOST:$JAEGER_QUERY_HTTP_PORT/api/traces/{trace_id}
Prometheus:  http://$HOST:$PROMETHEUS_PORT/api/v1/query?query=...
Logs UI:     http://$HOST:$VICTORIALOGS_PORT/select/vmui/  (LogsQL: trace_id:"<id>" or session_id:"<id>")
Logs API:    http://$HOST:$VICTORIALOGS_PORT/select/logsql/query?query=trace_id:%22<id>%22
Run dir:     $RUN_DIR (logs: *.log)
EOF
  return "$state"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down ;;
  status) shift; cmd_status ;;
  render) shift; [[ $# == 1 ]] || usage 2; render_prometheus "$1" ;;
  -h | --help | help) usage 0 ;;
  *) usage 2 ;;
esac
