# plivohook: `make run` starts the server on SQLite, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("plivohook needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,test,flask]'
	@touch $(STAMP)

run: $(STAMP)
	@$(BIN)/python scripts/run_dev.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

test: $(STAMP) lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	@bash bench/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
