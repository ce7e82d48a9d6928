"""Register, gate and promote against a real MLflow registry (SQLite) through an Airflow connection."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain.operators.gates import MetricGateOperator
from airflow_retrain.operators.registry_promote import PromoteModelOperator
from airflow_retrain.operators.registry_register import RegisterModelOperator

CONN = "mlflow_unit"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """One SQLite registry for the module (creating one costs seconds); each test uses its own model name."""
    tmp_path = tmp_path_factory.mktemp("registry")
    db = tmp_path / "mlflow.db"
    extra = {"artifact_root": (tmp_path / "artifacts").as_uri(), "ui_url": "http://mlflow.test"}
    conn = json.dumps({"conn_type": "mlflow", "host": f"sqlite:///{db}", "extra": extra})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{CONN.upper()}", conn)
        from mlflow import MlflowClient

        yield MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")


@pytest.fixture
def name(request) -> str:
    return "churn_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real (tiny) XGBoost model and holdout, as the training stage leaves them."""
    import xgboost

    base = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"tenure": rng.integers(0, 70, 300), "charges": rng.normal(60, 20, 300)})
    y = (x["tenure"] < 12).astype(int)
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=2)
    model.fit(x, y)
    (base / "model").mkdir()
    model.save_model(base / "model" / "model.json")
    (base / "out").mkdir()
    (base / "out" / "metrics.json").write_text(json.dumps({"metrics": {"roc_auc": 0.9}}))
    (base / "test").mkdir()
    x.assign(customer_id=[f"C{i}" for i in range(300)], churned=y).to_parquet(base / "test" / "part-0.parquet")
    return base


def training_result(trained, roc_auc):
    return {
        "job_name": "churn-abc-1",
        "backend": "local",
        "metrics": {"roc_auc": roc_auc, "accuracy": 0.8, "log_loss": None},
        "info": {"device": "cpu"},
        "model_uri": (trained / "model").as_uri(),
        "output_uri": (trained / "out").as_uri(),
        "compute_seconds": 3.5,
        "cost": {"usd": 0.0},
    }


def dataset_result(trained):
    return {
        "relation": '"wh"."marts"."churn_features"',
        "channels": {"train": (trained / "test").as_uri(), "test": (trained / "test").as_uri()},
        "rows": {"train": 300, "test": 300},
        "id_column": "customer_id",
        "target_column": "churned",
        "fingerprint": "abc",
    }


def register(trained, make_context, run_id, roc_auc, name):
    op = RegisterModelOperator(
        task_id="register",
        pipeline="churn",
        model_name=name,
        training=training_result(trained, roc_auc),
        dataset=dataset_result(trained),
        experiment="retrain/churn",
        params_to_log={"hyperparameters": {"max_depth": 2}, "spec.path": "x.yaml"},
        mlflow_conn_id=CONN,
    )
    ctx = make_context("churn_retrain", run_id)
    return op.execute(ctx), ctx


def gate(candidate, make_context, run_id, roc_auc, min_auc=0.8):
    op = MetricGateOperator(
        task_id="gate_metrics",
        pipeline="churn",
        thresholds={"roc_auc": {"min": min_auc}},
        metrics={"roc_auc": roc_auc},
        candidate=candidate,
        mlflow_conn_id=CONN,
    )
    return op.execute(make_context("churn_retrain", run_id))


def promote(candidate, make_context, run_id, min_improvement=0.01):
    op = PromoteModelOperator(
        task_id="promote",
        pipeline="churn",
        candidate=candidate,
        primary_metric="roc_auc",
        min_improvement=min_improvement,
        mlflow_conn_id=CONN,
    )
    return execute_promote(op, make_context("churn_retrain", run_id))


def execute_promote(op, ctx):
    """The decision whether promote moved the champion or ended skipped (champion kept, reason in XCom)."""
    from airflow.sdk.exceptions import AirflowSkipException

    try:
        return op.execute(ctx)
    except AirflowSkipException as skip:
        decision = ctx["ti"].xcoms["return_value"]
        assert str(skip) == f"champion kept: {decision['reason']}"
        return decision


def champion_then_gated_candidate(trained, make_context, name, candidate_auc):
    """v1 (roc_auc 0.85) registered, gated and promoted in run1, then v2 (``candidate_auc``) registered and
    gated in run2: returns v2, ready to be promoted against the champion v1."""
    v1, _ = register(trained, make_context, "run1", 0.85, name)
    gate(v1, make_context, "run1", 0.85)
    promote(v1, make_context, "run1")
    v2, _ = register(trained, make_context, "run2", candidate_auc, name)
    gate(v2, make_context, "run2", candidate_auc)
    return v2


def test_register_logs_everything_and_tags_pending(registry, trained, make_context, name, tmp_path):
    result, ctx = register(trained, make_context, "run1", 0.85, name)
    assert result["version"] == "1"
    mv = registry.get_model_version(name, "1")
    assert mv.tags["retrain.gate.metrics"] == "pending"
    assert mv.tags["retrain.dag_id"] == "churn_retrain"
    run = registry.get_run(result["run_id"])
    assert run.data.metrics["roc_auc"] == 0.85
    assert "log_loss" not in run.data.metrics  # None is not logged as a number
    assert run.data.params["hp.max_depth"] == "2"
    assert run.data.params["dataset.fingerprint"] == "abc"
    assert ctx["ti"].xcoms["retrain_mlflow_run_url"].startswith("http://mlflow.test/#/experiments/")
    assert ctx["ti"].xcoms["retrain_candidate_version_url"] == f"http://mlflow.test/#/models/{name}/versions/1"
    # The model has a signature with the two features, not the id or label, from the Parquet schema.
    from mlflow.models import Model

    from airflow_retrain.hooks.mlflow import MlflowHook

    local = MlflowHook(CONN).download_model(name, result["version"], tmp_path)
    info = Model.load(local).get_model_info()
    assert [(c.name, c.type.name, c.required) for c in info.signature.inputs.inputs] == [
        ("tenure", "long", True), ("charges", "double", True)]
    mv = registry.get_model_version(name, "1")
    assert mv.run_id == result["run_id"] and mv.source == result["source"]  # lineage: run and its artifact
    assert mv.tags["retrain.code_version"] != "" and mv.tags["retrain.data.fingerprint"] == "abc"
    assert str(registry.get_model_version_by_alias(name, "challenger").version) == "1"
    # Serving requirements are the flavor's, pinned to the training environment's versions.
    import xgboost

    requirements = (Path(local) / "requirements.txt").read_text()
    assert f"xgboost=={xgboost.__version__}" in requirements
    assert "mlflow" in requirements


def test_register_is_idempotent_per_run(registry, trained, make_context, name):
    first, _ = register(trained, make_context, "run1", 0.85, name)
    again, _ = register(trained, make_context, "run1", 0.85, name)
    assert again["version"] == first["version"] == "1"
    assert len(registry.search_model_versions(f"name = '{name}'")) == 1


def test_register_from_missing_outputs_fails_naming_the_uri(registry, trained, make_context, name, tmp_path):
    """A run cleared after its teardown: register must not crash on a bare StopIteration."""
    gone = (tmp_path / "gone" / "model").as_uri()
    training = {**training_result(trained, 0.85), "model_uri": gone}
    op = RegisterModelOperator(
        task_id="register",
        pipeline="churn",
        model_name=name,
        training=training,
        dataset=dataset_result(trained),
        experiment="retrain/churn",
        mlflow_conn_id=CONN,
    )
    with pytest.raises(AirflowFailException, match=re.escape(f"the trained model {gone} no longer exists")):
        op.execute(make_context("churn_retrain", "cleared-run"))
    empty = tmp_path / "empty"
    empty.mkdir()
    op.dataset = {**dataset_result(trained), "channels": {"test": empty.as_uri()}}
    op.training = training_result(trained, 0.85)
    with pytest.raises(AirflowFailException, match=re.escape(f"the holdout channel {empty.as_uri()}")):
        op.execute(make_context("churn_retrain", "cleared-run"))
    assert registry.search_model_versions(f"name = '{name}'") == []  # nothing half-registered


@pytest.mark.slow
def test_a_new_job_of_the_same_run_registers_a_new_version(registry, trained, make_context, name):
    first, _ = register(trained, make_context, "run1", 0.85, name)
    op = RegisterModelOperator(
        task_id="register",
        pipeline="churn",
        model_name=name,
        training={**training_result(trained, 0.86), "job_name": "churn-abc-2"},
        dataset=dataset_result(trained),
        experiment="retrain/churn",
        mlflow_conn_id=CONN,
    )
    second = op.execute(make_context("churn_retrain", "run1"))
    assert (first["version"], second["version"]) == ("1", "2")


@pytest.mark.slow
def test_promotion_flow_with_audit_trail(registry, trained, make_context, name):
    v1, _ = register(trained, make_context, "run1", 0.85, name)
    gate(v1, make_context, "run1", 0.85)
    d1 = promote(v1, make_context, "run1")
    assert d1["decision"] == "promoted" and d1["champion_after"] == "1"
    assert str(registry.get_model_version_by_alias(name, "champion").version) == "1"

    # Better, but not by the required margin: champion stays.
    v2, _ = register(trained, make_context, "run2", 0.855, name)
    gate(v2, make_context, "run2", 0.855)
    d2 = promote(v2, make_context, "run2")
    assert d2["decision"] == "kept_champion"
    assert d2["champion_before"] == "1" and d2["champion_value"] == 0.85
    assert "does not beat" in d2["reason"]
    assert str(registry.get_model_version_by_alias(name, "champion").version) == "1"
    assert registry.get_model_version(name, "2").tags["retrain.promotion.decision"] == "kept_champion"

    # Clearly better: promoted, and both versions record the hand-over.
    v3, _ = register(trained, make_context, "run3", 0.9, name)
    gate(v3, make_context, "run3", 0.9)
    d3 = promote(v3, make_context, "run3")
    assert d3["decision"] == "promoted" and d3["champion_before"] == "1"
    assert str(registry.get_model_version_by_alias(name, "champion").version) == "3"
    tags3 = registry.get_model_version(name, "3").tags
    assert tags3["retrain.promotion.dag_run"] == "churn_retrain/run3"
    assert tags3["retrain.gate_outcome"] == "passed"
    # The history (in MLflow alone) has every alias move and every decision, in order.
    from airflow_retrain.hooks.mlflow import MlflowHook

    history = MlflowHook(CONN).promotion_history(name)
    moves = [(e["action"], e.get("alias"), e.get("from"), e.get("to")) for e in history]
    assert moves == [
        ("challenger", "challenger", None, "1"), ("promote", "champion", None, "1"),
        ("challenger", "challenger", "1", "2"), ("kept", "champion", "1", "1"),
        ("challenger", "challenger", "2", "3"), ("promote", "champion", "1", "3"),
    ]
    assert [e["seq"] for e in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["by"] == "churn_retrain/run3/promote" and "beats" in history[-1]["reason"]
    assert "retrain.lease" not in registry.get_registered_model(name).tags  # released


def test_failed_gate_blocks_promotion(registry, trained, make_context, name):
    v1, _ = register(trained, make_context, "run1", 0.7, name)
    with pytest.raises(AirflowFailException, match=rf"roc_auc 0.7000 < min 0.8 \({name} v1\)"):
        gate(v1, make_context, "run1", 0.7)
    assert registry.get_model_version(name, "1").tags["retrain.gate.metrics"] == "failed"
    with pytest.raises(AirflowFailException, match=r"gates not passed \{'metrics': 'failed'\}"):
        promote(v1, make_context, "run1")
    assert registry.get_registered_model(name).aliases == {"challenger": 1}


def test_ungated_version_is_never_promoted(registry, trained, make_context, name):
    v1, _ = register(trained, make_context, "run1", 0.95, name)
    with pytest.raises(AirflowFailException, match="'metrics': 'pending'"):
        promote(v1, make_context, "run1")


@pytest.mark.slow
def test_missing_primary_metric_fails_closed(registry, trained, make_context, name):
    v2 = champion_then_gated_candidate(trained, make_context, name, 0.9)
    op = PromoteModelOperator(
        task_id="promote", pipeline="churn", candidate=v2, primary_metric="f1", mlflow_conn_id=CONN,
        required_gates=["metrics"],
    )
    with pytest.raises(AirflowFailException, match="has no finite 'f1' metric"):
        op.execute(make_context("churn_retrain", "run2"))
    assert str(registry.get_model_version_by_alias(name, "champion").version) == "1"


def test_mlflow_named_connection_must_exist():
    from airflow.exceptions import AirflowNotFoundException

    from airflow_retrain.hooks.mlflow import MlflowHook

    with pytest.raises(AirflowNotFoundException):
        _ = MlflowHook("no_such_mlflow").tracking_uri


def test_mlflow_default_falls_back_to_embedded_registry(state_dir):
    from airflow_retrain.hooks.mlflow import MlflowHook

    assert MlflowHook().tracking_uri == f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}"


def test_register_logs_cost_provenance_and_never_unknown_as_zero(registry, trained, make_context, name):
    def run_with(cost, run_id):
        training = {**training_result(trained, 0.85), "cost": cost}
        op = RegisterModelOperator(task_id="register", pipeline="churn", model_name=name, training=training,
                                   dataset=dataset_result(trained), experiment="retrain/churn", mlflow_conn_id=CONN)
        return registry.get_run(op.execute(make_context("churn_retrain", run_id))["run_id"]).data

    unknown = run_with({"usd": None, "price_source": "unknown", "instance_type": "ml.g5.xlarge", "region": "local",
                        "instance_count": 1, "price_table_version": "2026-11", "spot": False}, "run_cost_unknown")
    assert "training_cost_usd" not in unknown.metrics
    assert unknown.params["training.cost"] == "unknown price, table 2026-11, 1 x ml.g5.xlarge in local"
    spot = run_with({"usd": 0.42, "price_source": "table", "instance_type": "ml.g5.xlarge", "region": "us-east-1",
                     "instance_count": 2, "price_table_version": "2026-11", "spot": True, "spot_savings_usd": 0.98},
                    "run_cost_spot")
    assert (spot.metrics["training_cost_usd"], spot.metrics["training_spot_savings_usd"]) == (0.42, 0.98)
    assert spot.params["training.cost"].endswith("2 x ml.g5.xlarge in us-east-1, spot")


def test_promote_links_name_candidate_and_champion(registry, trained, make_context, name):
    """A kept champion: the candidate link shows the new version, the champion link the one kept."""
    from airflow_retrain.links.mlflow import MlflowCandidateVersionLink, MlflowChampionVersionLink

    v2 = champion_then_gated_candidate(trained, make_context, name, 0.851)
    op = PromoteModelOperator(
        task_id="promote", pipeline="churn", candidate=v2, primary_metric="roc_auc", min_improvement=0.01,
        mlflow_conn_id=CONN,
    )
    ctx = make_context("churn_retrain", "run2")
    assert execute_promote(op, ctx)["decision"] == "kept_champion"
    xcoms = ctx["ti"].xcoms
    assert xcoms[MlflowCandidateVersionLink.url_xcom_key] == f"http://mlflow.test/#/models/{name}/versions/2"
    assert xcoms[MlflowChampionVersionLink.url_xcom_key] == f"http://mlflow.test/#/models/{name}/versions/1"


def test_a_kept_champion_ends_promote_skipped_with_the_reason(registry, trained, make_context, name):
    """The grid tells a kept champion (promote skipped) from a promotion (success) and an error (failed)."""
    from airflow.sdk.exceptions import AirflowSkipException

    v1, _ = register(trained, make_context, "run1", 0.85, name)
    gate(v1, make_context, "run1", 0.85)
    assert promote(v1, make_context, "run1")["decision"] == "promoted"
    v2, _ = register(trained, make_context, "run2", 0.851, name)
    gate(v2, make_context, "run2", 0.851)
    op = PromoteModelOperator(task_id="promote", pipeline="churn", candidate=v2, primary_metric="roc_auc",
                              min_improvement=0.01, mlflow_conn_id=CONN)
    ctx = make_context("churn_retrain", "run2")
    with pytest.raises(AirflowSkipException, match=r"^champion kept: candidate v2 roc_auc=0\.8510 does not beat champion v1"):
        op.execute(ctx)
    assert ctx["ti"].xcoms["return_value"]["decision"] == "kept_champion"  # the report still reads it


def test_a_dry_run_decides_but_moves_and_records_nothing(registry, trained, make_context, name):
    from airflow.sdk.exceptions import AirflowSkipException

    from airflow_retrain.hooks.mlflow import MlflowHook

    v1, _ = register(trained, make_context, "run1", 0.85, name)
    gate(v1, make_context, "run1", 0.85)
    promote(v1, make_context, "run1")
    v2, _ = register(trained, make_context, "run2", 0.95, name)
    gate(v2, make_context, "run2", 0.95)
    before = MlflowHook(CONN).promotion_history(name)
    op = PromoteModelOperator(task_id="promote", pipeline="churn", candidate=v2, primary_metric="roc_auc",
                              mlflow_conn_id=CONN, dry_run_param="dry_run", reason_param="reason")
    ctx = make_context("churn_retrain", "run2")
    ctx["params"] = {"dry_run": True, "reason": "try the new features"}
    with pytest.raises(AirflowSkipException, match=r"^dry run: would be promoted over v1 \(roc_auc 0\.9500 vs 0\.8500\) \(dry_run: nothing moved\)"):
        op.execute(ctx)
    assert ctx["ti"].xcoms["return_value"]["decision"] == "dry_run"
    assert str(registry.get_model_version_by_alias(name, "champion").version) == "1"
    assert MlflowHook(CONN).promotion_history(name) == before


def test_the_trigger_reason_is_recorded_in_the_promotion_history(registry, trained, make_context, name):
    from airflow_retrain.hooks.mlflow import MlflowHook

    v1, _ = register(trained, make_context, "run1", 0.85, name)
    gate(v1, make_context, "run1", 0.85)
    op = PromoteModelOperator(task_id="promote", pipeline="churn", candidate=v1, primary_metric="roc_auc",
                              mlflow_conn_id=CONN, dry_run_param="dry_run", reason_param="reason")
    ctx = make_context("churn_retrain", "run1")
    ctx["params"] = {"dry_run": False, "reason": "label fix in the warehouse"}
    assert op.execute(ctx)["decision"] == "promoted"
    assert MlflowHook(CONN).promotion_history(name)[-1]["trigger_reason"] == "label fix in the warehouse"


def test_a_drift_triggered_promotion_says_why_in_its_history_entry(registry, trained, make_context, name):
    from drift_events import REASON, drift_event, triggering

    from airflow_retrain.hooks.mlflow import MlflowHook

    v1, _ = register(trained, make_context, "run1", 0.85, name)
    gate(v1, make_context, "run1", 0.85)
    op = PromoteModelOperator(task_id="promote", pipeline="churn", candidate=v1, primary_metric="roc_auc",
                              mlflow_conn_id=CONN, reason_param="reason")
    ctx = make_context("churn_retrain", "asset_triggered__1")
    ctx["triggering_asset_events"] = triggering(drift_event())
    assert op.execute(ctx)["decision"] == "promoted"
    entry = MlflowHook(CONN).promotion_history(name)[-1]
    assert entry["reason"].startswith(f"drift-triggered (score_churn run scheduled__2026-12-01: {REASON}): ")
    assert entry["trigger_reason"] is None  # no free-text Param given; the drift is in the reason
    # a cron (or manual) run's entry is the decision's reason alone
    v2, _ = register(trained, make_context, "run2", 0.95, name)
    gate(v2, make_context, "run2", 0.95)
    assert promote(v2, make_context, "run2")["decision"] == "promoted"
    assert not MlflowHook(CONN).promotion_history(name)[-1]["reason"].startswith("drift-triggered")
