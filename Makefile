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

# The main job: the policy, the catalog, the staging stack, a prediction, then a short
# campaign that measures the same scenario for real and compares the two.
demo: setup
	$(RESLAB) policy explain
	$(RESLAB) policy explain --policy policies/db-first.yaml --diff
	$(RESLAB) scenario validate scenarios/*.yaml
	$(RESLAB) staging up
	$(RESLAB) simulate postgres-down --replications 10
	$(RESLAB) campaign postgres-blip; status=$$?; \
	  echo "campaign exit code $$status (0 holds, 1 breached; see compare.json)"; \
	  echo "the staging stack is still up: .venv/bin/reslab staging down stops it"; \
	  test $$status -le 1

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy engine sim loadtests chaos reports scenarios reslab
	$(VENV)/bin/lint-imports

test: setup lint
	$(VENV)/bin/pytest -q

# Performance figures, written to benchmarks/results/; not part of the tests' pass/fail.
bench: setup
	$(PYTHON) benchmarks/bench_breaker.py
	$(PYTHON) benchmarks/bench_sim.py --rounds 3
	$(PYTHON) benchmarks/bench_engine.py
	$(PYTHON) benchmarks/bench_loadgen.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
