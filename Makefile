# The two commands: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench-ingest bench-junit bench-classify bench-sla-sweep bench-breach-latency clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c "import ensurepip" 2>/dev/null || { \
	  echo "Installing python3-venv (apt-get)"; apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py ensure_admin
	$(BIN)/python manage.py run_portal

test: $(STAMP)
	@command -v chromium >/dev/null || { echo "Installing Chromium for the browser tests (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	scripts/with-postgres.sh $(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench-ingest: $(STAMP)
	scripts/with-postgres.sh $(BIN)/python bench/ingest.py $(BENCH_ARGS)

bench-junit: $(STAMP)
	scripts/with-postgres.sh $(BIN)/python bench/junit.py $(BENCH_ARGS)

bench-classify: $(STAMP)
	scripts/with-postgres.sh $(BIN)/python bench/classify.py $(BENCH_ARGS)

bench-sla-sweep: $(STAMP)
	scripts/with-postgres.sh $(BIN)/python bench/sla_sweep.py $(BENCH_ARGS)

bench-breach-latency: $(STAMP)
	scripts/with-postgres.sh $(BIN)/python bench/breach_latency.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
