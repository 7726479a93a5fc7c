# Everything a new machine needs is created here: `make run` and `make test` work alone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint e2e bench bench-quick up down logs stack stack-down clean

install: $(STAMP)

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/fit-check serve

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check app otel tests bench
	$(BIN)/ruff format --check app otel tests bench

clean:
	rm -rf $(VENV) .pytest_cache
