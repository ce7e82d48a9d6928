"""TrainingJobTrigger: serialize round trip, async run through each state, timeout, errors, on_kill;
and TrainModelOperator's deferral (TaskDeferred), its resume, its budget and retry rules -- against the
fake cloud (``scripts/fake_cloud``) running ``tests/fixtures/sagemaker_job.py``."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from helpers import FAKE_ROLE_ARN as ROLE
from helpers import bound, stage_sagemaker_job, wait_for

from airflow_retrain.operators.training import TrainingJobFailed, TrainModelOperator
from airflow_retrain.runs import RunIdentity
from airflow_retrain.training.base import JobState, TrainingJobRequest
from airflow_retrain.training.sagemaker import SageMakerTrainingBackend
from airflow_retrain.triggers.training import TrainingJobTrigger

BUCKET = "retrain-trigger-tests"
CONN = "aws_fake_trigger"
CONFIG = {"role_arn": ROLE, "bucket": BUCKET, "prefix": "t", "connection_id": CONN}
DAG_ID = "churn_retrain"


@pytest.fixture
def backend(cloud) -> SageMakerTrainingBackend:
    return SageMakerTrainingBackend(**CONFIG)


def creates(cloud) -> int:
    return cloud.calls().get("sagemaker:CreateTrainingJob", 0)


@pytest.fixture
def entry(tmp_path) -> Path:
    return stage_sagemaker_job(tmp_path)


def submit(backend, entry, name="churn-run-1", **hps):
    """Submit as the worker does: outside any event loop (the provider's s3fs ``get_fs`` runs
    ``asyncio.run``, so it cannot build a filesystem inside the async tests' loop)."""
    request = TrainingJobRequest(
        job_name=name,
        entry_point=str(entry),
        channels={"train": str(entry.parent.parent / "data")},
        hyperparameters=hps,
        instance_type="ml.m5.xlarge",
        tags={"retrain:dag-id": DAG_ID},
    )
    with ThreadPoolExecutor(1) as worker:
        return worker.submit(backend.submit, request).result()


async def collect(trigger) -> list:
    return [event async for event in trigger.run()]


def test_serialize_round_trip_carries_names_only():
    trigger = TrainingJobTrigger(backend="sagemaker", backend_config=CONFIG, job_name="churn-run-1",
                                 poll_interval=5, deadline=123.0, log_offset=42)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_retrain.triggers.training.TrainingJobTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # JSON-able
    assert kwargs["backend_config"] == CONFIG  # names and a connection id; no credentials
    again = TrainingJobTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)


@pytest.mark.slow
async def test_run_streams_logs_and_transitions_then_completes(cloud, backend, entry, caplog, capsys):
    cloud.configure(starting_seconds=1)
    trigger = TrainingJobTrigger(backend="sagemaker", backend_config=CONFIG, job_name="churn-run-1",
                                 poll_interval=0.2, deadline=time.time() + 60)
    _ = (trigger.training_backend.sagemaker, trigger.training_backend.logs)  # clients built before the clock
    submit(backend, entry, fake_duration_s=3)
    events = await asyncio.wait_for(collect(trigger), 30)
    assert len(events) == 1
    event = events[0].payload
    assert event["status"] == "done"
    assert event["job"]["state"] == "Completed" and event["job"]["billable_seconds"] >= 3
    assert event["transitions"][0] == "Training job churn-run-1: Pending (Starting)"
    assert "Training job churn-run-1: Running (Training)" in event["transitions"]
    assert event["transitions"][-1] == "Training job churn-run-1: Completed (Completed)"
    assert event["log_tail"][0].startswith("Invoking script with the following command: ")
    assert event["log_tail"][1:] == ["epoch 1 loss 0.52", "epoch 2 loss 0.41", "Training complete"]
    logged = caplog.text + capsys.readouterr().out
    assert "[churn-run-1] epoch 1 loss 0.52" in logged  # the triggerer's log, as lines come


async def test_run_reports_failure_with_reason(backend, entry):
    submit(backend, entry, fake_duration_s=0.5, fake_outcome="Failed", fake_failure_reason="boom")
    trigger = TrainingJobTrigger(backend="sagemaker", backend_config=CONFIG, job_name="churn-run-1", poll_interval=0.2)
    (event,) = await asyncio.wait_for(collect(trigger), 30)
    assert event.payload["job"]["state"] == "Failed"
    assert event.payload["job"]["failure_reason"] == "AlgorithmError: boom"
    assert event.payload["log_tail"][-1] == "ERROR: boom"


@pytest.mark.slow
async def test_deadline_stops_the_job(backend, entry):
    submit(backend, entry, fake_duration_s=60)
    trigger = TrainingJobTrigger(backend="sagemaker", backend_config=CONFIG, job_name="churn-run-1",
                                 poll_interval=0.2, deadline=time.time() + 0.5)
    (event,) = await asyncio.wait_for(collect(trigger), 30)
    assert event.payload["status"] == "timeout"
    assert event.payload["job"]["state"] in ("Stopping", "Stopped")
    assert wait_for(lambda: backend.describe("churn-run-1").state == JobState.STOPPED, 15)


async def test_unknown_job_is_an_error_event(backend):
    trigger = TrainingJobTrigger(backend="sagemaker", backend_config=CONFIG, job_name="gone-1", poll_interval=0.1)
    (event,) = await asyncio.wait_for(collect(trigger), 30)
    assert event.payload["status"] == "error" and "gone-1" in event.payload["message"]


@pytest.mark.slow
async def test_transient_errors_are_polled_through_then_give_up(monkeypatch, backend, entry):
    submit(backend, entry, fake_duration_s=0.3)
    trigger = TrainingJobTrigger(backend="sagemaker", backend_config=CONFIG, job_name="churn-run-1",
                                 poll_interval=0.05, max_consecutive_errors=3)
    calls = {"n": 0}
    real = trigger.training_backend.adescribe

    async def flaky(name):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("connection reset")
        return await real(name)

    monkeypatch.setattr(trigger.training_backend, "adescribe", flaky)
    (event,) = await asyncio.wait_for(collect(trigger), 30)
    assert event.payload["status"] == "done"

    dead = TrainingJobTrigger(backend="sagemaker", backend_config=CONFIG, job_name="churn-run-1",
                              poll_interval=0.01, max_consecutive_errors=3)

    async def down(name):
        raise RuntimeError("down")

    monkeypatch.setattr(dead.training_backend, "adescribe", down)
    (event,) = await asyncio.wait_for(collect(dead), 30)
    assert event.payload["status"] == "error"
    assert "lost the sagemaker cloud while waiting for training job churn-run-1: 3 polls in a row failed" in (
        event.payload["message"])
    assert "(last error: down)" in event.payload["message"]


@pytest.mark.slow
async def test_on_kill_stops_the_job(backend, entry):
    submit(backend, entry, fake_duration_s=60)
    trigger = TrainingJobTrigger(backend="sagemaker", backend_config=CONFIG, job_name="churn-run-1")
    await trigger.on_kill()
    assert wait_for(lambda: backend.describe("churn-run-1").state == JobState.STOPPED, 15)


# -- the operator ---------------------------------------------------------------------------------


@pytest.fixture
def make_op(entry, monkeypatch):
    # A deployment with a triggerer turns deferral on for every provider's operators, ours included.
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    monkeypatch.delenv("RETRAIN_DEFERRABLE", raising=False)
    monkeypatch.delenv("AIRFLOW__RETRAIN__DEFERRABLE", raising=False)

    def _make(**kwargs):
        params = {
            "task_id": "train",
            "pipeline": "churn",
            "entry_point": str(entry),
            "channels": {"train": str(entry.parent.parent / "data")},
            "hyperparameters": {"fake_duration_s": 1},
            "backend": "sagemaker",
            "backend_config": CONFIG,
            "instance_type": "ml.m5.xlarge",
            "max_runtime_seconds": 600,
            "poll_interval": 0.2,
            **kwargs,
        }
        return TrainModelOperator(**params)

    return _make


def test_deferrable_defaults_to_operators_default_deferrable(monkeypatch, make_op, backend):
    assert make_op().should_defer()  # the fixture's deployment turned [operators] default_deferrable on
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert not make_op().should_defer()
    assert make_op(deferrable=True).should_defer()  # an explicit value wins, as on the providers' operators
    monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
    assert not make_op().should_defer()  # Airflow's default: a deployment may have no triggerer
    assert make_op(deferrable=None).deferrable is None  # read on the worker that runs the task, not at parse


def test_local_backend_never_defers(make_op):
    assert not make_op(backend="local", backend_config=None).should_defer()
    assert not make_op(backend="local", backend_config=None, deferrable=True).should_defer()


@pytest.mark.parametrize("variable", ["RETRAIN_DEFERRABLE", "AIRFLOW__RETRAIN__DEFERRABLE"])
def test_retired_deferrable_switch_still_works_with_a_warning(monkeypatch, make_op, backend, variable):
    from airflow.exceptions import AirflowProviderDeprecationWarning

    monkeypatch.setenv(variable, "false")
    with pytest.warns(AirflowProviderDeprecationWarning,
                      match=r"deprecated .* set \[operators\] default_deferrable \(AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=False\)"):
        assert not make_op().should_defer()  # over [operators] default_deferrable = True, for one more release
    assert make_op(deferrable=True).should_defer()


@pytest.mark.slow
def test_defers_after_submit_then_completes(monkeypatch, cloud, make_op, make_context, backend):
    op = make_op(hyperparameters={"fake_duration_s": 4})
    ctx = make_context(DAG_ID, "manual__defer")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    assert deferred.value.method_name == "execute_complete"
    assert isinstance(trigger, TrainingJobTrigger)
    assert trigger.backend_config.items() >= CONFIG.items()
    assert not {"aws_access_key_id", "aws_secret_access_key", "password"} & set(trigger.backend_config)
    job_name = RunIdentity("churn", DAG_ID, "manual__defer").job_name(1)
    assert trigger.job_name == job_name == ctx["ti"].xcoms["job_name"]
    # The links' parameters, formatted by the Amazon provider's BaseAwsLink when the UI asks.
    params = {"region_name": "us-east-1", "aws_domain": "aws.amazon.com", "job_name": job_name}
    assert ctx["ti"].xcoms["retrain_sagemaker_training_job"] == ctx["ti"].xcoms["retrain_sagemaker_training_logs"] == params

    # A retry of the deferred task (worker died) reattaches: still one CreateTrainingJob.
    with pytest.raises(TaskDeferred) as again:
        make_op(hyperparameters={"fake_duration_s": 4}).execute(make_context(DAG_ID, "manual__defer", try_number=2))
    assert again.value.trigger.job_name == job_name
    assert creates(cloud) == 1

    (event,) = asyncio.run(asyncio.wait_for(collect(trigger), 30))
    result = op.execute_complete(ctx, event=event.payload)
    assert result["state"] == "Completed" and result["metrics"]["roc_auc"] == 0.91
    billed = result["cost"]["seconds"]
    assert billed >= 4 and result["cost"]["usd"] == round(billed / 3600 * 0.23, 6)
    assert result["cost"]["region"] == "us-east-1"
    # Resumed after completion (a retry after the trigger fired): reuses the job, still one create.
    assert make_op().execute(make_context(DAG_ID, "manual__defer", try_number=3))["job_name"] == job_name
    assert creates(cloud) == 1


def test_sync_mode_polls_in_place(monkeypatch, make_op, make_context, backend):
    result = make_op(deferrable=False).execute(make_context(DAG_ID, "manual__sync"))
    assert result["state"] == "Completed" and result["compute_seconds"] >= 1


def test_execute_complete_timeout_and_error_fail(make_op, make_context):
    op = make_op()
    job = {"job_name": "churn-x-1", "backend": "sagemaker", "state": "Stopped", "instance_type": "ml.m5.xlarge",
           "instance_count": 1, "created_at": None, "started_at": None, "ended_at": None, "billable_seconds": 3.0,
           "failure_reason": None, "tags": {}, "details": {}}
    with pytest.raises(TrainingJobFailed, match="outlived its max runtime"):
        op.execute_complete(make_context(DAG_ID), event={"status": "timeout", "job_name": "churn-x-1", "job": job})
    with pytest.raises(TrainingJobFailed, match="waiting for training job churn-x-1 failed: down"):
        op.execute_complete(make_context(DAG_ID), event={"status": "error", "job_name": "churn-x-1", "job": None,
                                                         "message": "down"})


@pytest.mark.slow
def test_algorithm_error_fails_without_retries(monkeypatch, make_op, make_context, backend, caplog, capsys):
    op = make_op(hyperparameters={"fake_duration_s": 0.2, "fake_outcome": "Failed",
                                  "fake_failure_reason": "KeyError: 'churned'"})
    ctx = make_context(DAG_ID, "manual__fail")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    (event,) = asyncio.run(asyncio.wait_for(collect(deferred.value.trigger), 30))
    with pytest.raises(AirflowFailException, match=r"Failed: AlgorithmError: KeyError: 'churned'.*not retrying"):
        op.execute_complete(ctx, event=event.payload)
    capsys.readouterr()
    with pytest.raises(AirflowFailException):
        op.execute_complete(ctx, event=event.payload)
    logged = caplog.text + capsys.readouterr().out
    assert f"[{deferred.value.trigger.job_name}] ERROR: KeyError: 'churned'" in logged  # re-emitted in the task log


def test_budget_refuses_before_any_job(cloud, make_op, make_context, backend):
    op = make_op(instance_type="ml.p4d.24xlarge", max_runtime_seconds=7200, max_cost_usd=10.0)
    with pytest.raises(AirflowFailException, match=r"training.max_cost_usd: not launching .* \$75.38, above .* \$10.00"):
        op.execute(make_context(DAG_ID, "manual__budget"))
    calls = cloud.calls()
    assert calls.get("sagemaker:CreateTrainingJob", 0) == 0 and calls.get("sagemaker:Search", 0) == 0


def test_refused_request_fails_without_retries(cloud, make_op, make_context, backend):
    cloud.inject_fault("CreateTrainingJob", "ValidationException", count=10,
                       message="1 validation error detected: Value 'ml.m5.xlarge' at "
                               "'resourceConfig.instanceType' failed to satisfy constraint")
    with pytest.raises(AirflowFailException, match=r"training.resources.instance_type: ValidationException"):
        make_op().execute(make_context(DAG_ID, "manual__refused"))


def test_name_taken_but_not_found_by_search_is_reattached(monkeypatch, make_op, make_context, backend, entry):
    run = RunIdentity("churn", DAG_ID, "manual__race")
    submit(backend, entry, name=run.job_name(1), fake_duration_s=30)
    monkeypatch.setattr(SageMakerTrainingBackend, "find_jobs", lambda self, tags: [])  # eventual consistency
    with pytest.raises(TaskDeferred) as deferred:
        make_op().execute(make_context(DAG_ID, "manual__race"))
    assert deferred.value.trigger.job_name == run.job_name(1)
    # SageMaker refused the duplicate name; the cloud holds one job, still running.
    assert [j["TrainingJobName"] for j in backend.sagemaker.list_training_jobs()["TrainingJobSummaries"]] == [
        run.job_name(1)
    ]
    assert not backend.describe(run.job_name(1)).state.terminal
    backend.stop(run.job_name(1))


@pytest.mark.slow
def test_teardown_stops_what_a_deferred_run_left_running(monkeypatch, make_op, make_context, backend):
    from airflow_retrain.operators.teardown import TeardownRunOperator

    with pytest.raises(TaskDeferred) as deferred:
        make_op(hyperparameters={"fake_duration_s": 60}).execute(make_context(DAG_ID, "manual__orphan"))
    # The deferred task was killed where no trigger could stop the job (e.g. its triggerer lost):
    teardown = TeardownRunOperator(task_id="teardown", pipeline="churn", backend="sagemaker", backend_config=CONFIG)
    result = teardown.execute(make_context(DAG_ID, "manual__orphan"))
    name = deferred.value.trigger.job_name
    assert result["stopped_jobs"] == [name]
    assert result["jobs"][0]["cost_usd"] is not None and result["errors"] == []
    assert wait_for(lambda: backend.describe(name).state == JobState.STOPPED, 15)
    assert [j["TrainingJobName"] for j in backend.sagemaker.list_training_jobs()["TrainingJobSummaries"]] == [name]


def test_on_kill_in_sync_mode_stops_the_job(monkeypatch, make_op, make_context, backend):
    import threading

    op = make_op(hyperparameters={"fake_duration_s": 60}, deferrable=False)
    errors: list[BaseException] = []

    def run():
        try:
            op.execute(make_context(DAG_ID, "manual__kill"))
        except BaseException as e:  # noqa: BLE001 - the job's stop ends the wait with a failure
            errors.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    name = RunIdentity("churn", DAG_ID, "manual__kill").job_name(1)
    deadline = time.time() + 30
    while op._job_name is None and time.time() < deadline:
        time.sleep(0.1)
    op.on_kill()
    worker.join(bound(30))
    assert wait_for(lambda: backend.describe(name).state == JobState.STOPPED, 15)
    assert errors and "Stopped" in str(errors[0])


async def test_run_awaits_the_async_clients_never_the_blocking_calls(cloud, backend, entry, monkeypatch):
    """In the triggerer, SageMaker is polled through aiobotocore: the sync describe/logs/stop are never called."""
    submit(backend, entry, fake_duration_s=0.5)

    def blocking(*args, **kwargs):
        raise AssertionError("a blocking boto3 call in the triggerer")

    for method in ("describe", "read_logs", "stop"):
        monkeypatch.setattr(SageMakerTrainingBackend, method, blocking)
    trigger = TrainingJobTrigger(backend="sagemaker", backend_config=CONFIG, job_name="churn-run-1", poll_interval=0.2)
    (event,) = await asyncio.wait_for(collect(trigger), 30)
    assert event.payload["status"] == "done" and event.payload["job"]["state"] == "Completed"
    assert event.payload["log_tail"][-1] == "Training complete"
