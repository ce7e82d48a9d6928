"""The real backends by configuration: a Postgres warehouse and a remote MLflow tracking server.

`scripts/services.sh start` (run by .ci/run) starts both on loopback and exports their URLs. Without
them these tests skip locally; with RETRAIN_REQUIRE_SERVICES=1 (CI) a missing service is a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
from helpers import require_service

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


_service = require_service


@pytest.fixture(scope="module")
def pg():
    url = urlparse(_service("RETRAIN_TEST_PG_URL"))
    return {
        "host": url.hostname,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.path.lstrip("/"),
    }


@pytest.fixture
def pg_conn(pg, monkeypatch, churn_loader):
    conn = {
        "conn_type": "postgres",
        "host": pg["host"],
        "port": pg["port"],
        "login": pg["user"],
        "password": pg["password"],
        "schema": pg["dbname"],
        "extra": {"schema": "public"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_PG_WAREHOUSE", json.dumps(conn))
    # The loader reads the same connection (through PostgresHook), extra "schema" (dbt's) included.
    assert churn_loader["load_to_postgres"]("pg_warehouse") == 7043
    return "pg_warehouse"


def test_dbt_build_and_export_on_postgres(pg, pg_conn, make_context, caplog):
    from airflow_retrain.operators.dataset import ExportTrainingDatasetOperator
    from airflow_retrain.operators.dbt import DbtBuildOperator

    ctx = make_context(dag_id="pg_retrain", run_id="pg1")
    dbt = DbtBuildOperator(
        task_id="dbt_build", pipeline="pg", project_dir=str(ROOT / "dbt"), select=["+churn_features"],
        warehouse_conn_id=pg_conn,
    )
    summary = dbt.execute(ctx)
    assert summary["success"] and summary["tests_failed"] == 0 and summary["models_built"] == 2
    assert summary["relations"]["churn_features"] == f'"{pg["dbname"]}"."marts"."churn_features"'
    assert summary["warehouse"].startswith(f"postgres://{pg['host']}:{pg['port']}/{pg['dbname']}")
    export = ExportTrainingDatasetOperator(
        task_id="export_dataset", pipeline="pg", relations=summary["relations"], feature_table="churn_features",
        target_column="churned", id_column="customer_id", warehouse_conn_id=pg_conn,
    )
    result = export.execute(ctx)
    assert result["rows"]["train"] + result["rows"]["test"] == 7043
    # The password is in the connection only: not in results, XComs or logs.
    everything = json.dumps([summary, result, ctx["ti"].xcoms]) + caplog.text
    assert pg["password"] not in everything


def test_promotion_through_a_remote_mlflow_server(monkeypatch, make_context, tmp_path):
    import numpy as np
    import pandas as pd
    import xgboost
    from mlflow import MlflowClient

    from airflow_retrain.operators.gates import MetricGateOperator
    from airflow_retrain.operators.registry import PromoteModelOperator, RegisterModelOperator

    url = _service("RETRAIN_TEST_MLFLOW_URL")
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_REMOTE", json.dumps({"conn_type": "mlflow", "host": url}))
    rng = np.random.default_rng(1)
    x = pd.DataFrame({"tenure": rng.integers(0, 70, 200), "charges": rng.normal(60, 20, 200)})
    y = (x["tenure"] < 12).astype(int)
    (tmp_path / "model").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text('{"metrics": {"roc_auc": 0.9}}')
    xgboost.XGBClassifier(n_estimators=3, max_depth=2).fit(x, y).save_model(tmp_path / "model" / "model.json")
    x.assign(customer_id=[f"C{i}" for i in range(200)], churned=y).to_parquet(tmp_path / "test" / "p.parquet")
    name = f"churn_remote_{os.getpid()}"
    ctx = make_context(dag_id="remote_retrain", run_id=f"r-{os.getpid()}")
    candidate = RegisterModelOperator(
        task_id="register", pipeline="remote", model_name=name, experiment="retrain/remote",
        training={"job_name": "j", "backend": "local", "metrics": {"roc_auc": 0.9}, "info": {},
                  "model_uri": f"file://{tmp_path / 'model'}", "output_uri": f"file://{tmp_path / 'out'}",
                  "compute_seconds": 1.0,
                  "cost": {"usd": 0.0}},
        dataset={"relation": "r", "channels": {"test": f"file://{tmp_path / 'test'}"}, "rows": {"train": 1, "test": 200},
                 "id_column": "customer_id", "target_column": "churned", "fingerprint": "f"},
        mlflow_conn_id="mlflow_remote",
    ).execute(ctx)
    assert candidate["run_url"].startswith(url)
    MetricGateOperator(
        task_id="gate", pipeline="remote", thresholds={"roc_auc": {"min": 0.8}}, metrics={"roc_auc": 0.9},
        candidate=candidate, mlflow_conn_id="mlflow_remote",
    ).execute(ctx)
    decision = PromoteModelOperator(
        task_id="promote", pipeline="remote", candidate=candidate, primary_metric="roc_auc",
        mlflow_conn_id="mlflow_remote",
    ).execute(ctx)
    assert decision["decision"] == "promoted"
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    assert str(client.get_model_version_by_alias(name, "champion").version) == candidate["version"]
    # The artifacts went to the server (proxied), not to a local folder: load the champion back from it.
    import mlflow

    mlflow.set_tracking_uri(url)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert len(model.predict(x.head(5))) == 5


def test_postgres_connection_becomes_a_dbt_profile_with_no_secret_on_disk_in_logs_or_env(
    pg, pg_conn, make_context, caplog, tmp_path, monkeypatch, shop_project
):
    """A project without profiles.yml, pointed at a postgres connection: the generated profile reads the
    password from one variable only the dbt process gets; nothing else of the worker's env reaches dbt."""
    import shutil
    import stat
    import sys

    from airflow_retrain.operators.dbt import DbtBuildOperator

    project = tmp_path / "shop"
    shutil.copytree(shop_project, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb", "profiles.yml"))
    text = (project / "dbt_project.yml").read_text()  # drop the DuckDB-only on-run-start hooks
    (project / "dbt_project.yml").write_text(text.split("on-run-start:")[0] + "models:" + text.split("models:", 1)[1])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "planted-ml-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-aws-secret")
    environ = tmp_path / "environ"
    exe = tmp_path / "dbt"
    exe.write_text(f"#!/bin/sh\ncat /proc/$$/environ > {environ}\nexec {Path(sys.executable).with_name('dbt')} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("RETRAIN_DBT_EXECUTABLE", str(exe))
    ctx = make_context(dag_id="pg_shop_retrain", run_id=f"pg-shop-{os.getpid()}")
    op = DbtBuildOperator(
        task_id="dbt_build", pipeline="pg_shop", project_dir=str(project), select=["+stg_customers"],
        warehouse_conn_id=pg_conn,
    )  # fmt: skip
    summary = op.execute(ctx)
    assert summary["seeds_loaded"] == 1 and summary["models_built"] == 1
    assert summary["warehouse"].startswith(f"postgres://{pg['host']}:{pg['port']}/{pg['dbname']}")
    assert summary["target"] == "postgres" and summary["relations"]["stg_customers"].startswith(f'"{pg["dbname"]}"')
    env = dict(item.split("=", 1) for item in environ.read_text().split("\0") if "=" in item)
    assert env["DBT_ENV_SECRET_RETRAIN_PASSWORD"] == pg["password"]
    assert not {"MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AIRFLOW_CONN_PG_WAREHOUSE"} & set(env)
    generated = list((Path(os.environ["RETRAIN_STATE_DIR"]) / "runs").rglob("profile/profiles.yml"))
    assert generated and all(pg["password"] not in p.read_text() for p in generated)
    logs = list((Path(os.environ["RETRAIN_STATE_DIR"]) / "runs").rglob("dbt.log"))
    everything = json.dumps([summary, ctx["ti"].xcoms]) + caplog.text + "".join(p.read_text() for p in logs)
    assert pg["password"] not in everything
