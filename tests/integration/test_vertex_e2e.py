"""The churn DAG end to end on the ``vertex`` backend (``dag.test()``), against the fake Vertex AI over gRPC:
two Spot replicas train one model data-parallel, the model is registered, gated and promoted, the job
carries the run's labels and the report shows per-host timings and the spot price."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import connected_fake_vertex, dagbag_of_spec

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with connected_fake_vertex(tmp_path_factory.mktemp("gcs"), "google_cloud_default", "airflow-retrain-demo") as server:
        (server.gcs_root / "airflow-retrain-demo").mkdir()
        yield server


@pytest.fixture(scope="module")
def bag(fake, tmp_path_factory, airflow_db, warehouse):
    spec = yaml.safe_load((ROOT / "include/examples/vertex/churn.yaml").read_text())
    spec["name"] = "churn_vx"
    spec["registry"]["model_name"] = "churn_vx"
    spec["training"]["spot"] = True
    spec["training"]["vertex"]["replica_count"] = 2
    with dagbag_of_spec(tmp_path_factory.mktemp("specs"), spec) as bag:
        yield bag


def test_churn_dag_on_vertex_promotes_the_champion(bag, fake, state_dir):
    from mlflow import MlflowClient

    dr = bag.dags["churn_vx_retrain"].test()
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success", states
    uri = f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}"
    champion = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("churn_vx", "champion")
    assert champion.tags["retrain.promotion.decision"] == "promoted"

    [job_id] = fake.job_ids()
    info = fake.job_info(job_id)
    assert info["state"] == "JOB_STATE_SUCCEEDED"
    assert any("tracker on 127.0.0.1:" in line for line in info["log"])  # two replicas, one model
    from airflow_retrain.training.vertex import VertexTrainingBackend

    backend = VertexTrainingBackend(region="us-central1", staging_bucket="airflow-retrain-demo", prefix="churn")
    [job] = backend.find_jobs({"retrain:dag-id": "churn_vx_retrain"})
    assert job.details["spot"] and job.instance_count == 2 and job.tags["retrain:pipeline"] == "churn_vx"
    report = json.loads((state_dir / "artifacts" / "churn_vx_retrain" / "latest_report.json").read_text())
    train = report["stages"]["train"]
    assert set(train["info"]["host_train_seconds"]) == {"workerpool0-0", "workerpool0-1"}
    assert train["cost"]["spot"] and train["cost"]["hourly_price_usd"] == 0.0438
    assert train["metrics"]["roc_auc"] > 0.80
