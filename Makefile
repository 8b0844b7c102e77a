# `make test` is the README's test command: it installs everything it needs, then checks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint run bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q

run: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m bot

bench: install
	$(BIN)/python -m benchmarks.makespan
	$(BIN)/python -m benchmarks.overhead
	$(BIN)/python -m benchmarks.concurrent_runs
	$(BIN)/python -m benchmarks.startup
	$(BIN)/python -m benchmarks.mcp_startup
	$(BIN)/python -m benchmarks.slack_latency
	$(BIN)/python -m benchmarks.tool_selection

# The pinned runtime dependencies Procfile platforms install; regenerate after changing pyproject.
requirements.txt: pyproject.toml | $(BIN)/python
	$(BIN)/python scripts/lock_requirements.py
