# The project's entry points. `make deps` then `make test` is what .ci/run does.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: deps test lint typecheck bench faults docs clean

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

bench:  ## durableflow beside DBOS and raw asyncpg, in one run, on one Postgres
	bash bench/setup_peers.sh
	$(BIN)/python bench/run_bench.py
	$(BIN)/python bench/storage_bench.py

faults:  ## the fault battery of docs/faults.md at full size; writes the table to bench/results/faults.md
	DURABLEFLOW_FAULTS_SIZE=full DURABLEFLOW_FAULTS_REPORT=bench/results/faults.md \
		$(BIN)/pytest tests/acceptance/faults -m faults

docs:  ## the docs are Markdown in docs/; this checks their local links resolve
	$(BIN)/python -c "import pathlib,re,sys; bad=[(p,l) for p in pathlib.Path('docs').glob('*.md') for l in re.findall(r'\]\(([^)#:]+)\)', p.read_text()) if not (p.parent/l).exists()]; print('\n'.join(f'{p}: broken link {l}' for p,l in bad) or 'docs: all local links resolve'); sys.exit(bool(bad))"

clean:
	rm -rf $(VENV) .venv-peers .pytest_cache .mypy_cache .ruff_cache .durableflow
