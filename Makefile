# airflow-retrain: `make demo` runs the churn retraining DAG on the embedded defaults; `make test` runs
# the test suite. Both create the project-local .venv from the pinned lock (requirements.txt) first.
SHELL := /bin/bash
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
PYTHON ?= python3
UV_VERSION := 0.13.9

export RETRAIN_HOME := $(ROOT)
export RETRAIN_STATE_DIR ?= $(ROOT)/.local
export AIRFLOW_HOME ?= $(RETRAIN_STATE_DIR)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM ?= 4
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := False
export AIRFLOW__API__PORT ?= 8080
export PATH := $(VENV)/bin:$(PATH)
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
# `make demo BACKEND=sagemaker` trains on the fake cloud; `make demo MONITORING=1` then shows a drift-triggered retrain; `make fake-cloud` serves it in the foreground.
BACKEND ?= local
FAKE_CLOUD_PORT ?= 5599
FAKE_VERTEX_PORT ?= 5598

.PHONY: venv demo test test-fast ui up down dbt-build load-data lock lint lint-imports clean bench fake-cloud cost-report bench-teardown docs refresh-prices

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync -q --python $(PY) requirements.txt
	@rm -rf plugins/airflow_retrain.egg-info  # left by older checkouts; see setup.cfg
	@mkdir -p build
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@touch $@

demo: venv
	$(PY) scripts/demo.py --backend $(BACKEND) $(if $(MONITORING),--monitoring)

# A fake AWS (moto S3, SageMaker with training jobs that really run, CloudWatch, Logs, IAM, STS) on
# loopback; prints the AIRFLOW_CONN_AWS_DEFAULT to export. Ctrl-C stops it and every job it runs.
fake-cloud: venv
	$(PY) scripts/fake_cloud --port $(FAKE_CLOUD_PORT) --vertex-port $(FAKE_VERTEX_PORT) --state-dir $(RETRAIN_STATE_DIR)/fake-cloud

# The whole suite (what .ci/run calls; the services of scripts/services.sh are expected), in parallel
# workers, one test file per worker so a file's module fixtures (an API server, a fake cloud, a DAG bag)
# start once; in a random order whose seed pytest prints first ("Using --randomly-seed=N"): replay a
# failing order with `make test PYTEST_ARGS=--randomly-seed=N`, or keep file order with `-p no:randomly`.
TEST_WORKERS ?= auto
test: venv
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

# The quick loop: no services, no DAG runs, no subprocess-heavy tests (markers `integration` and `slow`).
test-fast: venv
	$(PY) -m pytest -m "not integration and not slow" -n $(TEST_WORKERS) --dist loadfile --durations=10 $(PYTEST_ARGS)

# The Airflow UI (api-server, scheduler, dag-processor, triggerer) and the MLflow UI on the embedded registry;
# `AIRFLOW__API__PORT=8093 MLFLOW_UI_PORT=5001 make ui` moves both (the Execution API URL follows). Ctrl-C stops both.
MLFLOW_UI_PORT ?= 5000
export MLFLOW_UI_PORT
ui: venv
	$(PY) scripts/demo.py --prepare-only
	$(PY) scripts/ui.py

# The deployment in docker-compose.yaml (CeleryExecutor, Redis, Postgres, MLflow server), image built from the lock.
up:
	docker compose up -d --build

down:
	docker compose down

load-data: venv
	$(PY) include/data/load_churn.py --target duckdb --path $(RETRAIN_STATE_DIR)/warehouse.duckdb

dbt-build: load-data
	cd dbt && RETRAIN_DUCKDB_PATH=$(RETRAIN_STATE_DIR)/warehouse.duckdb $(VENV)/bin/dbt build --profiles-dir .

# Re-resolve the lock after changing dependencies in pyproject.toml (minutes; commit the result).
lock:
	uv pip compile pyproject.toml --all-extras --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements.txt

lint: venv
	$(VENV)/bin/ruff check plugins dags tests include scripts bench
	$(MAKE) --no-print-directory lint-imports

# The package's import direction (the contracts in pyproject.toml [tool.importlinter]; docs/architecture.md).
lint-imports: venv
	$(VENV)/bin/lint-imports --no-logo --cache-dir $(ROOT)/build/import_linter_cache pyproject.toml

# The documentation site (docs/, mkdocs.yml) into build/site; --strict fails on any warning (a broken link).
docs: venv
	$(VENV)/bin/mkdocs build --strict --clean -d $(ROOT)/build/site

bench: venv
	$(PY) bench/dag_parse.py

# The cost ledger: GPU-hours and dollars per pipeline per day/week, on-demand vs spot, waste stopped by sweeps.
cost-report: venv
	$(PY) scripts/cost_report.py $(COST_REPORT_ARGS)

# Rebuild plugins/airflow_retrain/data/prices.json from the AWS Price List and Cloud Billing Catalog APIs
# (needs the network; the Vertex part a Cloud Billing API key in CLOUD_BILLING_API_KEY or --gcp-conn-id).
# `make refresh-prices REFRESH_PRICES_ARGS=--dry-run` prints the changes and writes nothing; see docs/prices.md.
refresh-prices: venv
	$(PY) scripts/refresh_prices.py $(REFRESH_PRICES_ARGS)

# One gpu_teardown sweep over 1,000 fake SageMaker resources (moto): wall time and API calls.
bench-teardown: venv
	$(PY) bench/teardown_sweep.py

clean:
	rm -rf $(RETRAIN_STATE_DIR) dbt/target dbt/logs

# --- dbt stage ----------------------------------------------------------------------------------------
# `make dbt ARGS="build -s churn_features"`: the plain dbt CLI on the repo's project and profile, against
# the embedded warehouse (what the DAG uses while no warehouse connection is defined).
DBT_PROJECT_DIR ?= dbt
DBT_DOCS_PORT ?= 8081
.PHONY: dbt dbt-manifest dbt-docs bench-dbt bench-venv

dbt: venv
	cd $(DBT_PROJECT_DIR) && RETRAIN_DUCKDB_PATH=$(RETRAIN_STATE_DIR)/warehouse.duckdb $(VENV)/bin/dbt $(ARGS) --profiles-dir .

# dbt deps + dbt parse, cached by a hash of the project's files: what DAG parsing renders the dbt group from.
dbt-manifest: venv
	$(PY) -m airflow_retrain.dbt manifest --project-dir $(DBT_PROJECT_DIR)

# dbt docs for the project, served where the dbt nodes' "dbt docs" links point (RETRAIN_DBT_DOCS_URL).
dbt-docs: venv
	cd $(DBT_PROJECT_DIR) && RETRAIN_DUCKDB_PATH=$(RETRAIN_STATE_DIR)/warehouse.duckdb $(VENV)/bin/dbt docs generate --profiles-dir .
	cd $(DBT_PROJECT_DIR) && RETRAIN_DUCKDB_PATH=$(RETRAIN_STATE_DIR)/warehouse.duckdb $(VENV)/bin/dbt docs serve --profiles-dir . --port $(DBT_DOCS_PORT) --no-browser

# The benchmark's own venv: the lock + this package + astronomer-cosmos (benchmark-only, never in the lock).
BENCH_VENV := $(ROOT)/.venv-bench
bench-venv: $(BENCH_VENV)/.installed
$(BENCH_VENV)/.installed: requirements.txt pyproject.toml venv
	$(VENV)/bin/uv venv -q --python $(PY) $(BENCH_VENV)
	$(VENV)/bin/uv pip sync -q --python $(BENCH_VENV)/bin/python requirements.txt
	$(VENV)/bin/uv pip install -q --python $(BENCH_VENV)/bin/python --no-deps -e .
	$(VENV)/bin/uv pip install -q --python $(BENCH_VENV)/bin/python astronomer-cosmos==1.15.1
	@touch $@

# `make bench-dbt ARGS="--project-dir DIR [--select ...] [--json FILE]"`; default: a generated 100-model project.
bench-dbt: bench-venv
	@test -n "$(ARGS)" || $(PY) bench/generate_dbt_project.py --models 100 --out $(RETRAIN_STATE_DIR)/bench-dbt/synthetic_100
	$(BENCH_VENV)/bin/python bench/dbt_stage.py $(if $(ARGS),$(ARGS),--project-dir $(RETRAIN_STATE_DIR)/bench-dbt/synthetic_100)
