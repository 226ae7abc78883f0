# optimum-bridge — every target CI and developers use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install format lint types test test-fast test-stack constraints demo bench all clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# constraints.txt pins every package to the versions the tests ran with; the image installs the same.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --constraint constraints.txt --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev tools

format: $(STAMP) ## format the code
	$(BIN)/ruff format optimum_bridge tests bench
	$(BIN)/ruff check --fix optimum_bridge tests bench

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check optimum_bridge tests bench
	$(BIN)/ruff format --check optimum_bridge tests bench

types: $(STAMP) ## mypy --strict on the package and the benchmarks
	$(BIN)/mypy

test: $(STAMP) ## run the whole test suite but the container stack (CI runs both)
	$(BIN)/python -m pytest -m "not stack" --cov --cov-report=term:skip-covered

test-fast: $(STAMP) ## the fast tier: no Redis, no processes (tests/support/tiers.py), no coverage
	$(BIN)/python -m pytest -m "not redis and not processes and not stack"

test-stack: $(STAMP) ## build the image and run the compose stack in podman (tests/system/test_stack.py)
	$(BIN)/python -m pytest -m stack tests/system/test_stack.py tests/system/test_stack_ha.py

constraints: $(STAMP) ## pin the image to this tested environment: constraints.txt from pip freeze
	{ echo "# Every package of the tested environment (make constraints): the Dockerfile installs with -c."; \
	  $(BIN)/pip freeze --all --exclude-editable; } > constraints.txt
	touch $(STAMP)

demo: $(STAMP) ## the main job: a full run against the bundled sandbox
	$(BIN)/optimum-bridge demo

bench: $(STAMP) ## benchmarks (prints tables, writes bench/results/)
	$(BIN)/python -m bench

all: lint types test ## everything CI checks

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .coverage htmlcov
