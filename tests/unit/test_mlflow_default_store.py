"""No MLflow call falls back to MLflow's process-wide default store.

MLflow's default tracking and registry URI is ``sqlite:///mlflow.db`` in the current directory: any call
that resolves a ``models:/`` URI (or builds a client) without an explicit URI creates that file, with an
empty ``Default`` experiment whose artifacts go to ``./mlruns``. One such file was committed at the
repository root. Here the register -> gate -> promote path, the gates' model loading and the demo's
champion check run from an empty working directory with MLflow's process-wide URIs unset, and must leave
that directory empty and those URIs unset.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_retrain.operators.gates import MetricGateOperator
from airflow_retrain.operators.registry import PromoteModelOperator, RegisterModelOperator

ROOT = Path(__file__).resolve().parents[2]
CONN = "mlflow_cwd_check"
MODEL = "churn_cwd_check"


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch) -> Path:
    """An empty working directory, and MLflow's process-wide URIs back at their defaults (the state every
    fresh worker process starts in), restored after the test."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    return cwd


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    """A state dir whose embedded registry (``<state>/mlflow/mlflow.db``) the connection points at."""
    state = tmp_path / "state"
    (state / "mlflow").mkdir(parents=True)
    conn = {
        "conn_type": "mlflow",
        "host": f"sqlite:///{state / 'mlflow' / 'mlflow.db'}",
        "extra": {"artifact_root": (state / "mlflow" / "artifacts").as_uri()},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(conn))
    return state


@pytest.fixture
def trained(tmp_path) -> Path:
    """A tiny XGBoost model, its metrics and a holdout, as the training stage leaves them."""
    import xgboost

    base = tmp_path / "trained"
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"tenure": rng.integers(0, 70, 200), "charges": rng.normal(60, 20, 200)})
    y = (x["tenure"] < 12).astype(int)
    (base / "model").mkdir(parents=True)
    xgboost.XGBClassifier(n_estimators=3, max_depth=2).fit(x, y).save_model(base / "model" / "model.json")
    (base / "out").mkdir()
    (base / "out" / "metrics.json").write_text(json.dumps({"metrics": {"roc_auc": 0.9}}))
    (base / "test").mkdir()
    x.assign(customer_id=[f"C{i}" for i in range(200)], churned=y).to_parquet(base / "test" / "part-0.parquet")
    return base


def _register_gate_promote(trained: Path, make_context) -> dict:
    ctx = make_context("churn_retrain", "run1")
    candidate = RegisterModelOperator(
        task_id="register", pipeline="churn", model_name=MODEL, experiment="retrain/churn", mlflow_conn_id=CONN,
        training={"job_name": "churn-cwd-1", "backend": "local", "metrics": {"roc_auc": 0.9}, "info": {},
                  "model_uri": (trained / "model").as_uri(), "output_uri": (trained / "out").as_uri(),
                  "compute_seconds": 1.0, "cost": {"usd": 0.0}},
        dataset={"relation": "r", "channels": {"train": (trained / "test").as_uri(), "test": (trained / "test").as_uri()},
                 "rows": {"train": 200, "test": 200}, "id_column": "customer_id", "target_column": "churned",
                 "fingerprint": "f"},
    ).execute(ctx)
    MetricGateOperator(
        task_id="gate_metrics", pipeline="churn", thresholds={"roc_auc": {"min": 0.5}}, metrics={"roc_auc": 0.9},
        candidate=candidate, mlflow_conn_id=CONN,
    ).execute(ctx)
    return PromoteModelOperator(
        task_id="promote", pipeline="churn", candidate=candidate, primary_metric="roc_auc", mlflow_conn_id=CONN,
    ).execute(ctx)


def _load_demo():
    spec = importlib.util.spec_from_file_location("retrain_demo_script", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_registry_gates_and_demo_write_no_default_mlflow_store(empty_cwd, state, trained, make_context, tmp_path):
    import mlflow

    default_uri = mlflow.get_tracking_uri()
    assert str(empty_cwd) in default_uri  # MLflow's default: a store in the working directory

    decision = _register_gate_promote(trained, make_context)
    assert decision["decision"] == "promoted" and decision["champion_after"] == "1"

    from airflow_retrain.gates._mlflow import LoadedModel, download_version
    from airflow_retrain.hooks.mlflow import MlflowHook

    loaded = LoadedModel(download_version(MlflowHook(CONN), MODEL, "1", tmp_path / "champion"))
    assert len(loaded.predict_proba(pd.DataFrame({"tenure": [1, 40], "charges": [50.0, 70.0]}))) == 2

    resolved = _load_demo()._resolve_champion(state, MODEL)
    assert resolved is not None and resolved.startswith("version 1 (loaded: PyFuncModel, inputs 2 features)")

    assert sorted(p.name for p in empty_cwd.iterdir()) == []  # no mlflow.db, no mlruns/
    # Nothing set MLflow's process-wide URIs (a later call in the same worker would inherit them).
    assert mlflow.get_tracking_uri() == default_uri
    assert mlflow.get_registry_uri() == default_uri
