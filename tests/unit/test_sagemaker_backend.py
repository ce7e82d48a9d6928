"""SageMakerTrainingBackend against the fake cloud (``scripts/fake_cloud``, the one ``make fake-cloud``
runs), through the real boto3 clients of the Amazon provider's hooks and an Airflow AWS connection:
submit, describe, logs, stop, outputs, cost, tags, bad inputs. Jobs run ``tests/fixtures/sagemaker_job.py``
(steered by its hyperparameters); cloud errors are the fake's injected faults."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import tarfile
import time

import pytest
from helpers import FAKE_ROLE_ARN as ROLE
from helpers import SAGEMAKER_JOB_SCRIPT as JOB_SCRIPT
from helpers import alive, wait_for

from airflow_retrain.training.base import (
    JobState,
    TrainingInputError,
    TrainingJobExists,
    TrainingJobNotFound,
    TrainingJobRequest,
    TrainingOutputsMissing,
)
from airflow_retrain.training.sagemaker import SageMakerCloudError, SageMakerTrainingBackend

BUCKET = "retrain-tests"
CONN = "aws_fake_sm"


@pytest.fixture
def clients(cloud):
    return {"s3": cloud.client("s3"), "sagemaker": cloud.client("sagemaker")}


@pytest.fixture
def backend(clients) -> SageMakerTrainingBackend:
    # The fake_cloud fixture's reset stops whatever a test leaves running.
    return SageMakerTrainingBackend(role_arn=ROLE, bucket=BUCKET, prefix="unit", connection_id=CONN, max_attempts=2)


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "src"
    (folder / "__pycache__").mkdir(parents=True)
    shutil.copy(JOB_SCRIPT, folder / "train.py")
    (folder / "contract.py").write_text("X = 1\n")
    (folder / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"junk")
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "part-0.parquet").write_bytes(b"PAR1")
    return folder / "train.py", data


def request(source, name="churn-abc123-1", duration=0.0, channels=None, **hps) -> TrainingJobRequest:
    entry, data = source
    return TrainingJobRequest(
        job_name=name,
        entry_point=str(entry),
        channels=channels or {"train": str(data)},
        hyperparameters={"fake_duration_s": duration, "max_depth": 4, "objective": "binary:logistic", **hps},
        instance_type="ml.m5.xlarge",
        instance_count=2,
        max_runtime_seconds=600,
        tags={"retrain:dag-id": "churn_retrain", "retrain:run-key": "abc123", "retrain:owner": "ml platform"},
    )


def finished(backend, name="churn-abc123-1", timeout=30):
    return wait_for(lambda: (j := backend.describe(name)).state.terminal and j, timeout)


def _keys(s3, prefix):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def test_submit_builds_the_framework_container_request(backend, clients, source):
    entry, data = source
    clients["s3"].create_bucket(Bucket="shared-data")
    clients["s3"].put_object(Bucket="shared-data", Key="churn/test/part-0.parquet", Body=b"PAR1")
    job = backend.submit(request(source, duration=5, channels={"train": str(data), "test": "s3://shared-data/churn/test"}))
    assert job.state == JobState.PENDING
    desc = clients["sagemaker"].describe_training_job(TrainingJobName="churn-abc123-1")
    hps = desc["HyperParameters"]
    assert json.loads(hps["sagemaker_program"]) == "train.py"
    submit_dir = json.loads(hps["sagemaker_submit_directory"])
    assert submit_dir == f"s3://{BUCKET}/unit/churn-abc123-1/source/sourcedir.tar.gz"
    # Every value JSON-encoded, as the SageMaker SDK does: the container decodes them back.
    assert (hps["max_depth"], hps["objective"]) == ("4", '"binary:logistic"')
    tar = tarfile.open(fileobj=io.BytesIO(clients["s3"].get_object(Bucket=BUCKET, Key=submit_dir.split("/", 3)[3])
                                          ["Body"].read()))
    assert sorted(tar.getnames()) == ["contract.py", "train.py"]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in desc["InputDataConfig"]}
    assert channels == {"train": f"s3://{BUCKET}/unit/churn-abc123-1/input/train/", "test": "s3://shared-data/churn/test/"}
    assert _keys(clients["s3"], "unit/churn-abc123-1/input/") == ["unit/churn-abc123-1/input/train/part-0.parquet"]
    assert desc["AlgorithmSpecification"]["TrainingImage"] == (
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    )
    assert desc["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30}
    assert desc["StoppingCondition"] == {"MaxRuntimeInSeconds": 600}
    assert desc["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/unit"}
    assert desc["RoleArn"] == ROLE
    assert "VpcConfig" not in desc
    tags = clients["sagemaker"].list_tags(ResourceArn=desc["TrainingJobArn"])["Tags"]
    assert {t["Key"]: t["Value"] for t in tags}["retrain:run-key"] == "abc123"
    # The fake ran the packed script with both channels in the container layout.
    running = wait_for(lambda: (i := backend.describe("churn-abc123-1")).details["secondary_status"] == "Training" and i, 20)
    assert running.state == JobState.RUNNING


def test_vpc_kms_spot_and_custom_image(clients, source):
    backend = SageMakerTrainingBackend(
        role_arn=ROLE, bucket=BUCKET, connection_id=CONN, image="123.dkr.ecr.us-east-1.amazonaws.com/mine:1",
        subnets=["subnet-1"], security_group_ids=["sg-1"], kms_key_id="alias/retrain", spot=True, volume_size_gb=50,
    )
    backend.submit(request(source))
    desc = clients["sagemaker"].describe_training_job(TrainingJobName="churn-abc123-1")
    assert desc["AlgorithmSpecification"]["TrainingImage"] == "123.dkr.ecr.us-east-1.amazonaws.com/mine:1"
    assert desc["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    assert desc["ResourceConfig"]["VolumeKmsKeyId"] == desc["OutputDataConfig"]["KmsKeyId"] == "alias/retrain"
    assert desc["ResourceConfig"]["VolumeSizeInGB"] == 50
    assert desc["StoppingCondition"] == {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200}
    assert desc["EnableManagedSpotTraining"] is True
    assert finished(backend).state == JobState.COMPLETED


@pytest.mark.slow
def test_states_logs_outputs_and_cost(cloud, backend, source, tmp_path):
    cloud.configure(starting_seconds=2)
    _ = (backend.sagemaker, backend.logs, backend.staging_root.fs)  # clients built before the clock starts
    backend.submit(request(source, duration=1.5))
    assert backend.describe("churn-abc123-1").details["secondary_status"] == "Starting"
    assert backend.read_logs("churn-abc123-1", 0) == ("", 0)  # no stream yet
    running = wait_for(lambda: (j := backend.describe("churn-abc123-1")).details["secondary_status"] == "Training" and j, 10)
    assert running.state == JobState.RUNNING
    first = wait_for(lambda: (r := backend.read_logs("churn-abc123-1", 0))[0].count("\n") >= 2 and r, 10)
    text, offset = first
    assert text.splitlines()[0].startswith("Invoking script with the following command: ")
    assert text.splitlines()[1] == "epoch 1 loss 0.52"
    done = finished(backend)
    assert done.state == JobState.COMPLETED
    assert done.billable_seconds >= 2 and done.instance_count == 2
    rest, end = backend.read_logs("churn-abc123-1", offset)
    assert rest.splitlines()[-2:] == ["epoch 2 loss 0.41", "Training complete"]
    assert backend.read_logs("churn-abc123-1", end) == ("", end)  # nothing read twice

    outputs = backend.fetch_outputs("churn-abc123-1", tmp_path / "out")
    assert outputs.model_uri == f"file://{tmp_path / 'out' / 'model'}"
    assert json.loads((tmp_path / "out" / "output" / "metrics.json").read_text())["metrics"]["roc_auc"] == 0.91
    model_dir = tmp_path / "out" / "model"
    assert (model_dir / "model.json").exists() and (model_dir / "sub" / "extra.txt").exists()

    cost = backend.cost(done)
    assert (cost.usd, cost.hourly_price_usd, cost.region, cost.price_source) == (
        round(done.billable_seconds / 3600 * 2 * 0.23, 6), 0.23, "us-east-1", "table"
    )


@pytest.mark.slow
def test_spot_savings_from_billable_seconds(cloud, clients, source):
    cloud.configure(spot_billable_fraction=0.3, min_training_seconds=3)
    backend = SageMakerTrainingBackend(role_arn=ROLE, bucket=BUCKET, connection_id=CONN, spot=True)
    backend.submit(request(source))
    job = finished(backend)
    assert job.state == JobState.COMPLETED
    cost = backend.cost(job)
    assert cost.spot and cost.training_seconds >= 3 and cost.seconds == pytest.approx(cost.training_seconds * 0.3, abs=1)
    assert cost.spot_savings_usd == pytest.approx(cost.on_demand_usd - cost.usd)
    assert cost.spot_savings_usd > 0


@pytest.mark.slow
def test_stop_running_job_and_stop_is_idempotent(cloud, backend, source):
    backend.submit(request(source, duration=30))
    pid = wait_for(lambda: cloud.training_job("churn-abc123-1")["script_pids"], 20)[0]
    assert backend.stop("churn-abc123-1").state in (JobState.STOPPING, JobState.STOPPED)
    stopped = wait_for(lambda: (j := backend.describe("churn-abc123-1")).state == JobState.STOPPED and j, 15)
    assert backend.stop("churn-abc123-1").state == JobState.STOPPED
    assert stopped.billable_seconds >= 1
    assert not alive(pid)  # the fake ended the script


@pytest.mark.slow
def test_find_jobs_by_every_tag(backend, source):
    backend.submit(request(source, name="churn-abc123-1"))
    other = request(source, name="churn-zzz999-1")
    other = TrainingJobRequest(**{**other.__dict__, "tags": {**other.tags, "retrain:run-key": "zzz999"}})
    backend.submit(other)
    found = backend.find_jobs({"retrain:dag-id": "churn_retrain", "retrain:run-key": "zzz999"})
    assert [j.job_name for j in found] == ["churn-zzz999-1"]
    assert found[0].tags["retrain:owner"] == "ml platform"
    assert {j.job_name for j in backend.find_jobs({"retrain:dag-id": "churn_retrain"})} == {
        "churn-abc123-1", "churn-zzz999-1"
    }
    assert backend.find_jobs({"retrain:run-key": "nope"}) == []


def test_failed_job_quotes_failure_reason_and_is_permanent(cloud, backend, source):
    backend.submit(request(source, fake_outcome="Failed", fake_failure_reason="ValueError: bad column"))
    job = finished(backend)
    assert (job.state, job.failure_reason) == (JobState.FAILED, "AlgorithmError: ValueError: bad column")
    assert backend.is_permanent_failure(job)
    cloud.fail_next_jobs("InternalServerError: We encountered an internal error.", phase="Starting")
    backend.submit(request(source, name="churn-abc123-2"))
    assert not backend.is_permanent_failure(finished(backend, "churn-abc123-2"))


@pytest.mark.slow
def test_outputs_missing_from_s3_name_the_uri(backend, clients, source, tmp_path):
    backend.submit(request(source))
    assert finished(backend).state == JobState.COMPLETED
    clients["s3"].delete_object(Bucket=BUCKET, Key="unit/churn-abc123-1/output/model.tar.gz")  # e.g. a lifecycle rule
    with pytest.raises(TrainingOutputsMissing, match=r"completed but its model .* missing from S3: s3://retrain-tests/unit/"
                                           r"churn-abc123-1/output/model.tar.gz \(NoSuchKey"):
        backend.fetch_outputs("churn-abc123-1", tmp_path / "out")


@pytest.mark.slow
def test_duplicate_name_and_unknown_job(cloud, backend, clients, source):
    backend.submit(request(source))
    with pytest.raises(TrainingJobExists):
        backend.submit(request(source))
    # SageMaker refused the second create; one job exists and its staged inputs are kept.
    assert cloud.calls()["sagemaker:CreateTrainingJob"] == 2
    assert [j.job_name for j in backend.find_jobs({"retrain:run-key": "abc123"})] == ["churn-abc123-1"]
    assert _keys(clients["s3"], "unit/churn-abc123-1/source/") == ["unit/churn-abc123-1/source/sourcedir.tar.gz"]
    with pytest.raises(TrainingJobNotFound, match="nope-1"):
        backend.describe("nope-1")


def test_cleanup_removes_staged_inputs_only(backend, clients, source):
    backend.submit(request(source))
    assert finished(backend).state == JobState.COMPLETED
    removed = backend.cleanup("churn-abc123-1")
    assert removed == [f"s3://{BUCKET}/unit/churn-abc123-1/source/", f"s3://{BUCKET}/unit/churn-abc123-1/input/"]
    assert _keys(clients["s3"], "unit/churn-abc123-1/") == [
        "unit/churn-abc123-1/output/model.tar.gz", "unit/churn-abc123-1/output/output.tar.gz"
    ]


def test_link_params_are_the_hooks_region_and_partition(backend):
    assert backend.job_link_params("churn-abc123-1") == {
        "region_name": "us-east-1", "aws_partition": "aws", "job_name": "churn-abc123-1"
    }


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["role_arn", "bucket"])
def test_missing_role_or_bucket_names_the_field(field):
    kwargs = {"role_arn": ROLE, "bucket": BUCKET, field: ""}
    with pytest.raises(TrainingInputError, match=f"training.sagemaker.{field} is required"):
        SageMakerTrainingBackend(**kwargs)


def test_unknown_image_region_names_the_field(clients, source):
    backend = SageMakerTrainingBackend(role_arn=ROLE, bucket=BUCKET, connection_id=CONN, region="xx-nowhere-1")
    with pytest.raises(TrainingInputError, match=r"training.sagemaker.image: not set and .*'xx-nowhere-1'"):
        _ = backend.image_uri


def test_resource_limit_exceeded_quotes_reason_and_leaves_nothing(cloud, backend, clients, source):
    cloud.inject_fault("CreateTrainingJob", "ResourceLimitExceeded", count=10,
                       message="The account-level service limit 'ml.m5.xlarge for training job usage' is 0 Instances")
    with pytest.raises(SageMakerCloudError) as e:
        backend.submit(request(source))
    message = str(e.value)
    assert "ResourceLimitExceeded: The account-level service limit 'ml.m5.xlarge" in message
    assert "training.resources.instance_count" in message and "training.pool" in message
    assert _keys(clients["s3"], "unit/") == []  # staged source and inputs removed again
    assert clients["sagemaker"].list_training_jobs()["TrainingJobSummaries"] == []


def test_access_denied_names_connection_and_role(cloud, backend, source):
    cloud.inject_fault("CreateTrainingJob", "AccessDeniedException", count=10,
                       message="User is not authorized to perform: sagemaker:CreateTrainingJob")
    with pytest.raises(TrainingInputError) as e:
        backend.submit(request(source))
    assert "AccessDeniedException: User is not authorized" in str(e.value)
    assert f"Airflow connection '{CONN}'" in str(e.value) and "training.sagemaker.role_arn" in str(e.value)


def test_role_the_cloud_cannot_assume_names_the_field(backend, source):
    bad = SageMakerTrainingBackend(role_arn="arn:aws:iam::123456789012:role/missing", bucket=BUCKET, prefix="unit",
                                   connection_id=CONN, max_attempts=1)
    with pytest.raises(TrainingInputError, match=r"training.sagemaker.role_arn: ValidationException: Could not assume"):
        bad.submit(request(source))


@pytest.mark.slow
def test_throttling_is_retried_with_backoff(cloud, clients, source):
    backend = SageMakerTrainingBackend(role_arn=ROLE, bucket=BUCKET, connection_id=CONN, max_attempts=4,
                                       retry_mode="standard")
    cloud.inject_fault("CreateTrainingJob", "ThrottlingException", count=2, message="Rate exceeded")
    assert backend.submit(request(source)).job_name == "churn-abc123-1"
    assert cloud.calls()["sagemaker:CreateTrainingJob"] == 3
    finished(backend)


def test_throttling_that_persists_is_one_clear_error(cloud, clients, source):
    backend = SageMakerTrainingBackend(role_arn=ROLE, bucket=BUCKET, connection_id=CONN, max_attempts=2,
                                       retry_mode="standard")
    cloud.inject_fault("CreateTrainingJob", "ThrottlingException", count=10, message="Rate exceeded")
    with pytest.raises(SageMakerCloudError, match=r"still throttled after 2 attempts .*ThrottlingException: Rate"):
        backend.submit(request(source))


def test_unreachable_cloud_names_the_connection(monkeypatch, source):
    conn = json.dumps({"conn_type": "aws", "login": "x", "password": "y",
                       "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"}})
    monkeypatch.setenv("AIRFLOW_CONN_AWS_NOWHERE", conn)
    backend = SageMakerTrainingBackend(role_arn=ROLE, bucket=BUCKET, connection_id="aws_nowhere", max_attempts=1)
    started = time.monotonic()
    with pytest.raises(SageMakerCloudError, match=r"cannot reach AWS .*connection 'aws_nowhere'.*endpoint_url"):
        backend.submit(request(source))
    assert time.monotonic() - started < 30


def test_channels_as_file_uris_and_unsupported_schemes(backend, clients, source):
    entry, data = source
    base = request(source)
    job = TrainingJobRequest(**{**base.__dict__, "channels": {"train": data.as_uri()}})
    backend.submit(job)
    assert _keys(clients["s3"], "unit/churn-abc123-1/input/") == ["unit/churn-abc123-1/input/train/part-0.parquet"]
    bad = TrainingJobRequest(**{**base.__dict__, "job_name": "churn-abc123-2", "channels": {"train": "gs://b/x"}})
    with pytest.raises(TrainingInputError, match=r"channel 'train' at gs://b/x is neither s3:// nor a local folder"):
        backend.submit(bad)
    assert _keys(clients["s3"], "unit/churn-abc123-2/") == []  # the staged source was removed again


def test_async_describe_and_logs_match_the_sync_ones_and_offsets_survive_a_new_backend(backend, source):
    backend.submit(request(source, duration=0.5))
    done = finished(backend)
    whole, end = backend.read_logs("churn-abc123-1", 0)
    lines = whole.splitlines()
    assert lines[-1] == "Training complete" and end == len(lines)

    async def in_the_triggerer(fresh):
        job = await fresh.adescribe("churn-abc123-1")
        first = await fresh.aread_logs("churn-abc123-1", 0)
        again = await fresh.aread_logs("churn-abc123-1", first[1])
        with pytest.raises(TrainingJobNotFound, match="nope-1"):
            await fresh.adescribe("nope-1")
        stopped = await fresh.astop("churn-abc123-1")  # terminal: a no-op
        return job, first, again, stopped

    fresh = SageMakerTrainingBackend(**backend.config())
    job, first, again, stopped = asyncio.run(in_the_triggerer(fresh))
    assert (job.state, job.billable_seconds, job.tags) == (done.state, done.billable_seconds, done.tags)
    assert first == (whole, end) and again == ("", end)
    assert stopped.state == JobState.COMPLETED
    # A process that never read this log (a restarted triggerer) resumes from the line count alone.
    cold = SageMakerTrainingBackend(**backend.config())
    assert cold.read_logs("churn-abc123-1", 2) == ("".join(line + "\n" for line in lines[2:]), end)


@pytest.mark.parametrize(
    ("quoted", "field"),
    [
        ("ValidationException: Could not assume role arn:aws:iam::1:role/x", "training.sagemaker.role_arn"),
        ("ValidationException: Invalid InstanceType ml.nope", "training.resources.instance_type"),
        ("ValidationException: Subnet subnet-1 does not exist", "training.sagemaker.subnets"),
        ("ValidationException: MaxRuntimeInSeconds must be <= 2419200", "training.resources.max_runtime_seconds"),
        ("NoSuchBucket: The specified bucket does not exist", "training.sagemaker.bucket"),
        ("AccessDeniedException: not authorized", "training.sagemaker.role_arn"),
        ("SomethingNew: never seen", "the training request"),
    ],
)
def test_cloud_refusals_name_the_field_from_the_error_table(quoted, field):
    backend = SageMakerTrainingBackend(role_arn=ROLE, bucket=BUCKET, connection_id=CONN)
    assert backend.error_field(quoted).split(" (")[0] == field
