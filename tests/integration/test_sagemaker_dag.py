"""The churn DAG with ``backend: sagemaker`` (``include/examples/sagemaker/churn.yaml``) end to end through
``dag.test()`` against the fake cloud (``scripts/fake_cloud``), every task on its own worker (the
separate-workers wrapper of ``test_separate_workers``): the train task submits, defers (``dag.test`` runs
the trigger inline), resumes and hands on artifact-store URIs; exactly one ``CreateTrainingJob``; the
model is registered and promoted. Then a run whose job fails: nothing registered, the champion
unchanged, the teardown ran and nothing is left running.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from test_separate_workers import separate_workers  # noqa: F401 - the fixture, shared

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "churn_sm_retrain"
MODEL = "churn_sm"
CONN = "aws_sm_dag"
FIRST = datetime(2026, 4, 1, tzinfo=UTC)
FAILING = datetime(2026, 4, 8, tzinfo=UTC)
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sm-artifact-store")


@pytest.fixture(scope="module")
def spec(fake_cloud_server):
    raw = yaml.safe_load((ROOT / "include/examples/sagemaker/churn.yaml").read_text())
    raw["name"] = MODEL
    raw["retries"] = 0
    raw["registry"] = dict(raw["registry"], model_name=MODEL)
    raw["training"]["sagemaker"] = dict(raw["training"]["sagemaker"], connection_id=CONN)
    return raw


@pytest.fixture(scope="module")
def bag(tmp_path_factory, spec, store, airflow_db, warehouse):
    from airflow.dag_processing.dagbag import DagBag

    spec = dict(spec, artifacts={"root": store.as_uri()})
    folder = tmp_path_factory.mktemp("sm-specs")
    (folder / f"{MODEL}.yaml").write_text(yaml.safe_dump(spec))
    os.environ["RETRAIN_SPECS_DIR"] = str(folder)
    try:
        bag = DagBag(dag_folder=str(ROOT / "dags"))
        assert bag.import_errors == {}
        yield bag
    finally:
        os.environ.pop("RETRAIN_SPECS_DIR", None)


@pytest.fixture
def cloud(fake_cloud, spec, monkeypatch):
    block = spec["training"]["sagemaker"]
    assert fake_cloud.bootstrap(block["bucket"], block["role_arn"].rsplit("/", 1)[1]) == block["role_arn"]
    fake_cloud.reset_calls()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(fake_cloud.connection()))
    monkeypatch.delenv("RETRAIN_DEFERRABLE", raising=False)  # the default for a cloud backend: deferrable
    return fake_cloud


def champion_version(state_dir) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}")
    try:
        return client.get_model_version_by_alias(MODEL, "champion").version
    except MlflowException:
        return None


def run_report(store: Path, when: datetime) -> dict:
    reports = [json.loads(p.read_text()) for p in (store / DAG_ID).glob("*/report.json")]
    (report,) = [r for r in reports if when.date().isoformat() in r.get("run_id", "")]
    return report


def test_sagemaker_dag_end_to_end_on_separate_workers(bag, cloud, store, separate_workers, state_dir):  # noqa: F811
    dr = bag.dags[DAG_ID].test(logical_date=FIRST, run_after=FIRST)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success", states
    assert set(states.values()) == {"success"}
    ran = [w["task_id"] for w in separate_workers]
    assert sorted(set(ran)) == sorted(states)  # each on its own worker ...
    assert ran.count("train") == 2  # ... and train twice: submitted on one, resumed after the deferral on another

    calls = cloud.calls()
    assert calls["sagemaker:CreateTrainingJob"] == 1
    (job,) = cloud.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert job["TrainingJobStatus"] == "Completed"
    stages = run_report(store, FIRST)["stages"]
    assert stages["train"]["job_name"] == job["TrainingJobName"]
    assert stages["train"]["metrics"]["roc_auc"] > 0.8
    assert stages["train"]["cost"]["seconds"] >= 1 and stages["train"]["cost"]["instance_type"] == "ml.m5.xlarge"
    assert stages["train"]["model_uri"].startswith(store.as_uri())  # a URI into the store, not a worker's disk
    assert stages["promote"]["champion_after"] == stages["register"]["version"] == str(champion_version(state_dir))
    assert stages["teardown"]["stopped_jobs"] == []


def test_failed_job_leaves_the_champion_and_runs_teardown(bag, cloud, store, state_dir):
    before = champion_version(state_dir)
    assert before is not None  # promoted by the test above
    cloud.fail_next_jobs("AlgorithmError: ValueError: simulated failure in the training script", phase="Training")
    dr = bag.dags[DAG_ID].test(logical_date=FAILING, run_after=FAILING)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "failed", states
    assert states["train"] == "failed"
    assert states["register"] == states["promote"] == "upstream_failed"
    assert states["teardown"] == "success"
    assert champion_version(state_dir) == before
    assert cloud.calls()["sagemaker:CreateTrainingJob"] == 1
    (job,) = cloud.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert job["TrainingJobStatus"] == "Failed"
    assert all(not j["running"] for j in cloud.training_jobs())
