"""The fake cloud (``scripts/fake_cloud``) through the real boto3 client over HTTP.

Every test gets the session's fake reset (``fake_cloud`` fixture). Training jobs run real scripts:
the churn script on tiny churn-schema Parquet channels, or small scripts that sleep, fail or
ignore SIGTERM.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from fakes import fake_cloud as fake_cloud_module
from fakes.churn_data import (
    CHURN_SOURCE_DIR,
    churn_frame,
    framework_hyperparameters,
    parquet_bytes,
    sourcedir_tar_gz,
)
from helpers import alive, bound, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "retrain-fake"
TERMINAL = ("Completed", "Failed", "Stopped")

SLEEPER = """
import os, pathlib, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
pathlib.Path(os.environ["SM_MODEL_DIR"], "child.pid").write_text(str(child.pid))
print("sleeper: started child", child.pid, flush=True)
time.sleep(float(os.environ.get("SLEEP_SECONDS", "300")))
pathlib.Path(os.environ["SM_MODEL_DIR"], "done.txt").write_text("done")
"""

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stubborn: ignoring SIGTERM", flush=True)
time.sleep(300)
"""

ENV_DUMP = """
import json, os, pathlib, sys
pathlib.Path(os.environ["SM_MODEL_DIR"], "env.json").write_text(json.dumps(dict(os.environ)))
pathlib.Path(os.environ["SM_MODEL_DIR"], "argv.json").write_text(json.dumps(sys.argv[1:]))
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "cwd.txt").write_text(os.getcwd())
print("env dumped", flush=True)
print("epoch 1 validation auc: 0.71", flush=True)
print("epoch 2 validation auc: 0.83", flush=True)
"""

CHECKPOINTING = """
import os, pathlib, time
checkpoint = pathlib.Path(os.environ["SM_CHECKPOINT_DIR"], "steps.txt")
previous = checkpoint.read_text() if checkpoint.exists() else ""
checkpoint.write_text(previous + "x")
pathlib.Path(os.environ["SM_MODEL_DIR"], "resumed_from.txt").write_text(previous)
print("checkpoint", repr(previous), flush=True)
time.sleep(5)  # long enough for the test to see the line and reclaim the instance mid-run
"""

ORPHANING = """
import os, pathlib, subprocess, sys
orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
pathlib.Path(os.environ["SM_MODEL_DIR"], "orphan.pid").write_text(str(orphan.pid))
"""

FAILING = """
import os, pathlib, sys
print("about to fail", flush=True)
pathlib.Path(os.environ["SM_OUTPUT_FAILURE"]).write_text("ValueError: the label column is constant")
sys.exit(1)
"""


CHANNELS = {"train": parquet_bytes(churn_frame(400, 1)), "test": parquet_bytes(churn_frame(150, 2))}


@pytest.fixture
def cloud(fake_cloud):
    """The reset fake with a bucket, an execution role and the churn channels in S3."""
    fake_cloud.role_arn = fake_cloud.bootstrap(BUCKET)
    s3 = fake_cloud.client("s3")
    s3.put_object(Bucket=BUCKET, Key="data/train/part-0000.parquet", Body=CHANNELS["train"])
    s3.put_object(Bucket=BUCKET, Key="data/test/part-0000.parquet", Body=CHANNELS["test"])
    fake_cloud.reset_calls()
    return fake_cloud


def upload_source(cloud, name: str, script: str | None = None) -> str:
    """Pack the churn source dir (or a one-file source dir holding ``script``) to S3; return its URI."""
    if script is None:
        archive = sourcedir_tar_gz(CHURN_SOURCE_DIR)
    else:
        archive = _tar({"train.py": textwrap.dedent(script)})
    key = f"code/{name}/sourcedir.tar.gz"
    cloud.client("s3").put_object(Bucket=BUCKET, Key=key, Body=archive)
    return f"s3://{BUCKET}/{key}"


def _tar(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def create_job(cloud, name: str, script: str | None = None, hyperparameters: dict | None = None, client=None, **overrides):
    source = upload_source(cloud, name, script)
    request = {
        "TrainingJobName": name,
        "RoleArn": cloud.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "validation:auc", "Regex": r"validation auc: ([0-9.]+)"}],
        },
        "HyperParameters": framework_hyperparameters("train.py", source, **(hyperparameters or {})),
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/{channel}"}},
            }
            for channel in ("train", "test")
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "Tags": [{"Key": "retrain:pipeline", "Value": "churn"}],
    }
    request.update(overrides)
    (client or cloud.client("sagemaker")).create_training_job(**request)
    return request


def wait_terminal(cloud, name: str, timeout: float = 120.0) -> dict:
    sm = cloud.client("sagemaker")
    return wait_for(
        lambda: (d := sm.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] in TERMINAL and d,
        timeout=timeout,
        interval=0.2,
    )


def wait_training(cloud, name: str) -> dict:
    """Wait until the script runs; return the fake's view of the job (with the script's pid)."""
    return wait_for(
        lambda: (info := cloud.training_job(name))["secondary_status"] == "Training" and info["pid"] and info,
        timeout=60,
        interval=0.1,
    )


def read_tar(cloud, key: str) -> dict[str, bytes]:
    body = cloud.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def log_messages(cloud, name: str) -> list[str]:
    logs = cloud.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/")
    messages = []
    for stream in streams["logStreams"]:
        events = logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream["logStreamName"], startFromHead=True
        )["events"]
        messages += [e["message"] for e in events]
    return messages


def error_of(excinfo) -> tuple[str, str]:
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["Error"]["Message"]


# ------------------------------------------------------------------------------------------ the happy path


def test_churn_job_runs_to_completed_with_outputs_logs_and_billing(cloud):
    create_job(cloud, "churn-happy-1", hyperparameters={"n_estimators": 20, "max_depth": 3})
    sm = cloud.client("sagemaker")
    first = sm.describe_training_job(TrainingJobName="churn-happy-1")
    assert first["TrainingJobStatus"] == "InProgress"  # never moto's instant "Completed"
    assert "ModelArtifacts" not in first and "BillableTimeInSeconds" not in first

    job = wait_terminal(cloud, "churn-happy-1")
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["SecondaryStatus"] == "Completed"
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    assert all("EndTime" in t for t in job["SecondaryStatusTransitions"])
    assert job["TrainingStartTime"] <= job["TrainingEndTime"]
    assert job["BillableTimeInSeconds"] >= 1
    assert job["BillableTimeInSeconds"] == job["TrainingTimeInSeconds"]  # on-demand: billed in full
    assert "FailureReason" not in job

    artifacts = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifacts == f"s3://{BUCKET}/output/churn-happy-1/output/model.tar.gz"
    # The script's documented outputs (its contract), read back from S3.
    model = read_tar(cloud, "output/churn-happy-1/output/model.tar.gz")
    assert "model.json" in model
    output = read_tar(cloud, "output/churn-happy-1/output/output.tar.gz")
    written = json.loads(output["metrics.json"])
    written = written.get("metrics", written)  # {"metrics": {...}, "info": {...}} today
    assert 0.5 < written["roc_auc"] <= 1.0

    messages = log_messages(cloud, "churn-happy-1")
    assert messages[0] == "Invoking script with the following command: python train.py --n_estimators 20 --max_depth 3"
    assert len(messages) > 3  # the script's own lines follow

    tags = sm.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]
    assert {"Key": "retrain:pipeline", "Value": "churn"} in tags
    listed = sm.list_training_jobs(StatusEquals="Completed")["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in listed] == ["churn-happy-1"]
    calls = cloud.calls()
    assert calls["sagemaker:CreateTrainingJob"] == 1
    assert calls["sagemaker:DescribeTrainingJob"] >= 2
    assert calls["s3:GetObject"] == 2  # the two archives read above; the fake's own reads are not counted


def test_script_gets_the_container_contract_and_no_host_secrets(cloud):
    create_job(
        cloud,
        "env-dump-1",
        ENV_DUMP,
        hyperparameters={"n_estimators": 7, "label": "churned", "weights": {"a": 1}},
        Environment={"MY_SETTING": "on"},
    )
    job = wait_terminal(cloud, "env-dump-1")
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    model = read_tar(cloud, "output/env-dump-1/output/model.tar.gz")
    env = json.loads(model["env.json"])
    argv = json.loads(model["argv.json"])
    # The host's secrets stay out; only allow-listed variables and the SageMaker contract come in.
    assert "AWS_SECRET_ACCESS_KEY" not in env and "AIRFLOW_CONN_CANARY" not in env
    assert not any("canary" in v for v in env.values())
    assert json.loads(env["SM_HPS"]) == {"n_estimators": 7, "label": "churned", "weights": {"a": 1}}
    assert argv == ["--n_estimators", "7", "--label", "churned", "--weights", '{"a": 1}']
    assert json.loads(env["SM_CHANNELS"]) == ["train", "test"]
    assert env["SM_CHANNEL_TRAIN"].endswith("/input/data/train")
    assert env["SM_MODEL_DIR"].endswith("/model") and env["SM_OUTPUT_DATA_DIR"].endswith("/output/data")
    assert env["SM_OUTPUT_FAILURE"].endswith("/output/failure")
    assert env["SM_CURRENT_HOST"] == "algo-1" and env["TRAINING_JOB_NAME"] == "env-dump-1"
    assert env["SM_USER_ENTRY_POINT"] == "train.py"
    assert env["MY_SETTING"] == "on"
    assert read_tar(cloud, "output/env-dump-1/output/output.tar.gz")["cwd.txt"].decode().endswith("/code")
    # MetricDefinitions are matched against the log: the last value wins, as in SageMaker.
    assert [(m["MetricName"], m["Value"]) for m in job["FinalMetricDataList"]] == [("validation:auc", 0.83)]


# ------------------------------------------------------------------------------------------------ failures


def test_failure_file_becomes_the_failure_reason(cloud):
    create_job(cloud, "fails-1", FAILING)
    job = wait_terminal(cloud, "fails-1")
    assert job["TrainingJobStatus"] == "Failed"
    assert job["SecondaryStatus"] == "Failed"
    assert job["FailureReason"] == "AlgorithmError: ValueError: the label column is constant"
    assert job["BillableTimeInSeconds"] >= 1
    assert any("about to fail" in m for m in log_messages(cloud, "fails-1"))


def test_exit_code_without_failure_file(cloud):
    create_job(cloud, "fails-2", "import sys; print('bye'); sys.exit(3)")
    job = wait_terminal(cloud, "fails-2")
    assert job["TrainingJobStatus"] == "Failed"
    assert re.match(r"AlgorithmError: ExecuteUserScriptError: .* exited with code 3", job["FailureReason"])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/nothing/here"}}}]},
            "ClientError: No S3 objects found under S3 URL \"s3://retrain-fake/nothing/here\"",
        ),
        ({"OutputDataConfig": {"S3OutputPath": "s3://no-such-bucket/out"}}, "ClientError: the output bucket"),
        ({"HyperParameters": {"n_estimators": "5"}}, "ClientError: the fake cloud runs framework-mode jobs only"),
        (
            {"HyperParameters": framework_hyperparameters("missing.py", f"s3://{BUCKET}/code/bad-input/sourcedir.tar.gz")},
            "ClientError: sagemaker_program 'missing.py' is not in the source directory",
        ),
    ],
    ids=["empty-channel", "no-output-bucket", "no-program", "program-not-in-source"],
)
def test_bad_inputs_fail_the_job_with_a_client_error(cloud, change, reason):
    create_job(cloud, "bad-input", "print('never runs')", **change)
    job = wait_terminal(cloud, "bad-input")
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith(reason), job["FailureReason"]
    assert "ModelArtifacts" not in job


# ----------------------------------------------------------------------------------------------- stopping


def test_stop_training_job_kills_the_process_tree(cloud):
    create_job(cloud, "stop-1", SLEEPER)
    info = wait_training(cloud, "stop-1")
    pid = info["pid"]
    wait_for(lambda: any("sleeper: started child" in m for m in log_messages(cloud, "stop-1")), timeout=20)
    assert alive(pid)
    sm = cloud.client("sagemaker")
    sm.stop_training_job(TrainingJobName="stop-1")
    assert sm.describe_training_job(TrainingJobName="stop-1")["TrainingJobStatus"] in ("Stopping", "Stopped")
    job = wait_terminal(cloud, "stop-1", timeout=30)
    assert job["TrainingJobStatus"] == "Stopped"
    assert job["SecondaryStatus"] == "Stopped"
    statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert statuses[:3] == ["Starting", "Downloading", "Training"] and "Stopping" in statuses
    assert job["BillableTimeInSeconds"] >= 1
    wait_for(lambda: not alive(pid), timeout=10)
    # The script's own child, found through the model the fake uploaded on stop (like SageMaker does).
    child_pid = int(read_tar(cloud, "output/stop-1/output/model.tar.gz")["child.pid"])
    wait_for(lambda: not alive(child_pid), timeout=10)
    wait_for(lambda: not cloud.training_job("stop-1")["running"], timeout=10)

    with pytest.raises(ClientError) as excinfo:
        sm.stop_training_job(TrainingJobName="stop-1")
    assert error_of(excinfo) == ("ValidationException", "The request was rejected because the training job is in status Stopped.")
    with pytest.raises(ClientError) as excinfo:
        sm.stop_training_job(TrainingJobName="no-such-job")
    assert error_of(excinfo)[0] == "ValidationException"


def test_processes_a_finished_script_leaves_behind_are_killed(cloud):
    create_job(cloud, "daemon-1", ORPHANING)
    job = wait_terminal(cloud, "daemon-1")
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    orphan = int(read_tar(cloud, "output/daemon-1/output/model.tar.gz")["orphan.pid"])
    wait_for(lambda: not alive(orphan), timeout=10)


def test_script_ignoring_sigterm_is_killed_after_the_grace_period(cloud):
    cloud.configure(stop_grace_seconds=1)
    create_job(cloud, "stubborn-1", STUBBORN)
    pid = wait_training(cloud, "stubborn-1")["pid"]
    wait_for(lambda: any("ignoring SIGTERM" in m for m in log_messages(cloud, "stubborn-1")), timeout=20)
    cloud.client("sagemaker").stop_training_job(TrainingJobName="stubborn-1")
    job = wait_terminal(cloud, "stubborn-1", timeout=30)
    assert job["TrainingJobStatus"] == "Stopped"
    wait_for(lambda: not alive(pid), timeout=10)


def test_max_runtime_stops_the_job(cloud):
    create_job(cloud, "too-long-1", SLEEPER, StoppingCondition={"MaxRuntimeInSeconds": 1})
    job = wait_terminal(cloud, "too-long-1", timeout=60)
    assert job["TrainingJobStatus"] == "Stopped"
    assert job["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert any("MaxRuntimeExceeded" in m for m in log_messages(cloud, "too-long-1"))


# --------------------------------------------------------------------------------------- validation


def test_duplicate_job_name_is_rejected_and_runs_once(cloud):
    create_job(cloud, "dup-1", SLEEPER)
    with pytest.raises(ClientError) as excinfo:
        create_job(cloud, "dup-1", SLEEPER)
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    assert "a training job with this name already exists" in message and "training-job/dup-1" in message
    assert [j["name"] for j in cloud.training_jobs()] == ["dup-1"]
    assert cloud.calls()["sagemaker:CreateTrainingJob"] == 2


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"ResourceConfig": {"InstanceType": "ml.nope.huge", "InstanceCount": 1, "VolumeSizeInGB": 5}}, "'resourceConfig.instanceType' failed to satisfy constraint: Member must satisfy enum value set: [ml.m4.xlarge"),
        ({"TrainingJobName": "not_valid_name"}, "'trainingJobName' failed to satisfy constraint"),
        ({"TrainingJobName": "x" * 64}, "Member must have length less than or equal to 63"),
        ({"RoleArn": "not-an-arn-at-all-really"}, "'roleArn' failed to satisfy constraint"),
        ({"RoleArn": "arn:aws:iam::123456789012:role/NoSuchRole"}, "Could not assume role arn:aws:iam::123456789012:role/NoSuchRole"),
    ],
    ids=["instance-type", "name-pattern", "name-length", "role-pattern", "role-missing"],
)
def test_invalid_requests_are_rejected_before_any_job(cloud, change, needle):
    with pytest.raises(ClientError) as excinfo:
        create_job(cloud, "invalid-1", "print(1)", **change)
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    assert needle in message
    assert cloud.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert cloud.training_jobs() == []


def test_instance_types_come_from_botocore():
    import botocore.session

    enum = botocore.session.get_session().get_service_model("sagemaker").shape_for("TrainingInstanceType").enum
    assert fake_cloud_module.training_instance_types() == list(enum)
    assert "ml.m5.xlarge" in enum and "ml.g5.xlarge" in enum


# --------------------------------------------------------------------------------------------- faults


def refused_create(cloud, fault: str, job: str) -> tuple[str, str]:
    """Inject ``fault`` into the next ``CreateTrainingJob``, call it for ``job``: the error's code and message."""
    cloud.inject_fault("CreateTrainingJob", fault)
    with pytest.raises(ClientError) as excinfo:
        create_job(cloud, job, "print(1)")
    return error_of(excinfo)


def test_resource_limit_fault_then_success(cloud):
    code, message = refused_create(cloud, "ResourceLimitExceeded", "quota-1")
    assert code == "ResourceLimitExceeded"
    assert "'ml.m5.xlarge for training job usage'" in message
    assert cloud.training_jobs() == [] and cloud.faults() == []
    create_job(cloud, "quota-1", "print(1)")
    assert wait_terminal(cloud, "quota-1")["TrainingJobStatus"] == "Completed"
    assert cloud.calls()["sagemaker:CreateTrainingJob"] == 2


def test_access_denied_fault(cloud):
    code, message = refused_create(cloud, "AccessDenied", "denied-1")
    assert code == "AccessDeniedException"
    assert "is not authorized to perform: sagemaker:CreateTrainingJob" in message


def test_throttling_is_retried_by_botocore_and_counted(cloud):
    cloud.inject_fault("CreateTrainingJob", "ThrottlingException", count=2)
    assert cloud.faults()[0]["count"] == 2
    sm = cloud.new_client("sagemaker", config=Config(retries={"mode": "standard", "max_attempts": 3}))
    create_job(cloud, "throttled-1", "print(1)", client=sm)
    assert cloud.calls()["sagemaker:CreateTrainingJob"] == 3  # two throttled attempts, one served
    assert wait_terminal(cloud, "throttled-1")["TrainingJobStatus"] == "Completed"

    cloud.inject_fault("DescribeTrainingJob", "ThrottlingException", count=5)
    no_retry = cloud.new_client("sagemaker", config=Config(retries={"mode": "standard", "max_attempts": 1}))
    with pytest.raises(ClientError) as excinfo:
        no_retry.describe_training_job(TrainingJobName="throttled-1")
    assert error_of(excinfo) == ("ThrottlingException", "Rate exceeded")
    cloud.clear_faults()
    assert cloud.faults() == []


def test_s3_fault_in_s3_protocol(cloud):
    cloud.inject_fault("GetObject", "AccessDenied", service="s3")
    with pytest.raises(ClientError) as excinfo:
        cloud.client("s3").get_object(Bucket=BUCKET, Key="data/train/part-0000.parquet")
    assert excinfo.value.response["Error"]["Code"] == "AccessDenied"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert cloud.client("s3").get_object(Bucket=BUCKET, Key="data/train/part-0000.parquet")["ContentLength"] > 0


def test_job_faults_fail_the_next_jobs_in_the_chosen_phase(cloud):
    capacity = "CapacityError: Unable to provision requested ML compute capacity. Please retry using a different ML instance type."
    cloud.fail_next_jobs(capacity, phase="Starting", name_prefix="cap-")
    cloud.fail_next_jobs("AlgorithmError: injected", phase="Training", count=2, name_prefix="algo-")
    create_job(cloud, "other-1", "print('unaffected')")
    create_job(cloud, "cap-1", "print('never runs')")
    create_job(cloud, "algo-1", "print('never runs')")
    assert wait_terminal(cloud, "other-1")["TrainingJobStatus"] == "Completed"
    capped = wait_terminal(cloud, "cap-1")
    assert (capped["TrainingJobStatus"], capped["FailureReason"]) == ("Failed", capacity)
    assert "BillableTimeInSeconds" not in capped and "TrainingStartTime" not in capped  # never got an instance
    algo = wait_terminal(cloud, "algo-1")
    assert (algo["TrainingJobStatus"], algo["FailureReason"]) == ("Failed", "AlgorithmError: injected")
    assert [t["Status"] for t in algo["SecondaryStatusTransitions"]] == ["Starting", "Downloading", "Training", "Failed"]
    assert algo["BillableTimeInSeconds"] >= 1
    assert cloud.job_faults() == [{"failure_reason": "AlgorithmError: injected", "phase": "Training", "count": 1, "name_prefix": "algo-"}]
    cloud.clear_job_faults()
    assert cloud.job_faults() == []


def test_bad_control_requests_are_refused(cloud):
    with pytest.raises(RuntimeError, match="400"):
        cloud.inject_fault("CreateTrainingJob", "ThrottlingException", count=0)
    with pytest.raises(RuntimeError, match="unknown fake-cloud setting 'warp_speed'"):
        cloud.configure(warp_speed=9)
    with pytest.raises(RuntimeError, match="404"):
        cloud.reclaim("no-such-job")
    with pytest.raises(RuntimeError, match="job fault phase must be one of"):
        cloud.fail_next_jobs("AlgorithmError: x", phase="Uploading")


# ---------------------------------------------------------------------------------- time, spot, counts


def test_min_training_seconds_sets_the_billed_time(cloud):
    cloud.configure(min_training_seconds=3)
    create_job(cloud, "timed-1", "print('quick')")
    job = wait_terminal(cloud, "timed-1")
    assert job["TrainingJobStatus"] == "Completed"
    assert job["BillableTimeInSeconds"] >= 3
    training = next(t for t in job["SecondaryStatusTransitions"] if t["Status"] == "Training")
    assert (training["EndTime"] - training["StartTime"]).total_seconds() >= 3


def test_spot_reclaim_interrupts_and_resumes(cloud):
    create_job(
        cloud,
        "spot-1",
        CHECKPOINTING,
        EnableManagedSpotTraining=True,
        StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
        CheckpointConfig={"S3Uri": f"s3://{BUCKET}/checkpoints/spot-1"},
    )
    first_pid = wait_training(cloud, "spot-1")["pid"]
    wait_for(lambda: any(m.startswith("checkpoint") for m in log_messages(cloud, "spot-1")), timeout=20)
    cloud.reclaim("spot-1")
    job = wait_terminal(cloud, "spot-1", timeout=60)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert statuses == ["Starting", "Downloading", "Training", "Interrupted", "Starting", "Downloading", "Training", "Uploading", "Completed"]
    info = cloud.training_job("spot-1")
    assert info["interruptions"] == 1 and len(info["script_pids"]) == 2
    assert not alive(first_pid)
    assert job["BillableTimeInSeconds"] < job["TrainingTimeInSeconds"]  # spot savings
    # The second instance started from the checkpoint the first one left in CheckpointConfig.S3Uri.
    assert read_tar(cloud, "output/spot-1/output/model.tar.gz")["resumed_from.txt"] == b"x"


def test_reclaiming_an_on_demand_instance_fails_the_job(cloud):
    create_job(cloud, "reclaimed-1", SLEEPER)
    pid = wait_training(cloud, "reclaimed-1")["pid"]
    cloud.reclaim("reclaimed-1")
    job = wait_terminal(cloud, "reclaimed-1", timeout=30)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("InternalServerError: the training instance was lost")
    wait_for(lambda: not alive(pid), timeout=10)


def test_call_counts_reset(cloud):
    sm = cloud.client("sagemaker")
    sm.list_training_jobs()
    sm.list_training_jobs()
    cloud.client("s3").list_objects_v2(Bucket=BUCKET)
    assert cloud.calls() == {"s3:ListObjectsV2": 1, "sagemaker:ListTrainingJobs": 2}
    assert cloud.reset_calls() == {"s3:ListObjectsV2": 1, "sagemaker:ListTrainingJobs": 2}
    assert cloud.calls() == {}


# -------------------------------------------------------------------------------------------- the CLI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_prints_the_connection_and_stops_on_ctrl_c(tmp_path):
    port = int(os.environ.get("RETRAIN_TEST_FAKE_CLOUD_CLI_PORT", "0")) or _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "fake_cloud"), "--port", str(port), "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        while not any(line.startswith("Ctrl-C") for line in lines):
            line = proc.stdout.readline()
            assert line, f"the fake cloud exited early: {lines}"
            lines.append(line.strip())
        export = next(line for line in lines if line.startswith("export AIRFLOW_CONN_AWS_DEFAULT="))
        conn = json.loads(export.split("=", 1)[1].strip("'"))
        assert conn == {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"region_name": "us-east-1", "endpoint_url": f"http://127.0.0.1:{port}"},
        }
        client = fake_cloud_module.FakeCloudClient(f"http://127.0.0.1:{port}")
        assert client.health()["status"] == "ok"
        # A second server on the same port fails with one clear line.
        second = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "fake_cloud"), "--port", str(port)], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in second.stderr
        # A job still running when the fake is stopped goes with it: no orphaned script.
        client.role_arn = client.bootstrap(BUCKET)
        for channel in ("train", "test"):
            client.client("s3").put_object(Bucket=BUCKET, Key=f"data/{channel}/a.parquet", Body=b"x")
        create_job(client, "orphan-1", SLEEPER)
        pid = wait_training(client, "orphan-1")["pid"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=bound(30)) == 0
    wait_for(lambda: not alive(pid), timeout=10)


def test_in_process_mode(tmp_path):
    handle = fake_cloud_module.start_fake_cloud(0, tmp_path, in_process=True, config={"starting_seconds": 0})
    try:
        assert handle.server is not None and handle.health()["url"] == handle.url
        assert handle.client("s3").list_buckets()["Buckets"] == []
        assert handle.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"] == json.dumps(handle.connection())
    finally:
        handle.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", handle.port), timeout=1).close()


# ------------------------------------------------------------------------- the Amazon provider's hooks


def test_amazon_provider_hooks_use_the_fake_through_an_airflow_connection(cloud, monkeypatch):
    """The provider's SageMakerHook and AwsLogsHook reach the fake through the connection's endpoint_url."""
    from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    for name, value in cloud.airflow_env("aws_fake").items():
        monkeypatch.setenv(name, value)
    request = create_job(cloud, "provider-1", "print('hello from the provider test')")
    hook = SageMakerHook(aws_conn_id="aws_fake")
    job = wait_for(lambda: (d := hook.describe_training_job("provider-1"))["TrainingJobStatus"] in TERMINAL and d, timeout=60)
    assert job["TrainingJobStatus"] == "Completed" and job["BillableTimeInSeconds"] >= 1
    assert hook.conn.meta.endpoint_url == cloud.url
    events = list(
        AwsLogsHook(aws_conn_id="aws_fake", region_name="us-east-1").get_log_events(
            "/aws/sagemaker/TrainingJobs", cloud.training_job("provider-1")["log_stream"]
        )
    )
    assert any("hello from the provider test" in e["message"] for e in events)
    # The hook's own pre-flight check of the channels' S3 URLs passes against the fake's S3.
    hook.check_training_config({**request, "TrainingJobName": "provider-2"})


def test_faults_from_the_environment():
    plan = fake_cloud_module.FaultPlan("sagemaker:CreateTrainingJob=ThrottlingException*2; s3:GetObject=AccessDenied")
    assert [(f["service"], f["operation"], f["error"], f["count"]) for f in plan.pending()] == [
        ("sagemaker", "CreateTrainingJob", "ThrottlingException", 2),
        ("s3", "GetObject", "AccessDenied", 1),
    ]
    assert plan.take("sagemaker", "CreateTrainingJob").error == "ThrottlingException"
    assert plan.take("sagemaker", "CreateTrainingJob") is not None
    assert plan.take("sagemaker", "CreateTrainingJob") is None
    with pytest.raises(ValueError, match="FAKE_CLOUD_FAULTS: 'CreateTrainingJob' is not"):
        fake_cloud_module.FaultPlan("CreateTrainingJob")


def test_the_fake_exits_when_the_process_that_started_it_dies(tmp_path):
    starter = (
        f"import sys, time; sys.path.insert(0, {str(ROOT / 'tests')!r}); from fakes import fake_cloud; "
        f"h = fake_cloud.start_fake_cloud(0, {str(tmp_path)!r}); print(h.process.pid, flush=True); time.sleep(300)"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    try:
        fake_pid = int(parent.stdout.readline())
        assert alive(fake_pid)
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: not alive(fake_pid), timeout=20)
