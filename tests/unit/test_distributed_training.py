"""Multi-host training emulated by the local backend: N processes on loopback train one XGBoost model with
``xgboost.collective`` (tracker on the first host, data sharded by file); the model matches one host's
quality; one host dying fails the job and stops the others. Also: checkpoints and resume."""

from __future__ import annotations

import json
import os
import re
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


# ------------------------------------------------------------------- SageMaker InstanceCount on the fake cloud

BUCKET = "dist-bucket"


def sagemaker_job(cloud, channels, name: str, count: int, **hps) -> dict:
    """Create ``name`` on the fake cloud with ``InstanceCount: count``, the churn script and the channels."""
    from fakes.churn_data import framework_hyperparameters, sourcedir_tar_gz

    s3 = cloud.client("s3")
    s3.put_object(Bucket=BUCKET, Key=f"code/{name}/sourcedir.tar.gz", Body=sourcedir_tar_gz(TRAIN_PY.parent))
    cloud.client("sagemaker").create_training_job(
        TrainingJobName=name,
        RoleArn=cloud.role_arn,
        AlgorithmSpecification={"TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
                                "TrainingInputMode": "File"},
        HyperParameters=framework_hyperparameters(
            "train.py", f"s3://{BUCKET}/code/{name}/sourcedir.tar.gz",
            **{"n_estimators": 80, "early_stopping_rounds": 0, "max_depth": 4, **hps},
        ),
        InputDataConfig=[
            {"ChannelName": c, "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/{c}"}}}
            for c in ("train", "test")
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": count, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
        Environment={"OMP_NUM_THREADS": "1"},
    )
    return cloud.training_job(name)


def sagemaker_result(cloud, name: str, timeout: float = 240.0) -> dict:
    sm = cloud.client("sagemaker")
    return wait_for(
        lambda: (d := sm.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] in ("Completed", "Failed", "Stopped")
        and d,
        timeout,
        0.3,
    )


def read_tar(cloud, key: str) -> dict[str, bytes]:
    import io
    import tarfile

    body = cloud.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture
def sm_cloud(fake_cloud, channels):
    fake_cloud.role_arn = fake_cloud.bootstrap(BUCKET)
    s3 = fake_cloud.client("s3")
    for channel, folder in channels.items():
        for path in sorted(Path(folder).iterdir()):
            s3.upload_file(str(path), BUCKET, f"data/{channel}/{path.name}")
    return fake_cloud


def test_sagemaker_two_hosts_on_the_fake_cloud_train_one_model_of_one_hosts_quality(sm_cloud, channels):
    sagemaker_job(sm_cloud, channels, "sm-dist-1", 1)
    info = sagemaker_job(sm_cloud, channels, "sm-dist-2", 2)
    assert info["hosts"] == ["algo-1", "algo-2"]
    results = {}
    for count in (1, 2):
        job = sagemaker_result(sm_cloud, f"sm-dist-{count}")
        assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
        results[count] = json.loads(read_tar(sm_cloud, f"output/sm-dist-{count}/output/output.tar.gz")["metrics.json"])
    single, double = results[1]["metrics"]["roc_auc"], results[2]["metrics"]["roc_auc"]
    assert abs(double - single) <= 0.005, (results[2]["metrics"], single)
    info2 = results[2]["info"]
    assert info2["hosts"] == ["algo-1", "algo-2"] and set(info2["host_train_seconds"]) == {"algo-1", "algo-2"}
    assert info2["n_train"] == results[1]["info"]["n_train"]  # every row trained on, once
    # Each host had its own container, as SageMaker gives it: its own resourceconfig.json and log stream.
    streams = sm_cloud.training_job("sm-dist-2")["log_streams"]
    assert sorted(streams) == ["algo-1", "algo-2"]
    events = sm_cloud.client("logs").get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=streams["algo-2"], startFromHead=True
    )["events"]
    assert any("host 2/2 reads 3 of the channel's files" in e["message"] for e in events)


def test_sagemaker_host_killed_on_the_fake_cloud_fails_the_job_and_stops_the_other(sm_cloud, channels):
    sagemaker_job(sm_cloud, channels, "sm-dist-kill", 2, n_estimators=200000, learning_rate=0.001, checkpoint_interval=0)
    info = wait_for(lambda: len((i := sm_cloud.training_job("sm-dist-kill"))["host_pids"]) == 2 and i, 120, 0.2)
    pids = info["host_pids"]
    logs = sm_cloud.client("logs")
    wait_for(
        lambda: all(
            any("distributed: host" in e["message"] for e in logs.get_log_events(
                logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, startFromHead=True)["events"])
            for stream in sm_cloud.training_job("sm-dist-kill")["log_streams"].values()
        ),
        120,
        0.5,
    )
    assert sm_cloud.kill_host("sm-dist-kill", "algo-2") == pids["algo-2"]
    job = sagemaker_result(sm_cloud, "sm-dist-kill", 60)
    assert job["TrainingJobStatus"] == "Failed"
    assert re.match(r"AlgorithmError: ExecuteUserScriptError: .* exited with code -9", job["FailureReason"]), job
    first = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                logStreamName=sm_cloud.training_job("sm-dist-kill")["log_streams"]["algo-1"], startFromHead=True)
    assert any("host algo-2 exited with -9; stopping the other hosts" in e["message"] for e in first["events"])
    assert not [p for p in pids.values() if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
