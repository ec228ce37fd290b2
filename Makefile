# Every target installs what it needs: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export AIQ_SYNC_CONFIG ?= $(CURDIR)/examples/aiq_sync.yaml
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

DEMO_QUERY_STORES := SELECT coalesce(store_name, '(unmapped: ' || location_key || ')') AS store, \
  count(*) AS sales, sum(total) AS revenue, count(DISTINCT contact_id) AS shoppers \
  FROM analytics.sales WHERE NOT is_refund GROUP BY ALL ORDER BY revenue DESC
DEMO_QUERY_LOYALTY := SELECT coalesce(favorite_store_name, '(none)') AS favorite_store, \
  count(*) AS members, sum(points_balance) AS points, \
  count(*) FILTER (WHERE contact_id IN (SELECT contact_id FROM analytics.opt_in_queue \
  WHERE status = 'pending')) AS sms_opt_ins_pending \
  FROM analytics.loyalty_members GROUP BY ALL ORDER BY members DESC

.PHONY: install demo test lint format ui clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	@test -n "$$(ls examples/drops/*.csv 2>/dev/null)" || $(BIN)/python -m examples.generate_drops --out examples/drops
	$(BIN)/aiq-sync check
	$(BIN)/aiq-sync run
	@echo; echo "Revenue by store:"
	@$(BIN)/aiq-sync sql "$(DEMO_QUERY_STORES)"
	@echo "Loyalty members by favourite store:"
	@$(BIN)/aiq-sync sql "$(DEMO_QUERY_LOYALTY)"

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
	$(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf data examples/drops dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
