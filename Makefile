# SLA Monitor: one entry point for people and CI. `make help` lists the targets.
# The local stack (Prometheus + node-exporter, tansu, MariaDB) is driven by scripts/; its
# settings are STACK_* environment variables (see scripts/stack.py).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help install up down stop status migrate test lint fmt bench demo demo-report clean assets

help:
	@echo "make install   install what is missing (Debian packages, .venv via uv)"
	@echo "make up        start the local stack on 127.0.0.1 (idempotent)"
	@echo "make status    show the stack's components (exit 3 if one is down)"
	@echo "make down      stop what 'make up' started (alias: make stop)"
	@echo "make migrate   bring the MySQL schema up to date (the one command that migrates)"
	@echo "make demo      the stack, the demo history and the services, with where to look"
	@echo "make demo-report  the detector's WARN/ERROR windows and the SLO alerts of the demo"
	@echo "make test      lint, type-check, unit and integration tests (real services)"
	@echo "make lint      ruff check, ruff format --check, mypy"
	@echo "make fmt       ruff format and safe ruff fixes"
	@echo "make bench     benchmarks (results in BENCHMARKS.md)"
	@echo "make assets    rebuild the pages' static assets (npm; the result is committed)"
	@echo "make clean     stop the stack, delete its data and the tool caches"

install:
	scripts/bootstrap

up:
	scripts/up

down stop:
	scripts/down

status:
	scripts/status

# The schema's one owner (the services only check its version). On the local stack's MariaDB
# when its stack.env exists (scripts/up runs it too), else with the MYSQL_* of the environment.
migrate:
	@[ -x $(BIN)/python ] || BOOTSTRAP_QUIET=1 scripts/bootstrap
	if [ -f "$${STACK_DIR:-.stack}/stack.env" ]; then set -a; . "$${STACK_DIR:-.stack}/stack.env"; set +a; fi; \
	$(BIN)/python -m sla_common.migrate

# The one test command (README.md, .ci/run). Integration tests start and stop their own stack.
test:
	@[ -x $(BIN)/python ] || BOOTSTRAP_QUIET=1 scripts/bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Starts the local stack if needed (left running: `make down`), one BLAS thread so the
# figures are per core. Results: bench/results/*.json; record them in BENCHMARKS.md.
bench:
	scripts/up >/dev/null
	set -a; . "$${STACK_DIR:-.stack}/stack.env"; set +a; \
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m bench

demo:
	scripts/demo

demo-report:
	$(BIN)/python scripts/demo_report.py --anomalies --alerts

clean:
	scripts/down --purge
	rm -rf .stack .mypy_cache .ruff_cache .pytest_cache .hypothesis

# gRPC stubs of protos/ into data_retrieval/_pb (committed; a unit test checks they match).
.PHONY: protos
protos:
	$(BIN)/python -m data_retrieval.protogen

# The pages' static assets (uPlot bundled with web/src, Swagger UI for /docs) into
# sla_manager/static, committed: neither CI nor a user needs npm. Versions: web/package-lock.json.
assets:
	cd web && npm ci --no-audit --no-fund && npm run build
