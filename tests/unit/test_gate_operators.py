"""Gate operators against a real MLflow registry: evidence, snapshots, the champion re-scored.

Every test runs on an embedded SQLite registry; the two that move artifacts the most (snapshots, models)
also run against the tests' MLflow tracking server (``RETRAIN_TEST_MLFLOW_URL``, from
``scripts/services.sh start``), where artifacts travel over HTTP. Without the server those variants skip
locally and fail in CI (``RETRAIN_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import json
import re
import uuid

import numpy as np
import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException
from helpers import require_service

from airflow_retrain.operators.gates import DataGateOperator, ModelGateOperator
from airflow_retrain.operators.registry import RegisterModelOperator

CONN = "mlflow_gates_unit"
FEATURES = ["tenure", "charges", "contract_two_year"]
CONTRACT = {"customer_id": "varchar", "churned": "integer", "tenure": "integer", "charges": "double precision",
            "contract_two_year": "integer"}


@pytest.fixture(scope="module")
def registry(request, tmp_path_factory):
    """An MLflow client on the registry the operators use (connection ``CONN``): embedded SQLite by
    default, the tests' MLflow server when a test is parametrized with ``registry="server"``."""
    kind = getattr(request, "param", "sqlite")
    if kind == "server":
        uri = require_service("RETRAIN_TEST_MLFLOW_URL")
        conn = json.dumps({"conn_type": "mlflow", "host": uri})
    else:
        tmp_path = tmp_path_factory.mktemp("gates-registry")
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        extra = {"artifact_root": (tmp_path / "artifacts").as_uri()}
        conn = json.dumps({"conn_type": "mlflow", "host": uri, "extra": extra})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{CONN.upper()}", conn)
        from mlflow import MlflowClient

        yield MlflowClient(tracking_uri=uri, registry_uri=uri)


ON_SERVER_TOO = pytest.mark.parametrize("registry", ["sqlite", "server"], indirect=True)


@pytest.fixture
def name(request) -> str:
    # Unique per test and per session: a shared tracking server outlives test sessions.
    return "gates_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:50] + uuid.uuid4().hex[:6]


def rows(n: int, seed: int, charges_mean: float = 60.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n).astype("int32")
    charges = rng.normal(charges_mean, 20.0, n)
    two_year = (rng.random(n) < 0.3).astype("int32")
    risk = (tenure < 12) * 0.6 + (charges > 75) * 0.3 - two_year * 0.3 + rng.normal(0, 0.25, n)
    return pd.DataFrame({
        "customer_id": [f"C{seed}-{i:05d}" for i in range(n)],
        "churned": (risk > 0.35).astype("int32"),
        "tenure": tenure,
        "charges": charges,
        "contract_two_year": two_year,
    })


def write_dataset(base, frame: pd.DataFrame, holdout: pd.DataFrame | None = None) -> dict:
    holdout = frame.iloc[: len(frame) // 4] if holdout is None else holdout
    train = frame.iloc[len(frame) // 4 :]
    for channel, part in (("train", train), ("test", holdout)):
        (base / channel).mkdir(parents=True, exist_ok=True)
        part.to_parquet(base / channel / "part-0000.parquet", index=False)
    return {
        "relation": "wh.marts.churn_features",
        # train as a URI, test as a folder: the gates read both (register reads a local folder today)
        "channels": {"train": f"file://{base / 'train'}", "test": f"file://{base / 'test'}"},
        "rows": {"train": len(train), "test": len(holdout)},
        "id_column": "customer_id",
        "target_column": "churned",
        "fingerprint": "f",
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two real XGBoost models on the same features: one that learned the labels, one trained on noise."""
    import xgboost

    base = tmp_path_factory.mktemp("models")
    frame = rows(1500, seed=1)
    out = {}
    for kind, labels in (("good", frame["churned"]), ("weak", np.random.default_rng(9).permutation(frame["churned"]))):
        model = xgboost.XGBClassifier(n_estimators=20, max_depth=3)
        model.fit(frame[FEATURES], labels)
        folder = base / kind
        (folder / "model").mkdir(parents=True)
        model.save_model(folder / "model" / "model.json")
        (folder / "out").mkdir()
        (folder / "out" / "metrics.json").write_text("{}")
        out[kind] = folder
    return out


def register(model_dir, dataset, make_context, run_id, stored_auc, name, gates=None):
    training = {
        "job_name": f"job-{run_id}", "backend": "local", "metrics": {"roc_auc": stored_auc, "accuracy": 0.8},
        "info": {}, "model_uri": f"file://{model_dir / 'model'}", "output_uri": f"file://{model_dir / 'out'}",
        "compute_seconds": 1.0, "cost": {"usd": 0.0},
    }
    op = RegisterModelOperator(
        task_id="register", pipeline="churn", model_name=name, training=training, dataset=dataset,
        experiment=f"retrain/{name}", gates=gates or ["data", "metrics", "champion"], mlflow_conn_id=CONN,
    )
    return op.execute(make_context("churn_retrain", run_id))


def data_gate(dataset, make_context, run_id, name, triggered_by=None, **config):
    defaults = {"contract": CONTRACT, "min_rows": 100, "max_row_change": 0.5, "max_null_rate": 0.0,
                "label_rate_min": 0.05, "label_rate_max": 0.8, "psi_max": 0.2, "ks_max": 0.1,
                "on_missing_snapshot": "pass"}
    op = DataGateOperator(task_id="gate_data", pipeline="churn", dataset=dataset, config={**defaults, **config},
                          model_name=name, experiment=f"retrain/{name}", mlflow_conn_id=CONN)
    ctx = make_context("churn_retrain", run_id)
    if triggered_by is not None:
        ctx["triggering_asset_events"] = triggered_by
    try:
        return op.execute(ctx), ctx
    finally:
        ctx["ti"].xcoms.setdefault("verdicts", None)


def model_gate(candidate, dataset, make_context, run_id, data=None, metrics=None, min_improvement=0.01,
               slices=None, efficiency=None):
    op = ModelGateOperator(
        task_id="gate_model", pipeline="churn", thresholds={"roc_auc": {"min": 0.5}},
        metrics=metrics if metrics is not None else {"roc_auc": 0.9}, candidate=candidate, dataset=dataset,
        data_gate=data, champion={"metric": "roc_auc", "min_improvement": min_improvement, "greater_is_better": True},
        slices=slices, efficiency=efficiency, mlflow_conn_id=CONN,
    )
    ctx = make_context("churn_retrain", run_id)
    return op, ctx


def artifact_json(client, run_id, path, tmp_path):
    from pathlib import Path

    return json.loads(Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text())


@pytest.mark.slow
@ON_SERVER_TOO
def test_data_gates_first_run_snapshot_then_drift_stops_the_run(registry, models, make_context, name, tmp_path):
    week1 = write_dataset(tmp_path / "w1", rows(1200, seed=2))
    result, ctx = data_gate(week1, make_context, "run1", name)
    assert result["passed"]
    verdict = result["verdict"]
    assert any(c["name"] == "drift.snapshot" and c["reason"].startswith("skipped") for c in verdict["checks"])
    data_run = registry.get_run(result["data_run_id"])
    assert data_run.data.tags["retrain.gate.data"] == "passed"
    assert data_run.data.metrics["gate.data.rows"] == 1200
    assert data_run.data.metrics["gate.data.passed"] == 1.0
    assert artifact_json(registry, data_run.info.run_id, "gates/data.json", tmp_path)["passed"] is True
    snapshot = artifact_json(registry, data_run.info.run_id, "snapshot/training_stats.json", tmp_path / "s")
    assert snapshot["rows"] == 900 and snapshot["rows_total"] == 1200
    assert ctx["ti"].xcoms["verdicts"][0]["gate"] == "data"

    # The model gate copies the data verdict and the snapshot onto the candidate, which becomes champion.
    v1 = register(models["good"], week1, make_context, "run1", 0.9, name)
    op, mctx = model_gate(v1, week1, make_context, "run1", data=result)
    decision = op.execute(mctx)
    assert decision["passed"] and decision["champion"]["decision"] == "no_champion"
    mv = registry.get_model_version(name, v1["version"])
    assert mv.tags["retrain.gate.data"] == "passed"
    assert mv.tags["retrain.snapshot"] == f"runs:/{v1['run_id']}/snapshot/training_stats.json"
    assert artifact_json(registry, v1["run_id"], "snapshot/training_stats.json", tmp_path / "c")["rows"] == 900
    assert registry.get_run(v1["run_id"]).data.metrics["gate.data.passed"] == 1.0
    registry.set_registered_model_alias(name, "champion", v1["version"])

    # Next week: same population, slightly more rows: passes, compared with the champion's snapshot.
    week2 = write_dataset(tmp_path / "w2", rows(1300, seed=3))
    result2, _ = data_gate(week2, make_context, "run2", name)
    assert result2["passed"], result2["verdict"]["message"]
    assert result2["verdict"]["details"]["previous_rows"] == 1200
    assert name in result2["verdict"]["details"]["snapshot"]

    # A week with shifted charges and half the rows: the data gate fails before training.
    week3 = write_dataset(tmp_path / "w3", rows(500, seed=4, charges_mean=95.0))
    with pytest.raises(AirflowFailException) as e:
        data_gate(week3, make_context, "run3", name)
    message = str(e.value)
    assert "data gate failed" in message and "nothing was trained" in message
    assert re.search(r"PSI of charges \d+\.\d+ > max 0\.2", message)
    assert re.search(r"KS D of charges \d+\.\d+ > max 0\.1", message)
    assert "row count 500 vs 1300 in the last passed run: change 61.5% > max 50.0%" in message
    failed_runs = registry.search_runs(
        [registry.get_experiment_by_name(f"retrain/{name}/data").experiment_id],
        filter_string="tags.`retrain.gate.data` = 'failed'",
    )
    assert failed_runs[0].data.tags["retrain.gate.data"] == "failed"
    assert failed_runs[0].data.metrics["gate.data.psi.charges"] > 0.2

    # The same shift in a retrain the drift monitor requested: drift is recorded, not a veto (on_drift_trigger
    # defaults to warn); the same data in a run nobody requested still fails.
    from drift_events import drift_event, triggering

    week4 = write_dataset(tmp_path / "w4", rows(1300, seed=4, charges_mean=95.0))
    result4, _ = data_gate(week4, make_context, "run4", name, triggered_by=triggering(drift_event()))
    psi = next(c for c in result4["verdict"]["checks"] if c["name"] == "psi.charges")
    assert result4["passed"] and psi["observed"] > 0.2 and "drift-triggered retrain" in psi["reason"]
    with pytest.raises(AirflowFailException, match="PSI of charges"):
        data_gate(week4, make_context, "run5", name)


@pytest.mark.slow
def test_missing_snapshot_policy_fail(registry, make_context, name, tmp_path):
    week = write_dataset(tmp_path / "w", rows(800, seed=5))
    with pytest.raises(AirflowFailException, match=r"no champion training snapshot .*on_missing_snapshot: fail"):
        data_gate(week, make_context, "run1", name, on_missing_snapshot="fail")


@pytest.mark.slow
def test_schema_change_against_previous_run(registry, make_context, name, tmp_path):
    data_gate(write_dataset(tmp_path / "a", rows(800, seed=5)), make_context, "run1", name, psi_max=None, ks_max=None)
    changed = rows(800, seed=6)
    changed["charges"] = changed["charges"].astype("float32")
    with pytest.raises(AirflowFailException, match=r"'charges' changed type double -> float"):
        data_gate(write_dataset(tmp_path / "b", changed), make_context, "run2", name, psi_max=None, ks_max=None,
                  contract=None)


@pytest.mark.slow
@ON_SERVER_TOO
@pytest.mark.parametrize("direction", ["candidate_wins", "champion_holds"])
def test_champion_rescored_on_the_new_holdout_decides(registry, models, make_context, name, tmp_path, direction):
    dataset = write_dataset(tmp_path / "d", rows(1200, seed=7))
    if direction == "candidate_wins":
        # The champion's stored metric (from an older holdout) is high, but re-scored it is the weak model.
        champion_dir, champion_stored, candidate_dir, candidate_stored = models["weak"], 0.99, models["good"], 0.85
    else:
        champion_dir, champion_stored, candidate_dir, candidate_stored = models["good"], 0.70, models["weak"], 0.95
    v1 = register(champion_dir, dataset, make_context, "run1", champion_stored, name)
    registry.set_registered_model_alias(name, "champion", v1["version"])
    v2 = register(candidate_dir, dataset, make_context, "run2", candidate_stored, name)
    op, ctx = model_gate(v2, dataset, make_context, "run2", metrics={"roc_auc": candidate_stored})
    decision = op.execute(ctx)
    champ = decision["champion"]
    assert champ["champion_version"] == v1["version"] and champ["holdout_rows"] == 300
    assert champ["champion_stored_value"] == champion_stored
    tags = registry.get_model_version(name, v2["version"]).tags
    evidence = artifact_json(registry, v2["run_id"], "gates/champion.json", tmp_path)
    if direction == "candidate_wins":
        assert champ["decision"] == "beats" and decision["promotable"]
        assert champ["candidate_value"] > 0.8 > 0.6 > champ["champion_value"]
        assert tags["retrain.gate.champion"] == "passed"
    else:
        assert champ["decision"] == "does_not_beat" and decision["passed"] and not decision["promotable"]
        assert champ["champion_value"] > 0.8 > 0.6 > champ["candidate_value"]
        assert tags["retrain.gate.champion"] == "failed"
    assert tags["retrain.gate.champion.decision"] == champ["decision"]
    assert float(tags["retrain.gate.champion.delta"]) == pytest.approx(champ["delta"])
    assert tags["retrain.gate.champion.min_improvement"] == "0.01"
    assert evidence["details"]["champion_value"] == pytest.approx(champ["champion_value"])
    metrics = registry.get_run(v2["run_id"]).data.metrics
    assert metrics["gate.champion.roc_auc.delta"] == pytest.approx(champ["delta"])


@pytest.mark.slow
def test_regressing_slice_and_efficiency_budget_fail_the_task(registry, models, make_context, name, tmp_path):
    dataset = write_dataset(tmp_path / "d", rows(1200, seed=8))
    v1 = register(models["good"], dataset, make_context, "run1", 0.9, name, gates=["metrics", "slices", "efficiency"])
    registry.set_registered_model_alias(name, "champion", v1["version"])
    v2 = register(models["weak"], dataset, make_context, "run2", 0.9, name, gates=["metrics", "slices", "efficiency"])
    op, ctx = model_gate(v2, dataset, make_context, "run2",
                         slices={"columns": ["contract_two_year"], "max_regression": 0.05, "min_rows": 20},
                         efficiency={"max_model_mb": 0.000001, "max_latency_ms": 60000, "rows": 200})
    with pytest.raises(AirflowFailException) as e:
        op.execute(ctx)
    message = str(e.value)
    assert f"{name} v{v2['version']}" in message
    assert re.search(r"slices gate failed: contract_two_year=0 \(\d+ rows\): roc_auc 0\.\d+ vs champion 0\.\d+", message)
    assert "efficiency gate failed: model size" in message and "> max 1e-06 MiB" in message
    assert "champion" not in message.split("|")[0] or "slices" in message  # champion loss alone never blocks
    tags = registry.get_model_version(name, v2["version"]).tags
    assert tags["retrain.gate.slices"] == "failed" and tags["retrain.gate.efficiency"] == "failed"
    assert tags["retrain.gate.metrics"] == "passed"
    metrics = registry.get_run(v2["run_id"]).data.metrics
    assert metrics["gate.efficiency.latency_ms.200_rows"] > 0
    assert any(k.startswith("gate.slices.contract_two_year=0.roc_auc") or k.startswith("gate.slices.contract_two_year_0")
               for k in metrics)
    verdicts = {v["gate"]: v for v in ctx["ti"].xcoms["verdicts"]}
    assert set(verdicts) == {"metrics", "champion", "slices", "efficiency"}


@pytest.mark.slow
def test_nan_metric_fails_closed_with_evidence(registry, models, make_context, name, tmp_path):
    dataset = write_dataset(tmp_path / "d", rows(600, seed=9))
    v1 = register(models["good"], dataset, make_context, "run1", 0.9, name)
    op, ctx = model_gate(v1, dataset, make_context, "run1", metrics={"roc_auc": float("nan")})
    with pytest.raises(AirflowFailException, match=r"metrics gate failed: metric 'roc_auc' is not a finite number"):
        op.execute(ctx)
    mv = registry.get_model_version(name, v1["version"])
    assert mv.tags["retrain.gate.metrics"] == "failed"
    assert artifact_json(registry, v1["run_id"], "gates/metrics.json", tmp_path)["passed"] is False
    assert registry.get_run(v1["run_id"]).data.metrics["gate.metrics.passed"] == 0.0


def test_champion_that_cannot_be_loaded_fails_closed(registry, models, make_context, name, tmp_path):
    dataset = write_dataset(tmp_path / "d", rows(600, seed=10))
    v1 = register(models["good"], dataset, make_context, "run1", 0.9, name)
    broken = registry.create_model_version(name, source=(tmp_path / "gone").as_uri(), run_id=v1["run_id"])
    registry.set_registered_model_alias(name, "champion", broken.version)
    v3 = register(models["good"], dataset, make_context, "run3", 0.9, name)
    op, ctx = model_gate(v3, dataset, make_context, "run3")
    with pytest.raises(AirflowFailException, match=rf"champion gate failed: champion v{broken.version}: cannot be loaded"):
        op.execute(ctx)
    tags = registry.get_model_version(name, v3["version"]).tags
    assert tags["retrain.gate.champion"] == "failed" and tags["retrain.gate.champion.decision"] == "error"
