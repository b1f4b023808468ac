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
BWRAP := /usr/bin/bwrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help
.PHONY: help serve test lint format clean check-sandbox bench

help:
	@echo "make serve   run LunoGen on http://$(HOST):$(PORT) (data in ./data)"
	@echo "make test    run the test suite (PYTEST_ARGS=... passes options to pytest)"
	@echo "make check-sandbox  which LunoEdge sandbox backends work here, with a self-test"
	@echo "make lint    ruff check, ruff format --check, mypy, the import layers (lint-imports)"
	@echo "make bench   the benchmarks (bench/README.md): figures against the budgets"
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

serve: $(RUNTIME_STAMP) | $(BWRAP)
	$(BIN)/lunogen serve --host $(HOST) --port $(PORT)

# The browser tests drive Debian's Chromium (never a downloaded browser).
$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

# LunoEdge backends: bubblewrap, and gVisor's runsc where Debian has it (a missing runsc is
# reported by `lunogen sandbox check` and by the gVisor tests, never silently skipped).
$(BWRAP):
	@echo "Installing Debian's bubblewrap and runsc for the sandbox"
	-$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq bubblewrap >/dev/null \
		|| echo "bubblewrap is not installable here; code tools need LUNOGEN_SANDBOX=process"
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq runsc >/dev/null \
		|| echo "runsc (gVisor) is not installable here; the gvisor backend will be unavailable"

test: $(DEV_STAMP) | $(CHROMIUM) $(BWRAP)
	$(BIN)/pytest $(PYTEST_ARGS)

check-sandbox: $(RUNTIME_STAMP) | $(BWRAP)
	$(BIN)/lunogen sandbox check

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src
	$(BIN)/lint-imports --no-cache

bench: $(DEV_STAMP) | $(BWRAP)
	$(BIN)/python bench/serve_overhead.py
	$(BIN)/python bench/idle_agents.py
	$(BIN)/python bench/crash.py --rounds 3
	$(BIN)/python bench/sandbox_overhead.py

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
