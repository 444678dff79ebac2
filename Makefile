# The project's entry points. `make deps` then `make test` is what .ci/run does.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: deps test lint typecheck bench bench-graphs faults acceptance-leader-full acceptance-tx-full docs clean vendor-mermaid

deps:  ## create .venv and install durableflow with every extra needed for tests
	$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -e '.[dev,embedded,s3]'

test:  ## the whole suite: unit, integration, acceptance, migrations
	$(BIN)/pytest

lint:
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

bench:  ## durableflow beside DBOS and raw asyncpg, in one run, on one Postgres; storage; artefacts
	bash bench/setup_peers.sh
	$(BIN)/python bench/run_bench.py
	$(BIN)/python bench/storage_bench.py
	$(BIN)/python bench/artefacts_bench.py
	$(BIN)/python bench/admin_bench.py
	$(BIN)/python bench/run_queue_bench.py
	$(BIN)/python bench/waits_bench.py
	$(BIN)/python bench/tx_bench.py
	$(BIN)/python bench/queued_wal_bench.py
	$(BIN)/python bench/concurrent_clients_bench.py
	$(BIN)/python bench/concurrent_clients_bench.py --clients 1 --in-flight 32
	$(BIN)/python bench/signals_under_load.py
	$(BIN)/python bench/children_under_load.py --cancel 1.0

bench-graphs:  ## a 10-state graph on durableflow beside LangGraph, same Postgres, same run
	bash bench/setup_langgraph.sh
	$(BIN)/python bench/run_graph_bench.py

acceptance-leader-full:  ## the leader/schedule/queue acceptance tests at the issue's full size
	DURABLEFLOW_LEADER_ROUNDS=20 DURABLEFLOW_QUEUE_RUNS=200 $(BIN)/pytest \
		tests/acceptance/test_leader_failover.py tests/acceptance/test_queue_limits.py

acceptance-tx-full:  ## exactly-once transactional steps at the issue's size: 200 runs, 10 kill -9s
	DURABLEFLOW_TX_RUNS=200 DURABLEFLOW_TX_KILLS=10 $(BIN)/pytest -s \
		tests/acceptance/test_transactions_kill.py

faults:  ## the fault battery of docs/faults.md at full size; writes the table to bench/results/faults.md
	DURABLEFLOW_FAULTS_SIZE=full DURABLEFLOW_FAULTS_REPORT=bench/results/faults.md \
		$(BIN)/pytest tests/acceptance/faults -m faults

docs:  ## the docs keep up with the code: local links and anchors, public names, settings, log events, commands
	$(BIN)/pytest -q -p no:cacheprovider tests/unit/test_docs.py

clean:
	rm -rf $(VENV) .venv-peers .venv-absurd .venv-langgraph .pytest_cache .mypy_cache .ruff_cache .durableflow

MERMAID_VERSION = 12.3.0
MERMAID_DIR = src/durableflow/web/static/vendor/mermaid
vendor-mermaid:  ## re-vendor Mermaid for the web UI from the npm registry (pinned version)
	rm -rf .vendor-tmp && mkdir .vendor-tmp && cd .vendor-tmp && npm pack mermaid@$(MERMAID_VERSION) >/dev/null
	tar -xzf .vendor-tmp/mermaid-$(MERMAID_VERSION).tgz -C .vendor-tmp
	cp .vendor-tmp/package/dist/mermaid.min.js .vendor-tmp/package/LICENSE $(MERMAID_DIR)/
	sha256sum .vendor-tmp/mermaid-$(MERMAID_VERSION).tgz $(MERMAID_DIR)/mermaid.min.js
	rm -rf .vendor-tmp
