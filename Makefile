# The two commands: `make demo` (the main job) and `make test` (the tests). Each one does its
# whole set-up first, idempotently: system packages, Toxiproxy, and the virtualenv in .venv.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
RESLAB := $(VENV)/bin/reslab
STAMP := $(VENV)/.installed

.PHONY: demo test setup system lint bench clean

setup: system $(STAMP)

system:
	@bash scripts/setup-system.sh

$(STAMP): pyproject.toml
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	@$(PYTHON) -m pip install --quiet --upgrade pip
	@$(PYTHON) -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

demo: setup
	$(RESLAB) policy explain
	$(RESLAB) policy explain --policy policies/db-first.yaml --diff
	$(RESLAB) scenario validate scenarios/*.yaml

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy engine sim loadtests chaos reports scenarios reslab
	$(VENV)/bin/lint-imports

test: setup lint
	$(VENV)/bin/pytest -q

bench: setup
	$(PYTHON) benchmarks/bench_breaker.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
