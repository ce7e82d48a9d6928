"""Spot capacity on both fakes with the real churn ``train.py``: the fake interrupts the job mid-training,
restarts it, and the restarted script resumes from its checkpoint -- fewer rounds trained after the
restart than from scratch prove the checkpoint was used. The cost shows the spot price and the saving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fakes import fake_vertex
from fakes.churn_data import churn_frame
from helpers import wait_for

from airflow_retrain.training.base import JobState, TrainingJobRequest

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PY = ROOT / "include" / "training" / "churn" / "train.py"
pytestmark = pytest.mark.integration
ROUNDS = 600
HPS = {"n_estimators": ROUNDS, "early_stopping_rounds": 0, "max_depth": 4, "checkpoint_interval": 10}


@pytest.fixture(scope="module")
def channels(tmp_path_factory):
    root = tmp_path_factory.mktemp("spot-data")
    for name, rows, seed in (("train", 8000, 1), ("test", 1000, 2)):
        (root / name).mkdir()
        churn_frame(rows, seed).to_parquet(root / name / "part-0.parquet")
    return {"train": str(root / "train"), "test": str(root / "test")}


def request(name, channels) -> TrainingJobRequest:
    return TrainingJobRequest(job_name=name, entry_point=str(TRAIN_PY), channels=channels, hyperparameters=HPS,
                              instance_type="ml.m5.xlarge", max_runtime_seconds=900,
                              tags={"retrain:dag-id": "spot_test", "retrain:run-key": "abc"})


def checkpoint_rounds(folder: Path) -> int:
    found = [int(p.stem.split("-")[1]) for p in folder.glob("checkpoint-*.json")] if folder.is_dir() else []
    return max(found, default=0)


def assert_resumed(info: dict) -> None:
    assert info["resumed_from_round"] >= 10, info
    assert info["rounds_trained"] == ROUNDS - info["resumed_from_round"] < ROUNDS, info


def test_sagemaker_managed_spot_interruption_resumes_from_checkpoint(fake_cloud, channels, monkeypatch, tmp_path):
    from airflow_retrain.training.sagemaker import SageMakerTrainingBackend

    role = fake_cloud.bootstrap("spot-bucket")
    for key, value in fake_cloud.airflow_env("aws_spot").items():
        monkeypatch.setenv(key, value)
    backend = SageMakerTrainingBackend(role_arn=role, bucket="spot-bucket", connection_id="aws_spot", spot=True,
                                       image="683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1")
    backend.submit(request("spot-sm-1", channels))
    desc = fake_cloud.client("sagemaker").describe_training_job(TrainingJobName="spot-sm-1")
    assert desc["EnableManagedSpotTraining"] and desc["CheckpointConfig"]["S3Uri"].endswith("/spot-sm-1/checkpoints/")
    assert desc["StoppingCondition"]["MaxWaitTimeInSeconds"] == 1800
    root = Path(wait_for(lambda: fake_cloud.training_job("spot-sm-1").get("root"), 60, 0.2))
    wait_for(lambda: checkpoint_rounds(root / "checkpoints") >= 20, 180, 0.2)
    fake_cloud.reclaim("spot-sm-1")
    job = wait_for(lambda: (j := backend.describe("spot-sm-1")).state.terminal and j, 300, 0.5)
    assert job.state == JobState.COMPLETED, job.failure_reason
    assert fake_cloud.training_job("spot-sm-1")["interruptions"] == 1
    backend.fetch_outputs("spot-sm-1", tmp_path / "out")
    assert_resumed(json.loads((tmp_path / "out" / "output" / "metrics.json").read_text())["info"])
    cost = backend.cost(job)
    assert cost.spot and cost.spot_savings_usd > 0 and cost.training_seconds > cost.seconds


def test_vertex_spot_vm_preemption_resumes_from_checkpoint(channels, tmp_path):
    import os

    from airflow_retrain.training.vertex import VertexTrainingBackend

    fake = fake_vertex.start_fake_vertex(gcs_root=tmp_path / "gcs")
    try:
        os.environ["AIRFLOW_CONN_GOOGLE_SPOT"] = json.dumps(fake_vertex.connection(fake, "spot-proj"))
        (fake.gcs_root / "spot-bucket").mkdir()
        backend = VertexTrainingBackend(region="us-central1", staging_bucket="spot-bucket", connection_id="google_spot",
                                        spot=True, prefix="p")
        backend.submit(request("spot-vx-1", channels))
        resource = backend.describe("spot-vx-1").details["resource_name"]
        checkpoints = fake.gcs_root / "spot-bucket" / "p" / "spot-vx-1" / "checkpoints"
        wait_for(lambda: checkpoint_rounds(checkpoints) >= 20, 180, 0.2)
        fake.reclaim(resource)
        job = wait_for(lambda: (j := backend.describe("spot-vx-1")).state.terminal and j, 300, 0.5)
        assert job.state == JobState.COMPLETED, job.failure_reason
        assert fake.job_info(resource)["interruptions"] == 1
        backend.fetch_outputs("spot-vx-1", tmp_path / "out")
        assert_resumed(json.loads((tmp_path / "out" / "output" / "metrics.json").read_text())["info"])
        cost = backend.cost(job)
        assert cost.spot and cost.hourly_price_usd == 0.0438 and cost.spot_savings_usd > 0
    finally:
        os.environ.pop("AIRFLOW_CONN_GOOGLE_SPOT", None)
        fake.stop()
        shutil.rmtree(tmp_path / "gcs", ignore_errors=True)
