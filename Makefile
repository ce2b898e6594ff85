# Quick start: `make demo` and `make test` each set themselves up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/newsletter demo

lint: setup
	$(BIN)/ruff check newsletter tests bench testkit

# The suite runs on TEST_WORKERS processes (pytest-xdist): most tests wait on subprocesses,
# sockets and timers, so two workers overlap that waiting even on a two-core machine.
# `make test TEST_WORKERS=0` runs it in one process. --dist loadgroup keeps the tests marked
# xdist_group(name) on one worker (a module's costly shared fixture is then started once).
TEST_WORKERS ?= 2

test: setup lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) out demo-out .pytest_cache .ruff_cache
