# advlab: the two commands of the README are `make run` and `make test`; both bootstrap .venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UI_PORT ?= 5000
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help bootstrap run test test-fast test-cluster lint format ui report bench clean clean-store

help: ## List the make targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

bootstrap: ## Create/refresh .venv (idempotent; re-runs when pyproject.toml or ADVLAB_TORCH_SPEC changes)
	@bash scripts/bootstrap.sh

run: bootstrap ## Run the main job: python -m advlab (quickstart; extra Hydra overrides via ARGS="...")
	$(PY) -m advlab $(ARGS)

test: bootstrap ## Run lint and the whole test suite (slow and end-to-end tests included)
	$(PY) -m ruff check advlab tests benchmarks scripts
	$(PY) -m pytest -q $(ARGS)

test-fast: bootstrap ## Run only the fast tests
	$(PY) -m pytest -q -m "not slow and not e2e" $(ARGS)

test-cluster: bootstrap ## As root: SLURM sweeps into mlflow server on PostgreSQL (installs both if missing)
	@bash scripts/cluster/install.sh
	$(PY) -m pytest -q -m cluster tests/cluster $(ARGS)

lint: bootstrap ## ruff check + format check
	$(PY) -m ruff check advlab tests benchmarks scripts
	$(PY) -m ruff format --check advlab tests benchmarks scripts

format: bootstrap ## ruff format + autofix
	$(PY) -m ruff format advlab tests benchmarks scripts
	$(PY) -m ruff check --fix advlab tests benchmarks scripts

ui: bootstrap ## MLflow UI on this project's store, bound to 127.0.0.1 (UI_PORT=5000)
	@$(PY) -c 'from advlab.tracking import ui_link; print("advlab runs in the MLflow UI:", ui_link("http://127.0.0.1:$(UI_PORT)"))'
	$(PY) -m mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/runs/mlflow.db" \
		--default-artifact-root "$(CURDIR)/runs/mlartifacts" --host 127.0.0.1 --port $(UI_PORT)

report: bootstrap ## PDF report of the latest run's experiment; another: make report ARGS="report.experiment=NAME"
	$(PY) -m advlab.report $(ARGS)

bench: bootstrap ## Run the benchmarks (prints ratios; see docs/benchmarks.md)
	$(PY) -m benchmarks.run_all $(ARGS)

clean: ## Remove run directories, reports and caches; keeps .venv and the MLflow store (runs/mlflow.db, runs/mlartifacts)
	find runs -mindepth 1 -maxdepth 1 ! -name '.gitkeep' ! -name 'mlflow.db*' ! -name mlartifacts -exec rm -rf {} +
	rm -rf reports/*.pdf .pytest_cache
	touch runs/.gitkeep reports/.gitkeep
	@if [ -e runs/mlflow.db ] || [ -e runs/mlartifacts ]; then \
		echo "kept the MLflow store (runs/mlflow.db, runs/mlartifacts): make clean-store deletes it"; fi

clean-store: ## Delete the MLflow store: every tracked run, metric and artifact (runs/mlflow.db, runs/mlartifacts)
	@if [ -e runs/mlflow.db ] || [ -e runs/mlartifacts ]; then \
		rm -rf runs/mlflow.db runs/mlflow.db-* runs/mlartifacts; \
		echo "deleted the MLflow store: runs/mlflow.db and runs/mlartifacts (every tracked run)"; \
	else echo "no MLflow store in runs/ (nothing deleted)"; fi
