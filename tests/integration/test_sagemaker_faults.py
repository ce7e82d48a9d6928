"""Faults on the SageMaker path, 20 repetitions each, against the fake cloud (``scripts/fake_cloud``) at
the operator level (whole DAGs would make 20 repetitions slow; ``test_sagemaker_dag`` runs the DAG):

- the worker killed (SIGKILL, at a random moment while it submits or waits) and the task retried:
  exactly one ``CreateTrainingJob`` and the retry completes;
- the worker killed and the task not retried: one run of the teardown task leaves the job ``Stopped``;
- the triggerer restarted mid-wait (its ``run()`` cancelled, a new trigger built from ``serialize()``):
  the task resumes on the same job and completes, one ``CreateTrainingJob``.

The "worker" is a fork of the test process (Airflow is imported once), killed with SIGKILL: no
``on_kill``, no ``finally``, like the OOM killer or a lost node.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred
from helpers import FAKE_ROLE_ARN as ROLE
from helpers import stage_sagemaker_job, wait_for

from airflow_retrain.operators.teardown import TeardownRunOperator
from airflow_retrain.operators.training import TrainModelOperator
from airflow_retrain.runs import RunIdentity
from airflow_retrain.training.base import JobState
from airflow_retrain.training.sagemaker import SageMakerTrainingBackend
from airflow_retrain.triggers.training import TrainingJobTrigger

BUCKET = "retrain-fault-tests"
CONN = "aws_fake_faults"
CONFIG = {"role_arn": ROLE, "bucket": BUCKET, "prefix": "f", "connection_id": CONN}
DAG_ID = "churn_retrain"
REPETITIONS = 20
pytestmark = pytest.mark.integration


@pytest.fixture
def backend(cloud) -> SageMakerTrainingBackend:
    return SageMakerTrainingBackend(**CONFIG)


@pytest.fixture
def make_op(tmp_path):
    entry_point = str(stage_sagemaker_job(tmp_path))

    def _make(deferrable: bool) -> TrainModelOperator:
        return TrainModelOperator(
            task_id="train",
            pipeline="churn",
            entry_point=entry_point,
            channels={"train": str(tmp_path / "data")},
            backend="sagemaker",
            backend_config=CONFIG,
            instance_type="ml.m5.xlarge",
            max_runtime_seconds=600,
            poll_interval=0.2,
            deferrable=deferrable,
        )

    return _make


def creates(cloud) -> int:
    return cloud.calls().get("sagemaker:CreateTrainingJob", 0)


def run_jobs(backend, run_id: str) -> list:
    return backend.find_jobs(RunIdentity("churn", DAG_ID, run_id).run_tags())


def kill_worker_midway(cloud, make_op, make_context, run_id: str, deferrable: bool, delay: float,
                       after_create: bool) -> None:
    """Fork a worker that runs the train task; SIGKILL it ``delay`` seconds after it started or, with
    ``after_create``, after the cloud accepted its job (while it waits, or defers)."""
    pid = os.fork()
    if pid == 0:  # the worker
        # A worker process starts with none of this test process's filesystems: Airflow keeps one per
        # (protocol, connection) per process, and s3fs's async filesystem refuses to run in a forked child
        # ("not fork-safe"). A real task process is forked from a supervisor that never opened one.
        from airflow.sdk.io import store

        store._STORE_CACHE.clear()
        try:
            try:
                make_op(deferrable).execute(make_context(DAG_ID, run_id))
            except TaskDeferred:
                pass  # deferred: the worker would now hand the trigger to the triggerer
            time.sleep(600)
        finally:
            os._exit(0)
    if after_create:
        name = RunIdentity("churn", DAG_ID, run_id).job_name(1)
        wait_for(lambda: any(j["name"] == name for j in cloud.training_jobs()), 120, interval=0.1)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def complete(op, ctx, outcome):
    """Finish a task whose ``execute`` deferred: run the trigger inline, then ``execute_complete``."""
    if not isinstance(outcome, TaskDeferred):
        return outcome
    (event,) = asyncio.run(asyncio.wait_for(_collect(outcome.trigger), 60))
    return op.execute_complete(ctx, event=event.payload)


async def _collect(trigger) -> list:
    return [event async for event in trigger.run()]


def execute(op, ctx):
    try:
        return op.execute(ctx)
    except TaskDeferred as deferred:
        return deferred


def test_worker_killed_then_retried_makes_one_job(cloud, backend, make_op, make_context):
    cloud.configure(min_training_seconds=1.5)
    rng = random.Random(6)
    seen = {"job_existed_at_kill": 0}
    for rep in range(REPETITIONS):
        run_id = f"manual__kill_retry_{rep}"
        deferrable = rep % 2 == 0
        before = creates(cloud)
        # Half the kills land anywhere in the submit (clients, upload, the create call), half mid-wait.
        after_create = rep % 4 >= 2
        kill_worker_midway(cloud, make_op, make_context, run_id, deferrable,
                           delay=rng.uniform(0.0, 1.0 if after_create else 4.0), after_create=after_create)
        seen["job_existed_at_kill"] += bool(run_jobs(backend, run_id))
        ctx = make_context(DAG_ID, run_id, try_number=2)
        op = make_op(deferrable)
        result = complete(op, ctx, execute(op, ctx))
        assert result["state"] == "Completed", (rep, result)
        assert creates(cloud) - before == 1, rep
        assert [j.job_name for j in run_jobs(backend, run_id)] == [result["job_name"]], rep
    print(f"\n{REPETITIONS} kills then retries; the job existed at the kill in {seen['job_existed_at_kill']}")
    assert seen["job_existed_at_kill"] >= REPETITIONS // 2  # the kills landed mid-job, not only before submit


def test_worker_killed_not_retried_teardown_stops_the_job(cloud, backend, make_op, make_context):
    cloud.configure(min_training_seconds=300, stop_grace_seconds=1)
    rng = random.Random(7)
    stopped = 0
    for rep in range(REPETITIONS):
        run_id = f"manual__kill_teardown_{rep}"
        kill_worker_midway(cloud, make_op, make_context, run_id, rep % 2 == 0, delay=rng.uniform(0.0, 1.0),
                           after_create=rep % 4 >= 1)
        teardown = TeardownRunOperator(task_id="teardown", pipeline="churn", backend="sagemaker",
                                       backend_config=CONFIG)
        result = teardown.execute(make_context(DAG_ID, run_id))
        assert result["errors"] == [], (rep, result)
        for job in run_jobs(backend, run_id):
            assert job.job_name in result["stopped_jobs"], (rep, result)
            assert wait_for(lambda n=job.job_name: backend.describe(n).state == JobState.STOPPED, 20), rep
            stopped += 1
    running = [j for j in cloud.training_jobs() if j["status"] == "InProgress"]
    assert running == []
    print(f"\n{REPETITIONS} kills without retry; teardown stopped {stopped} running jobs")
    assert stopped >= REPETITIONS // 2


def test_triggerer_restarted_mid_wait_resumes_the_same_job(cloud, backend, make_op, make_context):
    cloud.configure(min_training_seconds=1.5)
    rng = random.Random(8)

    async def restart_midway(trigger, after: float) -> list:
        waiting = asyncio.ensure_future(_collect(trigger))
        await asyncio.sleep(after)
        if waiting.done():  # the job ended before the restart: the event was already delivered
            return waiting.result(), False
        waiting.cancel()  # the triggerer process goes away ...
        classpath, kwargs = trigger.serialize()  # ... and another one loads the trigger from the database
        assert classpath == "airflow_retrain.triggers.training.TrainingJobTrigger"
        return await _collect(TrainingJobTrigger(**json.loads(json.dumps(kwargs)))), True

    restarted = 0
    for rep in range(REPETITIONS):
        run_id = f"manual__triggerer_{rep}"
        before = creates(cloud)
        ctx = make_context(DAG_ID, run_id)
        deferred = execute(make_op(True), ctx)
        assert isinstance(deferred, TaskDeferred)
        after = rng.uniform(0.1, 1.5)
        (event,), was_restarted = asyncio.run(asyncio.wait_for(restart_midway(deferred.trigger, after), 60))
        restarted += was_restarted
        result = make_op(True).execute_complete(ctx, event=event.payload)  # a fresh operator resumes
        assert result["state"] == "Completed" and result["job_name"] == deferred.trigger.job_name, rep
        assert creates(cloud) - before == 1, rep
    print(f"\n{REPETITIONS} triggerer restarts mid-wait ({restarted} before the job ended); one job each")
    assert restarted >= REPETITIONS // 2
