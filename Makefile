# optimum-bridge — every target CI and developers use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install format lint types test test-fast demo bench all clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev tools

format: $(STAMP) ## format the code
	$(BIN)/ruff format optimum_bridge tests bench
	$(BIN)/ruff check --fix optimum_bridge tests bench

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check optimum_bridge tests bench
	$(BIN)/ruff format --check optimum_bridge tests bench

types: $(STAMP) ## mypy --strict on the package
	$(BIN)/mypy

test: $(STAMP) ## run the whole test suite (what CI runs)
	$(BIN)/python -m pytest --cov --cov-report=term:skip-covered

test-fast: $(STAMP) ## the fast tier: no Redis, no processes (tests/tiers.py), no coverage
	$(BIN)/python -m pytest -m "not redis and not processes"

demo: $(STAMP) ## the main job: a full run against the bundled sandbox
	$(BIN)/optimum-bridge demo

bench: $(STAMP) ## benchmarks (prints tables, writes bench/results/)
	$(BIN)/python -m bench

all: lint types test ## everything CI checks

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .coverage htmlcov
