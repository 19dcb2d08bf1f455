# advlab: the two commands of the README are `make run` and `make test`; both bootstrap .venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UI_PORT ?= 5000
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help bootstrap run test test-fast test-cluster lint format ui report bench clean

help: ## List the make targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

bootstrap: ## Create/refresh .venv (idempotent; re-runs when pyproject.toml or ADVLAB_TORCH_SPEC changes)
	@bash scripts/bootstrap.sh

run: bootstrap ## Run the main job: python -m advlab (quickstart; extra Hydra overrides via ARGS="...")
	$(PY) -m advlab $(ARGS)

test: bootstrap ## Run lint and the whole test suite (slow and end-to-end tests included)
	$(PY) -m ruff check advlab tests benchmarks
	$(PY) -m pytest -q $(ARGS)

test-fast: bootstrap ## Run only the fast tests
	$(PY) -m pytest -q -m "not slow and not e2e" $(ARGS)

test-cluster: bootstrap ## As root: SLURM sweeps into mlflow server on PostgreSQL (installs both if missing)
	@bash scripts/cluster/install.sh
	$(PY) -m pytest -q -m cluster tests/cluster $(ARGS)

lint: bootstrap ## ruff check + format check
	$(PY) -m ruff check advlab tests benchmarks
	$(PY) -m ruff format --check advlab tests benchmarks

format: bootstrap ## ruff format + autofix
	$(PY) -m ruff format advlab tests benchmarks
	$(PY) -m ruff check --fix advlab tests benchmarks

ui: bootstrap ## MLflow UI on this project's store, bound to 127.0.0.1 (UI_PORT=5000)
	@$(PY) -c 'from advlab.tracking import ui_link; print("advlab runs in the MLflow UI:", ui_link("http://127.0.0.1:$(UI_PORT)"))'
	$(PY) -m mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/runs/mlflow.db" \
		--default-artifact-root "$(CURDIR)/runs/mlartifacts" --host 127.0.0.1 --port $(UI_PORT)

report: bootstrap ## PDF report of the latest run's experiment; another: make report ARGS="report.experiment=NAME"
	$(PY) -m advlab.report $(ARGS)

bench: bootstrap ## Run the benchmarks (prints ratios; see docs/benchmarks.md)
	$(PY) -m benchmarks.run_all $(ARGS)

clean: ## Remove generated runs, reports and caches (keeps .venv)
	rm -rf runs/* reports/*.pdf .pytest_cache
	touch runs/.gitkeep reports/.gitkeep
