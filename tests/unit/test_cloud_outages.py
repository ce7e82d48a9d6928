"""A lost cloud: bounded client settings reach botocore and gRPC, an unreachable or silent endpoint fails
with an error naming the job, the trigger gives up after a few failed polls naming the job and the
outage, and a submitted job is in the cost ledger from submission on (docs/outages.md).

Endpoints: a closed port (nothing listening: refused) and a listener that accepts and never answers
(the kernel completes the handshake from the listen backlog; nothing ever reads or replies). No test
asserts on elapsed time: the timeouts are shortened through the connection (the supported override)
and the test asserts what reached the client.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from airflow.sdk.exceptions import TaskDeferred
from helpers import FAKE_ROLE_ARN as ROLE
from helpers import stage_sagemaker_job

from airflow_retrain.operators.training import TrainingJobFailed, TrainModelOperator
from airflow_retrain.runs import RunIdentity
from airflow_retrain.teardown.ledger import CostLedger
from airflow_retrain.training.base import TrainingJobNotFound
from airflow_retrain.training.sagemaker import (
    CONNECT_TIMEOUT_SECONDS,
    MAX_ATTEMPTS,
    READ_TIMEOUT_SECONDS,
    SageMakerCloudError,
    SageMakerTrainingBackend,
)
from airflow_retrain.training.vertex import VertexCloudError, VertexTrainingBackend
from airflow_retrain.triggers.training import TrainingJobTrigger

BUCKET = "retrain-outage-tests"
CONN = "aws_fake_outage"  # the `cloud` fixture points it at the fake cloud
JOB = "churn-outage-1"
DAG_ID = "churn_retrain"


@pytest.fixture
def closed_port():
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections (listen backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def aws_connection(monkeypatch, conn_id: str, port: int, **config_kwargs) -> None:
    extra = {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}
    if config_kwargs:
        extra["config_kwargs"] = config_kwargs
    conn = {"conn_type": "aws", "login": "x", "password": "y", "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def sagemaker(conn_id: str) -> SageMakerTrainingBackend:
    return SageMakerTrainingBackend(role_arn=ROLE, bucket=BUCKET, connection_id=conn_id)


def count_attempts(client) -> list[int]:
    sent: list[int] = []
    client.meta.events.register("before-send", lambda **_: sent.append(1))
    return sent


# -- SageMaker: what reaches botocore ------------------------------------------------------------


def test_every_sagemaker_client_gets_the_bounded_config(monkeypatch, closed_port):
    aws_connection(monkeypatch, "aws_bounded", closed_port)
    backend = sagemaker("aws_bounded")

    async def async_configs():  # the triggerer's clients (aiobotocore), through the same hooks
        configs = []
        for hook in (backend.hook, backend.logs_hook):
            async with await hook.get_async_conn() as client:
                configs.append(client.meta.config)
        return configs

    configs = [backend.sagemaker.meta.config, backend.logs.meta.config, *asyncio.run(async_configs())]
    for config in configs:
        assert (config.connect_timeout, config.read_timeout) == (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
        assert config.retries == {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS}


def test_the_connections_config_kwargs_override_the_bounds(monkeypatch, closed_port):
    aws_connection(monkeypatch, "aws_tuned", closed_port, read_timeout=7,
                   retries={"mode": "standard", "total_max_attempts": 2})
    config = sagemaker("aws_tuned").sagemaker.meta.config
    assert (config.connect_timeout, config.read_timeout) == (CONNECT_TIMEOUT_SECONDS, 7)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}


def test_closed_port_fails_after_the_configured_attempts_naming_the_job(monkeypatch, closed_port):
    aws_connection(monkeypatch, "aws_closed", closed_port)
    backend = sagemaker("aws_closed")
    sent = count_attempts(backend.sagemaker)
    with pytest.raises(SageMakerCloudError) as err:
        backend.describe(JOB)
    message = str(err.value)
    assert message.startswith(f"DescribeTrainingJob (training job {JOB}): cannot reach AWS after 3 attempts "
                              f"({CONNECT_TIMEOUT_SECONDS} s to connect and {READ_TIMEOUT_SECONDS} s to answer, each)")
    assert "Airflow connection 'aws_closed'" in message
    assert len(sent) == MAX_ATTEMPTS


def test_silent_listener_fails_with_the_connections_timeouts_naming_the_job(monkeypatch, silent_port):
    aws_connection(monkeypatch, "aws_silent", silent_port, connect_timeout=1, read_timeout=0.3,
                   retries={"mode": "standard", "total_max_attempts": 2})
    backend = sagemaker("aws_silent")
    sent = count_attempts(backend.sagemaker)
    with pytest.raises(SageMakerCloudError) as err:
        backend.describe(JOB)
    message = str(err.value)
    assert f"(training job {JOB}): cannot reach AWS after 2 attempts (1 s to connect and 0.3 s to answer" in message
    assert "Read timeout" in message
    assert len(sent) == 2


# -- Vertex: what reaches the gRPC call -----------------------------------------------------------


def vertex(monkeypatch, port: int, **kwargs) -> VertexTrainingBackend:
    conn = {"conn_type": "google_cloud_platform",
            "extra": {"project": "retrain-proj", "api_endpoint": f"127.0.0.1:{port}", "api_endpoint_insecure": True,
                      "is_anonymous": True}}
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_OUTAGE", json.dumps(conn))
    return VertexTrainingBackend(region="us-central1", staging_bucket="gs://retrain-vx",
                                 connection_id="google_outage", **kwargs)


def record_calls(monkeypatch, backend, method: str) -> list[dict]:
    seen: list[dict] = []
    real = getattr(backend.client, method)

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(backend.client, method, spy)
    return seen


def test_vertex_calls_carry_the_default_deadline(monkeypatch, closed_port):
    backend = vertex(monkeypatch, closed_port)
    assert backend.call_timeout == 30.0 and backend.config()["call_timeout"] == 30.0
    bounds = backend._bounds()
    assert bounds["timeout"] == 30.0 and bounds["retry"].timeout == 30.0
    assert backend._bounds(retry=False) == {"retry": None, "timeout": 30.0}  # a create is never retried


@pytest.mark.parametrize("port_fixture", ["closed_port", "silent_port"])
def test_vertex_unreachable_or_silent_fails_within_the_deadline_naming_the_job(monkeypatch, request, port_fixture):
    backend = vertex(monkeypatch, request.getfixturevalue(port_fixture), call_timeout=1.0)
    calls = record_calls(monkeypatch, backend, "list_custom_jobs")
    with pytest.raises(VertexCloudError) as err:
        backend.describe(JOB)
    assert str(err.value).startswith(
        f"ListCustomJobs (Vertex AI custom job {JOB}): no answer from Vertex AI within the call deadline of 1 s"
    )
    assert calls and calls[0]["timeout"] == 1.0 and calls[0]["retry"].timeout == 1.0


# -- the trigger ------------------------------------------------------------------------------------


async def collect(trigger) -> list:
    return [event async for event in trigger.run()]


async def test_trigger_gives_up_on_a_lost_cloud_naming_the_job_and_the_outage(monkeypatch, closed_port):
    aws_connection(monkeypatch, "aws_lost", closed_port, retries={"mode": "standard", "total_max_attempts": 1})
    trigger = TrainingJobTrigger(backend="sagemaker", backend_config=sagemaker("aws_lost").config(),
                                 job_name=JOB, poll_interval=0.01, max_consecutive_errors=2)
    (event,) = await asyncio.wait_for(collect(trigger), 60)
    payload = event.payload
    assert payload["status"] == "error" and payload["job_name"] == JOB
    assert payload["message"].startswith(f"lost the sagemaker cloud while waiting for training job {JOB}: "
                                         "2 polls in a row failed over ")
    assert "cannot reach AWS" in payload["message"] and "it was never seen running" in payload["message"]
    assert payload["last_job"] is None


def test_trigger_default_tolerance_is_a_few_polls():
    assert TrainingJobTrigger(backend="local", backend_config={}, job_name=JOB).max_consecutive_errors == 5


# -- the ledger from submission on ------------------------------------------------------------------


@pytest.fixture
def train_op(tmp_path):
    return TrainModelOperator(
        task_id="train", pipeline="churn", entry_point=str(stage_sagemaker_job(tmp_path)),
        channels={"train": str(tmp_path / "data")}, hyperparameters={"fake_duration_s": 30},
        backend="sagemaker",
        backend_config={"role_arn": ROLE, "bucket": BUCKET, "prefix": "o", "connection_id": CONN},
        instance_type="ml.m5.xlarge", max_runtime_seconds=600, poll_interval=0.1, deferrable=True,
    )


def ledger_row(job_name: str) -> dict | None:
    rows = CostLedger.from_connection("retrain_warehouse").rows()
    return next((r for r in rows if r["entry_id"] == f"training_run:sagemaker:{job_name}"), None)


def test_submitted_job_is_in_the_ledger_then_ledgered_with_its_last_known_time_when_the_cloud_forgets_it(
    cloud, train_op, make_context, monkeypatch
):
    run_id = f"manual__outage_{id(train_op)}"  # a run of its own: the session's ledger is shared
    ctx = make_context(DAG_ID, run_id)
    with pytest.raises(TaskDeferred) as deferred:
        train_op.execute(ctx)
    job_name = RunIdentity("churn", DAG_ID, run_id).job_name(1)
    row = ledger_row(job_name)
    assert row is not None, "no ledger row right after submit"
    assert row["source"] == "training_run" and row["pipeline"] == "churn" and row["instance_type"] == "ml.m5.xlarge"
    assert row["details"]["phase"] == "submitted" and row["details"]["run_key"] == RunIdentity(
        "churn", DAG_ID, run_id).run_key

    # The trigger sees the job running, then the cloud forgets it.
    trigger = deferred.value.trigger
    trigger.poll_interval = 0.05
    backend = trigger.training_backend
    real = backend.adescribe
    seen: list = []

    async def forgetful(name):
        if len(seen) >= 3:
            raise TrainingJobNotFound(f"no SageMaker training job {name!r} in us-east-1")
        job = await real(name)
        if job.state.value == "Running":
            seen.append(job)
        return job

    monkeypatch.setattr(backend, "adescribe", forgetful)
    monkeypatch.setattr(trigger, "next_poll_in", lambda created_at: 0.3)
    (event,) = asyncio.run(asyncio.wait_for(collect(trigger), 60))
    assert event.payload["status"] == "error"
    assert f"training job {job_name} vanished from the sagemaker backend after it was last seen Running" in (
        event.payload["message"])
    assert event.payload["last_job"]["state"] == "Running"

    with pytest.raises(TrainingJobFailed, match=f"waiting for training job {job_name} failed: training job "):
        train_op.execute_complete(ctx, event=event.payload)
    row = ledger_row(job_name)
    assert row["details"]["phase"] == "lost" and row["details"]["state"] == "Running"
    assert "vanished" in row["details"]["note"]
    # Its last known time: the elapsed time since it started, priced like a finished job.
    assert row["seconds"] > 0 and row["usd"] > 0
