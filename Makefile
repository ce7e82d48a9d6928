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

.PHONY: venv demo test ui up down dbt-build load-data lock lint clean bench

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
	$(PY) scripts/demo.py

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# The Airflow UI on this machine: api-server, scheduler, dag-processor and triggerer in one process tree.
ui: venv
	$(PY) scripts/demo.py --prepare-only
	airflow standalone

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

bench: venv
	$(PY) bench/dag_parse.py

clean:
	rm -rf $(RETRAIN_STATE_DIR) dbt/target dbt/logs
