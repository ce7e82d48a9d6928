"""ONNX at registration: parity on the churn model, the measured runtime on the version, scoring reads it."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
from fakes.churn_data import churn_frame

from airflow_retrain.operators.registry_register import RegisterModelOperator
from airflow_retrain.registry import onnx as onnx_export

CONN = "mlflow_onnx_unit"
ID, TARGET = "customer_id", "churned"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("registry")
    db = tmp_path / "mlflow.db"
    conn = json.dumps({"conn_type": "mlflow", "host": f"sqlite:///{db}",
                       "extra": {"artifact_root": (tmp_path / "artifacts").as_uri()}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{CONN.upper()}", conn)
        from mlflow import MlflowClient

        yield MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    """An XGBoost churn model trained on the churn mart's columns (with missing values), and its holdout."""
    import xgboost

    base = tmp_path_factory.mktemp("churn")
    train, test = churn_frame(2000, seed=1), churn_frame(500, seed=2)
    for frame in (train, test):  # XGBoost treats NaN as missing; the export must keep that
        frame.loc[frame.index[::17], "total_charges"] = np.nan
    features = [c for c in train.columns if c not in (ID, TARGET)]
    model = xgboost.XGBClassifier(n_estimators=30, max_depth=4)
    model.fit(train[features], train[TARGET])
    (base / "model").mkdir()
    model.save_model(base / "model" / "model.json")
    (base / "out").mkdir()
    (base / "out" / "metrics.json").write_text(json.dumps({"metrics": {"roc_auc": 0.8}}))
    for channel, frame in (("train", train), ("test", test)):
        (base / channel).mkdir()
        frame.to_parquet(base / channel / "part-0.parquet", index=False)
    return base


@pytest.fixture
def name(request) -> str:
    return "churn_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")


def register(churn, make_context, name):
    op = RegisterModelOperator(
        task_id="register",
        pipeline="churn",
        model_name=name,
        training={"job_name": "churn-onnx-1", "backend": "local", "metrics": {"roc_auc": 0.8},
                  "model_uri": (churn / "model").as_uri(), "output_uri": (churn / "out").as_uri(),
                  "compute_seconds": 1.0, "cost": {"usd": 0.0}},
        dataset={"relation": "wh.marts.churn_features", "fingerprint": "fp", "rows": {"train": 2000, "test": 500},
                 "id_column": ID, "target_column": TARGET,
                 "channels": {c: (churn / c).as_uri() for c in ("train", "test")}},
        experiment="retrain/churn_onnx",
        mlflow_conn_id=CONN,
    )
    return op.execute(make_context("churn_retrain", "run1"))


@pytest.mark.slow
def test_churn_model_exports_with_parity_and_records_the_faster_runtime(registry, churn, make_context, name, tmp_path):
    result = register(churn, make_context, name)
    tags = registry.get_model_version(name, result["version"]).tags
    assert float(tags[onnx_export.DIFF_TAG]) <= 1e-5
    pyfunc_rate, onnx_rate = float(tags[onnx_export.PYFUNC_RATE_TAG]), float(tags[onnx_export.ONNX_RATE_TAG])
    assert pyfunc_rate > 0 and onnx_rate > 0
    assert tags[onnx_export.RUNTIME_TAG] == ("onnx" if onnx_rate > pyfunc_rate else "pyfunc")
    assert onnx_export.NOTE_TAG not in tags
    # The ONNX file is an artifact of the candidate's run and reproduces the model on the holdout.
    local = registry.download_artifacts(result["run_id"], onnx_export.ONNX_ARTIFACT, str(tmp_path))
    holdout = pd.read_parquet(churn / "test").drop(columns=[ID, TARGET])
    model = onnx_export.load_xgboost(churn / "model")
    diff = np.abs(onnx_export.onnx_predict_proba(onnx_export.session(local), holdout)
                  - model.predict_proba(holdout)[:, 1])
    assert diff.max() <= 1e-5


def test_a_parity_failure_scores_with_pyfunc_and_says_why(registry, churn, make_context, name, monkeypatch, tmp_path):
    exact = onnx_export.onnx_predict_proba
    monkeypatch.setattr(onnx_export, "onnx_predict_proba", lambda sess, frame: exact(sess, frame) + 1e-3)
    result = register(churn, make_context, name)
    tags = registry.get_model_version(name, result["version"]).tags
    assert tags[onnx_export.RUNTIME_TAG] == "pyfunc"
    assert re.search(r"ONNX Runtime differs from predict_proba by 0\.001 on the 500 holdout rows \(limit 1e-05\)",
                     tags[onnx_export.NOTE_TAG])
    artifacts = [a.path for a in registry.list_artifacts(result["run_id"])]
    assert "onnx" not in artifacts  # a model that does not reproduce is not kept
    assert str(registry.get_model_version_by_alias(name, "challenger").version) == result["version"]


def test_an_export_that_raises_never_fails_registration(registry, churn, make_context, name, monkeypatch):
    def broken(model, n_features):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(onnx_export, "to_onnx", broken)
    result = register(churn, make_context, name)
    tags = registry.get_model_version(name, result["version"]).tags
    assert tags[onnx_export.RUNTIME_TAG] == "pyfunc"
    assert tags[onnx_export.NOTE_TAG] == "ONNX export failed (RuntimeError: converter exploded); scoring with pyfunc"


def test_flavours_without_a_converter_and_an_empty_holdout_choose_pyfunc(churn, tmp_path):
    holdout = pd.read_parquet(churn / "test").drop(columns=[ID, TARGET])
    other = onnx_export.choose_runtime("sklearn", churn / "model", holdout, tmp_path)
    assert (other.runtime, other.onnx_path) == ("pyfunc", None)
    assert other.tags[onnx_export.NOTE_TAG] == "no ONNX converter for the sklearn flavour; scoring with pyfunc"
    empty = onnx_export.choose_runtime("xgboost", churn / "model", holdout.head(0), tmp_path)
    assert "the holdout is empty" in empty.tags[onnx_export.NOTE_TAG]
    reordered = onnx_export.choose_runtime("xgboost", churn / "model", holdout[holdout.columns[::-1]], tmp_path)
    assert "feature order" in reordered.tags[onnx_export.NOTE_TAG] and reordered.runtime == "pyfunc"


@pytest.mark.parametrize("runtime", ["onnx", "pyfunc"])
def test_scoring_uses_the_runtime_recorded_on_the_version(registry, churn, make_context, name, runtime, tmp_path):
    """Registration decides from its measurement; whichever it recorded, scoring loads that runtime."""
    from airflow_retrain.hooks.mlflow import MlflowHook
    from airflow_retrain.monitoring.scoring import load_champion, score_population

    result = register(churn, make_context, name)
    registry.set_model_version_tag(name, result["version"], onnx_export.RUNTIME_TAG, runtime)
    version = registry.get_model_version(name, result["version"])
    champion = load_champion(MlflowHook(CONN), name, version, tmp_path)
    assert champion.runtime == runtime
    population = pd.read_parquet(churn / "test")
    scores = score_population(champion, population, "wh.marts.churn_scoring", ID)
    expected = onnx_export.load_xgboost(churn / "model").predict_proba(population[champion.features])[:, 1]
    assert np.abs(scores["score"].to_numpy() - expected).max() <= 1e-5


def test_a_version_the_tags_cannot_be_written_to_still_registers(churn, caplog):
    """The tag write failing (registry hiccup) is logged; registration goes on (untagged scores with pyfunc)."""
    class Hook:
        def set_version_tags(self, *args):
            raise ConnectionError("registry down")

    holdout = pd.read_parquet(churn / "test").drop(columns=[ID, TARGET])
    with caplog.at_level(logging.WARNING):
        choice = onnx_export.record_scoring_runtime(Hook(), model_name="m", version="1", run_id="r", flavor="sklearn",
                                                    model_dir=churn / "model", holdout=holdout,
                                                    log=logging.getLogger("t"))
    assert choice.runtime == "pyfunc"
    assert "Could not tag m v1 with its scoring runtime (registry down)" in caplog.text
