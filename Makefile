# Every target installs what it needs: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export AIQ_SYNC_CONFIG ?= $(CURDIR)/examples/aiq_sync.yaml
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: install demo test lint format ui clean bench-peer-env bench

# constraints.txt: the versions the tests last passed with (a new upstream release once
# broke CI with no change here); edit a pin on purpose, then `make test`.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m examples.demo

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

ui: install
	$(BIN)/python -m examples.demo --ui

# The benchmark's dlt peer, installed into the same venv (make bench depends on it).
PEER_STAMP := $(VENV)/.peer-stamp
$(PEER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[peer]'
	@touch $(PEER_STAMP)

bench-peer-env: $(PEER_STAMP)

# Full and nightly sync vs the fetch floor and dlt: `make bench ARGS="--scale 0.05"` for a
# quick run; results in bench/results.json and bench/results.md (docs/performance.md).
bench: install bench-peer-env
	$(BIN)/aiq-sync bench $(ARGS)

clean:
	rm -rf data examples/drops dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
