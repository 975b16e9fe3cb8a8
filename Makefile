# The two commands that set everything up on a fresh machine:
#   make demo   builds a demo CRM from the sample workbook and shows it
#   make test   runs the whole test suite (lint, types, tests)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# pytest-xdist workers for `make test`: "auto" is two per CPU, eight at most (tests/conftest.py
# says why); 0 runs the tests in pytest's own process (for --pdb or -s). pyproject's addopts give
# --dist loadfile: a test file's tests stay on one worker, so a module-scoped server (Dovecot, the
# Sheets stand-in) starts once per file.
TEST_WORKERS ?= auto

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/crmkit quickstart

lint: $(BIN)/.installed
	$(BIN)/ruff check crmkit tests bench
	$(BIN)/ruff format --check crmkit
	$(BIN)/mypy

# scripts/install-test-packages: as root, installs the Debian packages the tests need (LibreOffice,
# poppler-utils, Dovecot, PostgreSQL); otherwise names what is missing and the command that
# installs it, and the tests that need it skip.
test: lint
	scripts/install-test-packages
	$(BIN)/pytest -n $(TEST_WORKERS)

bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/bench_store.py
	$(BIN)/python bench/bench_sync_excel.py
	$(BIN)/python bench/bench_sync_gsheet.py
	$(BIN)/python bench/bench_poll.py
	$(BIN)/python bench/bench_merge.py

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
