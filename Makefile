# Quick start: `make demo` and `make test` each set themselves up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench messages clean

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
	$(BIN)/lint-imports  # the layers contracts in pyproject.toml

# The suite runs on TEST_WORKERS processes (pytest-xdist): most tests wait on subprocesses,
# sockets and timers, so three workers overlap that waiting even on a two-core machine
# (measured here: 4 min 21 s on two, 3 min 29 s on three).
# `make test TEST_WORKERS=0` runs it in one process. --dist loadgroup keeps the tests marked
# xdist_group(name) on one worker (a module's costly shared fixture is then started once).
TEST_WORKERS ?= 3

test: setup lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

bench: setup
	$(BIN)/python bench/run_all.py

# The gettext catalogues (README, "Adding a language"): extract the English msgids of the code and
# the templates into the .pot, merge it into every language's .po, compile each .po to its .mo.
# nN_ marks a counted text translated later; english_ngettext (operator lines) is not extracted.
LOCALE_DIR := newsletter/locale
messages: setup
	$(BIN)/pybabel extract -F babel.cfg -k nN_:1,2 -c TRANSLATORS: --no-wrap --sort-by-file \
		--project newsletter --version 0.1.0 --copyright-holder "the newsletter authors" -o $(LOCALE_DIR)/newsletter.pot .
	$(BIN)/pybabel update -i $(LOCALE_DIR)/newsletter.pot -d $(LOCALE_DIR) -D newsletter \
		--no-wrap --ignore-obsolete
	$(BIN)/pybabel compile -d $(LOCALE_DIR) -D newsletter --statistics

clean:
	rm -rf $(VENV) out demo-out .pytest_cache .ruff_cache
