"""Monitoring after promotion (issue 18): the predictions write, drift on awkward columns, realised
performance on awkward labels, and the retrain request's cooldown and one-at-a-time rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from airflow_retrain.gates.data import profile_table
from airflow_retrain.hooks.warehouse import WarehouseHook
from airflow_retrain.monitoring.drift import Thresholds, decide, feature_drift
from airflow_retrain.monitoring.history import monitoring_history
from airflow_retrain.monitoring.labels import LabelSourceError, check_labels, realised_metric
from airflow_retrain.monitoring.store import MonitoringStore


@pytest.fixture
def store(tmp_path, monkeypatch) -> MonitoringStore:
    conn = {"conn_type": "retrain_duckdb", "host": str(tmp_path / "wh.duckdb")}
    monkeypatch.setenv("AIRFLOW_CONN_MONITOR_WH", json.dumps(conn))
    return MonitoringStore(WarehouseHook("monitor_wh"))


def predictions(n: int, offset: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"C{i:05d}" for i in range(n)], "score": np.linspace(0, 1, n) * 0.5 + offset})


def test_a_rerun_replaces_its_predictions_never_duplicates(store):
    store.replace_predictions("p", "run1", predictions(10), model_version="1", model_run_id="r", runtime="pyfunc")
    store.replace_predictions("p", "run1", predictions(7, 0.1), model_version="1", model_run_id="r", runtime="pyfunc")
    store.replace_predictions("p", "run2", predictions(3), model_version="1", model_run_id="r", runtime="pyfunc")
    rows = store.predictions("p", "run1")
    assert len(rows) == 7 and rows["id"].is_unique
    assert rows["score"].min() == pytest.approx(0.1)
    assert len(store.predictions("p", "run2")) == 3


def test_a_write_failing_half_way_leaves_the_previous_rows(store):
    store.replace_predictions("p", "run1", predictions(10), model_version="1", model_run_id="r", runtime="pyfunc")

    def fail():  # after the DELETE, before the INSERT: the transaction must roll the delete back
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.replace_predictions("p", "run1", predictions(4), model_version="2", model_run_id="r", runtime="pyfunc",
                                  before_insert=fail)
    rows = store.predictions("p", "run1")
    assert len(rows) == 10 and set(rows["model_version"]) == {"1"}


def test_reading_before_any_write_is_empty(store):
    assert store.predictions("p", "run1").empty
    assert store.last_request("p") is None
    assert monitoring_history("p", warehouse_conn_id="monitor_wh") == {"pipeline": "p", "runs": [], "retrains_requested": []}


def training_frame(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer_id": [f"C{i:05d}" for i in range(n)],
        "churned": rng.integers(0, 2, n),
        "tenure_months": rng.integers(0, 72, n),
        "monthly_charges": rng.normal(65, 30, n),
        "is_female": rng.integers(0, 2, n),
    })


def test_nan_and_constant_features_are_reported_not_counted_as_drift():
    snapshot = profile_table(training_frame(), target_column="churned", id_column="customer_id")
    population = training_frame(seed=1).drop(columns="churned")
    population["monthly_charges"] = np.nan
    population["is_female"] = 1
    report = feature_drift(snapshot, population, Thresholds(psi_max=0.2, ks_max=0.1))
    notes = " ".join(report.notes)
    assert "monthly_charges: every value is null" in notes and "is_female: constant" in notes
    assert "tenure_months" not in report.drifted
    # An all-null column is a real shift of its null bucket: PSI says so (finite, recorded), KS cannot.
    assert report.features["monthly_charges"]["ks"] is None
    assert all(e["psi"] is None or np.isfinite(e["psi"]) for e in report.features.values())


def test_a_shifted_feature_crosses_the_threshold_with_its_reason():
    snapshot = profile_table(training_frame(), target_column="churned", id_column="customer_id")
    population = training_frame(seed=1).drop(columns="churned")
    population["tenure_months"] = population["tenure_months"] + 40
    thresholds = Thresholds(psi_max=0.2)
    report = feature_drift(snapshot, population, thresholds)
    assert report.drifted == ["tenure_months"]
    decision = decide(report, len(population), thresholds)
    assert decision.crossed and "tenure_months (PSI" in decision.reason
    # Fewer rows than min_rows decide nothing; a share above the drifted features' share neither.
    assert not decide(report, 10, thresholds).crossed
    assert not decide(report, len(population), Thresholds(psi_max=0.2, drifted_share=0.5)).crossed


def labels_frame(ids, values, when="2026-03-01") -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ids, "churned": values, "observed_at": pd.Timestamp(when)})


def test_labels_for_unknown_ids_are_counted_and_left_out():
    scored = predictions(200)
    ids = list(scored["id"]) + ["X1", "X2", "X3"]
    values = [int(s > 0.25) for s in scored["score"]] + [1, 0, 1]
    result = realised_metric(labels_frame(ids, values), scored, id_column="customer_id", label_column="churned",
                             time_column="observed_at", metric="roc_auc", champion_value=0.9,
                             greater_is_better=True, min_rows=100)
    assert result["unknown_ids"] == 3 and result["rows"] == 200
    assert result["value"] == pytest.approx(1.0) and result["drop"] == pytest.approx(-0.1)


def test_too_few_labelled_rows_record_no_metric():
    scored = predictions(20)
    result = realised_metric(labels_frame(list(scored["id"]), [0, 1] * 10), scored, id_column="customer_id",
                             label_column="churned", time_column="observed_at", metric="roc_auc",
                             champion_value=0.9, greater_is_better=True, min_rows=100)
    assert result["value"] is None and "fewer than min_labelled_rows=100" in result["note"]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (labels_frame(["a"], ["yes"]), "column 'churned' is .*it must be a 0/1 outcome"),
        (labels_frame(["a"], [3]), "not a 0/1 outcome"),
        (labels_frame(["a"], [1]).assign(observed_at="yesterday"), "column 'observed_at' is .*; it must be a timestamp"),
        (labels_frame(["a"], [1]).drop(columns="observed_at"), "column 'observed_at' not found"),
    ],
)
def test_a_label_source_with_the_wrong_type_is_named(frame, message):
    with pytest.raises(LabelSourceError, match=message):
        check_labels(frame, "raw.outcomes", "customer_id", "churned", "observed_at")


class FakeTI:
    def __init__(self, active: int):
        self.active = active

    def get_dr_count(self, dag_id, states):
        assert dag_id == "p_retrain" and set(states) == {"queued", "running"}
        return self.active


def monitor_operator(store):
    from airflow_retrain.operators.monitoring import MonitorChampionOperator

    op = MonitorChampionOperator(
        task_id="monitor", pipeline="p", scored={}, experiment="e", thresholds={}, labels=None, relations={},
        primary_metric="roc_auc", greater_is_better=True, cooldown_hours=24, trigger_retrain=True,
        retrain_dag_id="p_retrain",
    )
    op.__dict__["store"] = store  # the cached property, pointed at the test's warehouse
    return op


def record(store, run_key: str, requested: bool, at: datetime) -> None:
    store.record({
        "pipeline": "p", "run_key": run_key, "dag_run_id": f"scheduled__{run_key}", "measured_at": at.replace(tzinfo=None),
        "model_name": "m", "model_version": "1", "rows_scored": 500, "drifted_features": 1, "drifted_share": 0.1,
        "prediction_psi": None, "realised_metric": None, "realised_value": None, "champion_value": 0.84,
        "crossed": True, "retrain_requested": requested, "reason": "feature drift", "details": {},
    })


def test_a_second_drift_inside_the_cooldown_requests_no_second_retrain(store):
    from airflow_retrain.monitoring.drift import Decision

    op = monitor_operator(store)
    crossed = Decision(True, ["feature drift in tenure_months"])
    assert op._request({"ti": FakeTI(0)}, crossed) == (True, crossed.reason)
    record(store, "a", True, datetime.now(UTC) - timedelta(hours=1))
    requested, why = op._request({"ti": FakeTI(0)}, crossed)
    assert not requested and "inside the cooldown until" in why and "scheduled__a" in why
    # After the cooldown, a new drift requests again; the history shows each request.
    store.record({**dict(zip(["pipeline", "run_key"], ["p", "a"], strict=True))} | {
        "dag_run_id": "scheduled__a", "measured_at": (datetime.now(UTC) - timedelta(hours=30)).replace(tzinfo=None),
        "model_name": "m", "model_version": "1", "rows_scored": 500, "crossed": True, "retrain_requested": True,
        "reason": "feature drift", "details": {}})
    assert op._request({"ti": FakeTI(0)}, crossed)[0]
    history = monitoring_history("p", warehouse_conn_id="monitor_wh")
    assert [r["dag_run_id"] for r in history["retrains_requested"]] == ["scheduled__a"]


def test_a_drift_while_a_retrain_runs_requests_no_second_one(store):
    from airflow_retrain.monitoring.drift import Decision

    requested, why = monitor_operator(store)._request({"ti": FakeTI(1)}, Decision(True, ["feature drift"]))
    assert not requested and "p_retrain already has 1 run(s) queued or running" in why


def test_no_request_no_asset_event():
    from airflow.sdk.exceptions import AirflowSkipException

    from airflow_retrain.operators.monitoring import RequestRetrainOperator

    op = RequestRetrainOperator(task_id="request_retrain", decision={"retrain": False, "reason": "no threshold crossed"},
                                pipeline="p")
    assert [a.uri for a in op.outlets] == ["x-retrain://p/drift"]
    with pytest.raises(AirflowSkipException, match="no threshold crossed"):
        op.execute({"run_id": "r", "outlet_events": {}})
