"""Multi-host training emulated by the local backend: N processes on loopback train one XGBoost model with
``xgboost.collective`` (tracker on the first host, data sharded by file); the model matches one host's
quality; one host dying fails the job and stops the others. Also: checkpoints and resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from fakes.churn_data import churn_frame
from helpers import wait_for

from airflow_retrain.training.base import JobState, TrainingJobRequest
from airflow_retrain.training.local import LocalTrainingBackend

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PY = ROOT / "include" / "training" / "churn" / "train.py"


@pytest.fixture(scope="module")
def channels(tmp_path_factory):
    root = tmp_path_factory.mktemp("churn")
    (root / "train").mkdir()
    (root / "test").mkdir()
    frame = churn_frame(6000, 1)
    for i in range(6):  # six files: 1, 2 and 3 hosts each read whole files
        frame.iloc[i * 1000 : (i + 1) * 1000].to_parquet(root / "train" / f"part-{i}.parquet")
    churn_frame(1500, 2).to_parquet(root / "test" / "part-0.parquet")
    return {"train": str(root / "train"), "test": str(root / "test")}


def train(backend, channels, name, count, timeout=240.0, **hps):
    backend.submit(
        TrainingJobRequest(
            job_name=name,
            entry_point=str(TRAIN_PY),
            channels=channels,
            hyperparameters={"n_estimators": 80, "early_stopping_rounds": 0, "max_depth": 4, **hps},
            instance_count=count,
            max_runtime_seconds=600,
        )
    )
    return wait_for(lambda: (j := backend.describe(name)).state.terminal and j, timeout, 0.2)


def metrics(backend, name):
    return json.loads((backend.jobs_dir / name / "output" / "data" / "metrics.json").read_text())


@pytest.mark.slow
def test_one_two_three_hosts_train_one_model_of_the_same_quality(tmp_path, channels):
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs", environment={"OMP_NUM_THREADS": "1"})
    results = {}
    for count in (1, 2, 3):
        job = train(backend, channels, f"dist-{count}", count)
        assert job.state == JobState.COMPLETED, job.failure_reason
        results[count] = metrics(backend, f"dist-{count}")
        assert sorted(job.details.get("hosts", {"algo-1": None})) == [f"algo-{i + 1}" for i in range(count)]
    single = results[1]["metrics"]["roc_auc"]
    for count in (2, 3):
        info = results[count]["info"]
        assert abs(results[count]["metrics"]["roc_auc"] - single) <= 0.005, (count, results[count]["metrics"], single)
        assert info["hosts"] == [f"algo-{i + 1}" for i in range(count)]
        assert set(info["host_train_seconds"]) == set(info["hosts"])  # per-host timings in the report
        assert info["n_train"] == results[1]["info"]["n_train"]  # every row trained on, once
    log = (backend.jobs_dir / "dist-2" / "log.txt").read_text()
    assert "tracker on 127.0.0.1:" in log and "host 2/2 reads 3 of the channel's files" in log


@pytest.mark.slow
def test_one_host_killed_fails_the_job_and_stops_the_others(tmp_path, channels):
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs", environment={"OMP_NUM_THREADS": "1"})
    backend.submit(
        TrainingJobRequest(
            job_name="dist-kill",
            entry_point=str(TRAIN_PY),
            channels=channels,
            hyperparameters={"n_estimators": 200000, "early_stopping_rounds": 0, "learning_rate": 0.001,
                             "checkpoint_interval": 0},
            instance_count=3,
            max_runtime_seconds=600,
        )
    )
    runner = psutil.Process(backend.describe("dist-kill").details["pid"])
    log = backend.jobs_dir / "dist-kill" / "log.txt"
    wait_for(lambda: log.exists() and log.read_text().count("distributed: host") == 3, 120, 0.2)
    hosts = runner.children()
    assert len(hosts) == 3
    hosts[1].kill()  # algo-2 dies mid-training
    job = wait_for(lambda: (j := backend.describe("dist-kill")).state.terminal and j, 60, 0.2)
    assert job.state == JobState.FAILED
    assert job.failure_reason.startswith("AlgorithmError: host algo-2 exit code -9")
    assert not [p for p in hosts if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_checkpoints_written_and_training_resumes_from_the_latest(tmp_path, channels):
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs", environment={"OMP_NUM_THREADS": "1"})
    first = train(backend, channels, "ck-1", 1, checkpoint_interval=20)
    assert first.state == JobState.COMPLETED, first.failure_reason
    info = metrics(backend, "ck-1")["info"]
    assert (info["resumed_from_round"], info["rounds_trained"], info["checkpoints_written"]) == (0, 80, 4)
    checkpoints = sorted(p.name for p in (backend.jobs_dir / "ck-1" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-000060.json", "checkpoint-000080.json"]  # older ones dropped

    # A script that finds a checkpoint in its checkpoint dir (as after a spot restart) trains only the rest.
    ck = tmp_path / "restart" / "checkpoints"
    ck.mkdir(parents=True)
    shutil.copy(backend.jobs_dir / "ck-1" / "checkpoints" / "checkpoint-000060.json", ck)
    resumed = run_script(tmp_path / "restart", channels, checkpoint_interval=20)
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    info = json.loads((tmp_path / "restart" / "data" / "metrics.json").read_text())["info"]
    assert (info["resumed_from_round"], info["rounds_trained"]) == (60, 20)
    assert "checkpoint: resuming from" in resumed.stdout

    (ck / "checkpoint-000100.json").write_text("{not a model")
    broken = run_script(tmp_path / "restart", channels)
    assert broken.returncode == 1
    assert broken.stdout.strip().splitlines()[-1].startswith(f"ERROR: checkpoint {ck / 'checkpoint-000100.json'} cannot be read")


def run_script(root: Path, channels, **hps) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "OMP_NUM_THREADS": "1",
        "SM_CHANNEL_TRAIN": channels["train"],
        "SM_CHANNEL_TEST": channels["test"],
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DATA_DIR": str(root / "data"),
        "SM_OUTPUT_FAILURE": str(root / "failure"),
        "SM_CHECKPOINT_DIR": str(root / "checkpoints"),
        "SM_HPS": json.dumps({"n_estimators": 80, "early_stopping_rounds": 0, "max_depth": 4, **hps}),
    }
    return subprocess.run(
        [sys.executable, str(TRAIN_PY)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=300, check=False,
    )
