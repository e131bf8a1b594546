# casereview: `make demo` runs the main job, `make test` passes the tests. Each sets itself up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv lint browser test test-unit infra-up infra-down infra-status up down status logs demo bench clean

help:
	@echo "make demo          set up, start everything, run the reference audit end to end"
	@echo "make test          set up, start what the tests need, run lint + every test"
	@echo "make up|down       infrastructure plus the three services, in the background"
	@echo "make infra-up|infra-down|infra-status   Kafka and the document store only"
	@echo "make logs          follow the services' logs"
	@echo "make bench         the throughput and latency benchmark"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing casereview and its tools into $(VENV)…"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The briefing is rendered in Debian's Chromium by a test; install it where it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the briefing render test…"; \
	  if [ "$$(id -u)" = 0 ]; then APT=apt-get; else APT="sudo apt-get"; fi; \
	  $$APT update -qq && DEBIAN_FRONTEND=noninteractive $$APT install -y -qq chromium >/dev/null; }

# The session fixture starts the native servers when none answer and stops what it started.
test: lint browser
	$(BIN)/python -m pytest -p no:cacheprovider

test-unit: venv
	$(BIN)/python -m pytest -m unit

infra-up:
	@bash deploy/infra.sh up

infra-down:
	@bash deploy/infra.sh down

# Status prints each server's state; like `systemctl status`, the script's own exit code says
# whether all are up, but make need not fail over a stopped server.
infra-status:
	@bash deploy/infra.sh status || true

up: venv infra-up
	@bash deploy/services.sh up

down:
	@bash deploy/services.sh down
	@bash deploy/infra.sh down

status:
	@bash deploy/infra.sh status || true
	@bash deploy/services.sh status || true

logs:
	@tail -n 50 -F .local/logs/intake.log .local/logs/themes.log .local/logs/recommendations.log

demo: up
	CASEREVIEW_KAFKA_BOOTSTRAP=$${CASEREVIEW_KAFKA_BOOTSTRAP:-127.0.0.1:$${CASEREVIEW_KAFKA_PORT:-9092}} \
	  $(BIN)/casereview demo

# The benchmark (docs/performance.md) on the servers infra-up starts, or those the
# CASEREVIEW_KAFKA_BOOTSTRAP / CASEREVIEW_MONGO_URL settings name. Options as BENCH_<NAME>
# variables (make bench BENCH_DURATION=15 BENCH_LATENCY_RATE=200) or BENCH_ARGS="--help".
bench: venv infra-up
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean:
	@bash deploy/services.sh down || true
	@bash deploy/infra.sh down || true
	@bash deploy/ferretdb/ferretdb.sh forget || true
	rm -rf .local $(VENV)
