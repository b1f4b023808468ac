# Two commands from a clean clone: `make serve` and `make test`.
# Each bootstraps .venv with the machine's python3 and reinstalls the project only when
# pyproject.toml changed since the last install (stamp files inside .venv).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help
.PHONY: help serve test lint format clean

help:
	@echo "make serve   run LunoGen on http://$(HOST):$(PORT) (data in ./data)"
	@echo "make test    run the test suite (PYTEST_ARGS=... passes options to pytest)"
	@echo "make lint    ruff check, ruff format --check, mypy"
	@echo "make format  ruff format and ruff check --fix"
	@echo "make clean   remove .venv and caches (keeps ./data)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(RUNTIME_STAMP)

serve: $(RUNTIME_STAMP)
	$(BIN)/lunogen serve --host $(HOST) --port $(PORT)

# The browser tests drive Debian's Chromium (never a downloaded browser).
$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

test: $(DEV_STAMP) | $(CHROMIUM)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
