# The two commands that set everything up on a fresh machine:
#   make demo   builds a demo CRM from the sample workbook and shows it
#   make test   runs the whole test suite (lint, types, tests)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

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

test: lint
	$(BIN)/pytest

bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/bench_store.py
	$(BIN)/python bench/bench_sync_excel.py
	$(BIN)/python bench/bench_sync_gsheet.py
	$(BIN)/python bench/bench_poll.py
	$(BIN)/python bench/bench_merge.py

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
