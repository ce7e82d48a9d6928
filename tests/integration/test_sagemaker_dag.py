"""The churn DAG with ``backend: sagemaker`` (``include/examples/sagemaker/churn.yaml``) end to end through
``dag.test()`` against the fake cloud (``scripts/fake_cloud``), every task on its own worker (the
separate-workers wrapper of ``test_separate_workers``): the train task submits, defers (``dag.test`` runs
the trigger inline), resumes and hands on artifact-store URIs; exactly one ``CreateTrainingJob``; the
model is registered and promoted (the module's ``first_run``, recorded as it finished). Then a run whose
job fails: nothing registered, the champion that first run promoted unchanged, the teardown ran and
nothing is left running.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import connect_fake_cloud, dagbag_of_spec, run_on_separate_workers

# Runs here retrain the same inputs as an earlier champion of the session: force them to train.
FORCE = {"force": True}

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
    spec = dict(spec, artifacts={"root": store.as_uri()})
    with dagbag_of_spec(tmp_path_factory.mktemp("sm-specs"), spec) as bag:
        yield bag


def _prepare(fake_cloud, spec, mp: pytest.MonkeyPatch):
    """The bucket and role the spec names exist, no calls counted yet, the connection points at the fake."""
    block = spec["training"]["sagemaker"]
    role = block["role_arn"].rsplit("/", 1)[1]
    assert connect_fake_cloud(fake_cloud, mp.setenv, block["bucket"], CONN, role) == block["role_arn"]
    mp.delenv("RETRAIN_DEFERRABLE", raising=False)
    # A deployment with a triggerer (dag.test runs the trigger inline): the train task defers.
    mp.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")


@pytest.fixture
def cloud(fake_cloud, spec, monkeypatch):
    _prepare(fake_cloud, spec, monkeypatch)
    return fake_cloud


@pytest.fixture(scope="module")
def first_run(bag, spec, fake_cloud_server, store, state_dir, tmp_path_factory) -> SimpleNamespace:
    """The first (good) run on a freshly reset cloud, each task on its own worker; what the cloud and the
    registry held right after it, read before any other test resets the cloud."""
    fake_cloud_server.reset()
    try:
        with pytest.MonkeyPatch.context() as mp:
            _prepare(fake_cloud_server, spec, mp)
            run = run_on_separate_workers(bag.dags[DAG_ID], tmp_path_factory.mktemp("sm-first-run"), FIRST)
        run.calls = fake_cloud_server.calls()
        run.jobs = fake_cloud_server.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
        run.report = run_report(store, FIRST)
        run.champion = champion_version(state_dir)
        return run
    finally:
        fake_cloud_server.reset()  # stops any job the run left running


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


def test_sagemaker_dag_end_to_end_on_separate_workers(first_run, store):
    dr, states = first_run.dr, first_run.states
    assert dr.state == "success", states
    assert set(states.values()) == {"success"}
    ran = [w["task_id"] for w in first_run.workers]
    assert sorted(set(ran)) == sorted(states)  # each on its own worker ...
    assert ran.count("train") == 2  # ... and train twice: submitted on one, resumed after the deferral on another

    assert first_run.calls["sagemaker:CreateTrainingJob"] == 1
    (job,) = first_run.jobs
    assert job["TrainingJobStatus"] == "Completed"
    stages = first_run.report["stages"]
    assert stages["train"]["job_name"] == job["TrainingJobName"]
    assert stages["train"]["metrics"]["roc_auc"] > 0.8
    assert stages["train"]["cost"]["seconds"] >= 1 and stages["train"]["cost"]["instance_type"] == "ml.m5.xlarge"
    assert stages["train"]["model_uri"].startswith(store.as_uri())  # a URI into the store, not a worker's disk
    assert stages["promote"]["champion_after"] == stages["register"]["version"] == str(first_run.champion)
    assert stages["teardown"]["stopped_jobs"] == []


def test_failed_job_leaves_the_champion_and_runs_teardown(first_run, bag, cloud, state_dir):
    before = champion_version(state_dir)
    assert before is not None and before == first_run.champion  # promoted by the module's first run
    cloud.fail_next_jobs("AlgorithmError: ValueError: simulated failure in the training script", phase="Training")
    dr = bag.dags[DAG_ID].test(logical_date=FAILING, run_after=FAILING, run_conf=FORCE)
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
