# Everything a new machine needs is created here: `make run` and `make test` work alone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install run test lint format e2e e2e-llm browser stack-tools stack stack-down up down \
	logs bench bench-quick bench-ir bench-ab bench-attacks bench-workers mutation clean

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## (.*)/  \1\t\2/' \
	  | expand -t 18

install: $(STAMP) ## the virtualenv with the service and its dev tools (only when pyproject.toml changed)

# Reinstall only when the dependency list changes. setuptools announces every editable
# install with an "Editable installation" warning banner, which only says that it is one:
# that warning alone is ignored (a filter on its message); errors and other warnings show.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="$${PYTHONWARNINGS:+$$PYTHONWARNINGS,}ignore:Editable installation" \
	  $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install ## the service on http://127.0.0.1:8000, offline providers, no key, no Docker
	$(BIN)/fit-check serve

# With a coverage report over app/ and otel/ (in this process: the tests that start
# `fit-check serve` as a process of its own are not counted); its data stays in the venv.
test: install ## unit, in-process and real-process tests, with coverage (under 5 minutes)
	COVERAGE_FILE=$(VENV)/.coverage $(BIN)/python -m pytest -q \
	  --cov=app --cov=otel --cov-report=term:skip-covered

# The wall-clock bounds (latency percentiles), which depend on the machine's load.
.PHONY: test-perf
test-perf: install ## wall-clock bounds: /health p99 under hostile clients (about 15 s)
	$(BIN)/python -m pytest -q -m perf

format: install ## ruff --fix and ruff format over the tree
	$(BIN)/ruff check --fix app otel tests bench
	$(BIN)/ruff format app otel tests bench

# Style, strict types (mypy --strict with the pydantic plugin) and the import rules
# (import-linter contracts in pyproject.toml).
lint: install ## ruff, ruff format --check, mypy --strict and the import-linter contracts
	$(BIN)/ruff check app otel tests bench
	$(BIN)/ruff format --check app otel tests bench
	$(BIN)/mypy app otel tests bench
	$(BIN)/lint-imports

# --- the telemetry stack -------------------------------------------------------------
# Local processes (no Docker): the real Collector (built with ocb), Jaeger v2 (built from
# its Go module) and Debian's Prometheus, cached under ~/.cache/fit-check.
stack-tools: ## build or install the stack's binaries into ~/.cache/fit-check
	WITH_COMPOSE=1 deploy/local/build-tools.sh

stack: install stack-tools ## the telemetry stack and the service as local processes (no Docker)
	deploy/local/stack.sh up --with-service

stack-down: ## stop what make stack started
	deploy/local/stack.sh down

# End-to-end tests against that stack (started and stopped by the tests themselves), and
# in a real browser.
e2e: install stack-tools browser ## end-to-end tests against the real stack, replicas behind nginx and Chromium
	$(BIN)/python -m pytest -q -m e2e

# A real local model behind the service: llama-cpp-python's server with SmolLM2-135M on
# one thread, on loopback (tests/e2e_llm). deploy/local/llm-server.sh builds it into
# ~/.cache/fit-check/llm (it compiles llama.cpp: 6 to 13 minutes on 2 cores the first time,
# nothing after); the tests start and stop it. `deploy/local/llm-server.sh run` serves it.
e2e-llm: install ## a real local model (llama.cpp, SmolLM2-135M) behind the service
	deploy/local/llm-server.sh build
	$(BIN)/python -m pytest -q -m llm

# Debian's Chromium for the browser tests; Playwright (a dev dependency) drives it.
# Playwright's own browser download cannot work here, and is not needed.
browser: ## Debian's Chromium for the browser tests
	@command -v chromium >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null \
	  || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; }

# With Docker: the same configs in containers, plus Grafana.
# `docker compose` (the CLI plugin) or the standalone `docker-compose` (v2), whichever works.
COMPOSE = $(shell if docker compose version >/dev/null 2>&1; then echo docker compose; \
	elif docker-compose version >/dev/null 2>&1; then echo docker-compose; fi)
NO_COMPOSE = make $@ needs Docker Compose v2, and neither "docker compose" nor "docker-compose" \
	works here: install the Docker compose plugin (docker-compose-plugin) or the standalone \
	docker-compose. "make stack" runs the same stack without Docker.

# SAMPLING=production: tail sampling as in production (10% of fast successes kept, each
# trace decided once its request is over); the default keeps every trace at once.
PRODUCTION_SAMPLING = FIT_CHECK_TRACE_SAMPLE_PERCENT=10 FIT_CHECK_TRACE_DECISION_WAIT=135s

# REPLICAS=2 (make up, down, logs): the service as two replicas behind nginx on port 8000,
# sharing their sessions through Redis (docker-compose.replicas.yml over
# docker-compose.yml; how it works is at the top of that file). Unset or 1: one instance.
REPLICA_FILES = $(if $(filter 2,$(REPLICAS)), -f docker-compose.yml -f docker-compose.replicas.yml)
CHECK_REPLICAS = case "$(REPLICAS)" in ""|1|2) ;; \
	  *) echo 'REPLICAS is 1 (the default) or 2' >&2; exit 1 ;; esac

up: ## the compose stack (REPLICAS=2: two replicas behind nginx; SAMPLING=production)
	@test -n "$(COMPOSE)" || { echo '$(NO_COMPOSE)' >&2; exit 1; }
	@case "$(SAMPLING)" in ""|local|production) ;; \
	  *) echo 'SAMPLING is local (the default) or production' >&2; exit 1 ;; esac
	@$(CHECK_REPLICAS)
	$(if $(filter production,$(SAMPLING)),$(PRODUCTION_SAMPLING) )$(COMPOSE)$(REPLICA_FILES) up -d --build

down: ## stop the compose stack
	@test -n "$(COMPOSE)" || { echo '$(NO_COMPOSE)' >&2; exit 1; }
	@$(CHECK_REPLICAS)
	$(COMPOSE)$(REPLICA_FILES) down

logs: ## follow the service's logs in the compose stack
	@test -n "$(COMPOSE)" || { echo '$(NO_COMPOSE)' >&2; exit 1; }
	@$(CHECK_REPLICAS)
	$(COMPOSE)$(REPLICA_FILES) logs -f fit-check$(if $(filter 2,$(REPLICAS)), fit-check-2)

# docker-compose.yml itself on a real Docker engine with no container registry, as its
# own project (fit-check-e2e): Debian's docker.io and a dockerd when none runs (stopped
# again at the end), stand-in images from Debian packages and the stack-tools binaries,
# the service image from deploy/Dockerfile and a wheelhouse, every service but Grafana,
# then pytest -m compose (tests/e2e_compose) and `down -v`. As root (apt, dockerd).
.PHONY: e2e-compose
e2e-compose: install stack-tools ## docker-compose.yml on a real Docker engine with no registry, checked
	deploy/compose-e2e/run.sh

# --- benchmarks (bench/, results in docs/performance.md) -----------------------------
bench: install ## latency, throughput, instruction counts and capacity (long)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.ir
	$(BIN)/python -m bench.capacity

bench-quick: install ## a short latency and throughput run
	$(BIN)/python -m bench.run --quick

# Concurrent paced streams one worker relays with p99 added delay under 50 ms, before
# (444910a^) and after issue 26's relay changes, alternated (about 11 minutes).
.PHONY: bench-capacity
bench-capacity: install ## concurrent paced streams per worker at p99 < 50 ms, before and after
	$(BIN)/python -m bench.capacity

# Instructions per stream under valgrind (deterministic, about ten minutes): to decide
# between changes. /health latency under hostile clients (about a minute).
bench-ir: install ## instructions per stream under valgrind: to decide between changes
	$(BIN)/python -m bench.ir

bench-attacks: install ## /health latency under hostile clients
	$(BIN)/python -m bench.attacks

# Full telemetry against none: 12 alternated rounds and the p99 at 50 ms providers
# (about 4 minutes; the same rows of `make bench`).
bench-ab: install ## full telemetry against none, alternated rounds
	$(BIN)/python -m bench.ab

# One worker against two, side by side (about 3 minutes).
bench-workers: install ## one worker against two
	$(BIN)/python -m bench.workers

# Mutation testing of the modules named in pyproject.toml ([tool.mutmut]); slow (hours for
# all twelve on 2 cores), not in CI: docs/testing.md. Resumable: mutants/ keeps each
# function's verdicts while its code is unchanged (`rm -rf mutants` to start afresh).
mutation: install ## mutation testing of the modules in pyproject.toml (hours; resumable)
	$(BIN)/python -m tests.mutate_declarations
	$(BIN)/mutmut run; $(BIN)/mutmut results

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache
