"""Monitoring after promotion, end to end through Airflow (``dag.test()``) on the embedded defaults.

A module-scoped sequence of stages (each a fixture on the one before, so tests pass in any order and alone)
on its own pipeline (``churnmon``, its own registered model): scoring before
any champion skips and says so; the retrain DAG promotes v1; scoring the unchanged population records no
drift and requests nothing; a shifted feature records the drift and updates the drift Asset once, with
the reason; a second shift inside the cooldown requests nothing; outcomes arriving later give a realised
metric. The raw data is restored afterwards (the warehouse is the session's).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

# Runs here retrain the same inputs as an earlier champion of the session: force them to train.
FORCE = {"force": True}

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
PIPELINE = "churnmon"


@pytest.fixture(scope="module")
def bag(tmp_path_factory, airflow_db, warehouse, dbt_manifest, churn_loader):
    from airflow.dag_processing.dagbag import DagBag

    spec = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())
    spec["name"] = PIPELINE
    spec["registry"]["model_name"] = PIPELINE
    folder = tmp_path_factory.mktemp("specs")
    (folder / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(spec))
    os.environ["RETRAIN_SPECS_DIR"] = str(folder)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    yield bag
    os.environ.pop("RETRAIN_SPECS_DIR", None)
    churn_loader["load_to_duckdb"](str(warehouse))  # undo the shift for the session's other tests
    with duckdb_connection(warehouse) as con:
        con.execute("DROP TABLE IF EXISTS raw.churn_outcomes")


def duckdb_connection(path):
    import duckdb

    return duckdb.connect(str(path))


def run(bag, dag_id):
    dr = bag.dags[dag_id].test(run_conf=FORCE)
    return dr, {ti.task_id: ti for ti in dr.get_task_instances()}


def drift_events() -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == f"x-retrain://{PIPELINE}/drift")
        ).all()
    return [r[0] for r in rows]


def queued_retrains() -> list[str]:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(session.scalars(select(AssetDagRunQueue.target_dag_id)))


def history():
    from airflow_retrain.monitoring.history import monitoring_history

    return monitoring_history(PIPELINE)


def stage(bag, dag_id: str) -> dict:
    """Run a DAG and capture what the tests look at, right after it."""
    dr, tis = run(bag, dag_id)
    monitor = tis.get("monitor")
    return {
        "state": dr.state, "tasks": {t: ti.state for t, ti in tis.items()},
        "decision": monitor.xcom_pull(task_ids="monitor") if monitor is not None and monitor.state == "success" else None,
        "history": history() if dag_id.startswith("score_") else None, "events": drift_events(),
        "queued": queued_retrains(),
    }


@pytest.fixture(scope="module")
def no_champion(bag):
    return stage(bag, f"score_{PIPELINE}")


@pytest.fixture(scope="module")
def promoted(bag, no_champion):
    return stage(bag, f"{PIPELINE}_retrain")


@pytest.fixture(scope="module")
def unshifted(bag, promoted):
    return stage(bag, f"score_{PIPELINE}")


@pytest.fixture(scope="module")
def shifted(bag, unshifted, warehouse):
    with duckdb_connection(warehouse) as con:
        con.execute("UPDATE raw.telco_customers SET tenure = tenure + 40 WHERE tenure > 0")
    return stage(bag, f"score_{PIPELINE}")


@pytest.fixture(scope="module")
def shifted_again(bag, shifted):
    return stage(bag, f"score_{PIPELINE}")


@pytest.fixture(scope="module")
def labelled(bag, shifted_again, warehouse):
    with duckdb_connection(warehouse) as con:
        con.execute(
            "CREATE OR REPLACE TABLE raw.churn_outcomes AS SELECT customer_id, "
            "CASE WHEN churn = 'Yes' THEN 1 ELSE 0 END AS churned, now()::TIMESTAMP AS observed_at "
            "FROM raw.telco_customers UNION ALL SELECT 'NOBODY', 1, now()::TIMESTAMP"
        )
    return stage(bag, f"score_{PIPELINE}")


def test_scoring_before_any_champion_skips_and_says_so(no_champion):
    tasks = no_champion["tasks"]
    assert tasks["dbt_build"] == "success" and tasks["score"] == "skipped"
    assert tasks["monitor"] == "skipped" and tasks["request_retrain"] == "skipped"
    assert no_champion["events"] == [] and no_champion["history"]["runs"] == []


def test_the_retrain_dag_runs_on_its_cron_or_the_drift_asset(bag, promoted):
    from airflow.sdk import Asset

    timetable = bag.dags[f"{PIPELINE}_retrain"].timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert timetable.asset_condition == Asset(f"x-retrain://{PIPELINE}/drift")  # the spec's cron is a preset
    assert promoted["state"] == "success", promoted["tasks"]


def test_no_shift_records_no_drift_and_requests_no_retrain(unshifted):
    assert unshifted["state"] == "success", unshifted["tasks"]
    assert unshifted["tasks"]["score"] == "success" and unshifted["tasks"]["request_retrain"] == "skipped"
    (only,) = unshifted["history"]["runs"]
    assert only["rows_scored"] == 7043 and only["model_version"] == "1"
    assert only["drifted_features"] == 0 and not only["retrain_requested"]
    assert max(v for v in only["psi"].values() if v is not None) < 0.05
    assert unshifted["events"] == []


def test_a_shifted_feature_requests_exactly_one_retrain_with_the_reason(shifted, state_dir):
    assert shifted["state"] == "success" and shifted["tasks"]["request_retrain"] == "success", shifted["tasks"]
    (event,) = shifted["events"]
    assert "tenure_months (PSI" in event["reason"] and event["champion_version"] == "1"
    assert shifted["queued"].count(f"{PIPELINE}_retrain") == 1
    latest = shifted["history"]["runs"][0]
    assert latest["retrain_requested"] and "tenure_months" in latest["drifted"]
    assert shifted["history"]["retrains_requested"][0]["reason"] == event["reason"]
    from mlflow import MlflowClient

    uri = f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(f"retrain/{PIPELINE}/monitoring")
    (mlrun,) = client.search_runs([exp.experiment_id], filter_string="tags.`retrain.retrain_requested` = 'true'")
    assert mlrun.data.metrics["psi.tenure_months"] > 0.2


def test_a_second_drift_inside_the_cooldown_requests_nothing(shifted_again):
    assert shifted_again["state"] == "success" and shifted_again["tasks"]["request_retrain"] == "skipped"
    assert len(shifted_again["events"]) == 1
    assert "inside the cooldown" in shifted_again["history"]["runs"][0]["reason"]


def test_outcomes_arriving_later_give_a_realised_metric(labelled):
    assert labelled["state"] == "success", labelled["tasks"]
    latest = labelled["history"]["runs"][0]
    assert latest["realised_metric"] == "roc_auc" and 0.5 < latest["realised_value"] <= 1.0
    assert latest["champion_value"] > 0.8
    realised = labelled["decision"]["realised"]
    assert realised["unknown_ids"] == 1 and realised["rows"] == 7043
