"""Benchmark: worker-slot seconds and cloud API calls while a SageMaker training job runs.

Side by side in one run -- concurrently, each against its own moto server so its API calls are counted
apart -- each on a job that trains for ``--job-seconds``:

- ours: ``TrainModelOperator`` (deferrable): ``execute`` submits and defers, the
  ``TrainingJobTrigger`` waits, ``execute_complete`` fetches the outputs and metrics;
- the Amazon provider's ``SageMakerTrainingOperator`` in its synchronous mode (``execute`` polls);
- the same operator with ``deferrable=True`` (``execute`` -> ``SageMakerTrigger`` -> ``execute_complete``).

Worker-slot seconds are the wall time spent inside ``execute``/``execute_complete`` (what a worker
slot is held for; ``execute_complete`` runs on a fresh operator, as on the worker that resumes the task; the triggers run in this process's event loop, as a triggerer would run them, and are
not counted). API calls are the HTTP requests the server answered during each contender's run (every
service: SageMaker, S3, CloudWatch Logs). "done latency" is how long after the job ended the task
finished. All use the same poll interval.

The provider's deferrable mode needs aiobotocore, and no aiobotocore release accepts the botocore
(1.44.8) of this project's lock. So its trigger runs here on a stand-in for the aiobotocore client: the
same ``SageMakerTrigger.run`` and ``async_wait`` code, with ``get_async_conn``/``get_waiter`` answering
through the synchronous boto3 client and waiter in a thread -- the same DescribeTrainingJob call per
round, one round per ``waiter_delay``.

The job duration comes from a small patch of moto's SageMaker backend (``tests/moto_sagemaker.py``:
jobs stay InProgress for a set time, report BillableTimeInSeconds, write outputs and logs) because
plain moto completes jobs at once; the extended fake cloud (``scripts/fake_cloud.py``) can take its
place once it lands.

    .venv/bin/python bench/training_wait.py [--job-seconds 600] [--poll 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
_TMP = Path(tempfile.mkdtemp(prefix="bench-training-wait-"))
os.environ.setdefault("RETRAIN_HOME", str(ROOT))
os.environ.setdefault("RETRAIN_STATE_DIR", str(_TMP / "state"))
os.environ.setdefault("AIRFLOW_HOME", str(_TMP / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

BUCKET = "bench-training-wait"
ROLE = "arn:aws:iam::123456789012:role/bench"
CONNS = {"ours": "aws_bench_ours", "sync": "aws_bench_sync", "deferrable": "aws_bench_deferrable"}
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


class _TI:
    def __init__(self) -> None:
        self.try_number = 1
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key, value) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, *args, **kwargs) -> None:
        return None


class _Dag:
    dag_id = "bench_retrain"


class _Task:
    owner = "bench"


def _context(run_id: str) -> dict[str, Any]:
    return {"dag": _Dag(), "run_id": run_id, "task": _Task(), "ti": _TI()}


async def _drain(trigger) -> list:
    return [event async for event in trigger.run()]


def _job_end(sagemaker, name: str) -> float:
    desc = sagemaker.describe_training_job(TrainingJobName=name)
    return desc["TrainingEndTime"].timestamp()


def _ours(job_s: float, poll: float):
    from airflow_retrain.operators.training import TrainModelOperator

    return TrainModelOperator(
        task_id="train",
        pipeline="bench",
        entry_point=str(ROOT / "include" / "training" / "churn" / "train.py"),
        channels={"train": f"s3://{BUCKET}/data/train/"},
        hyperparameters={"fake_duration_s": job_s},
        backend="sagemaker",
        backend_config={"role_arn": ROLE, "bucket": BUCKET, "prefix": "ours", "connection_id": CONNS["ours"]},
        instance_type="ml.m5.xlarge",
        max_runtime_seconds=3600,
        poll_interval=poll,
        deferrable=True,
    )


def run_ours(job_s: float, poll: float) -> dict[str, Any]:
    from airflow.sdk.exceptions import TaskDeferred

    ctx = _context("bench__ours")
    start = time.perf_counter()
    try:
        _ours(job_s, poll).execute(ctx)
        raise RuntimeError("ours did not defer")
    except TaskDeferred as deferred:
        submit_s = time.perf_counter() - start
        trigger = deferred.trigger
    (event,) = asyncio.run(_drain(trigger))
    start = time.perf_counter()
    # A resumed task is a fresh operator on whichever worker picks it up: its clients are built anew.
    result = _ours(job_s, poll).execute_complete(ctx, event=event.payload)
    resume_s = time.perf_counter() - start
    return {"slot_s": submit_s + resume_s, "submit_s": submit_s, "resume_s": resume_s, "job": result["job_name"],
            "done_at": time.time()}


def _provider_config(name: str, job_s: float) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": {
            "fake_duration_s": json.dumps(job_s),
            "sagemaker_program": json.dumps("train.py"),
            "sagemaker_submit_directory": json.dumps(f"s3://{BUCKET}/provider/sourcedir.tar.gz"),
        },
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{BUCKET}/data/train/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/provider"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def _without_aiobotocore() -> None:
    """Let the provider's async trigger code run on the sync client (aiobotocore cannot be installed)."""
    from contextlib import asynccontextmanager

    from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

    class ThreadedWaiter:
        def __init__(self, waiter) -> None:
            self.waiter = waiter

        async def wait(self, **kwargs) -> None:
            await asyncio.to_thread(self.waiter.wait, **kwargs)

    @asynccontextmanager
    async def _conn(hook):
        yield hook.conn

    async def get_async_conn(self):
        return _conn(self)

    get_waiter = AwsGenericHook.get_waiter

    def get_waiter_sync(self, waiter_name, parameters=None, config_overrides=None, deferrable=False, client=None):
        waiter = get_waiter(self, waiter_name, parameters, config_overrides, deferrable=False, client=None)
        return ThreadedWaiter(waiter) if deferrable else waiter

    AwsGenericHook.get_async_conn = get_async_conn
    AwsGenericHook.get_waiter = get_waiter_sync


def run_provider(job_s: float, poll: float, deferrable: bool) -> dict[str, Any]:
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
    from airflow.sdk.exceptions import TaskDeferred

    name = f"provider-{'deferrable' if deferrable else 'sync'}"

    def operator() -> SageMakerTrainingOperator:
        return SageMakerTrainingOperator(
            task_id="train",
            config=_provider_config(name, job_s),
            aws_conn_id=CONNS["deferrable" if deferrable else "sync"],
            region_name="us-east-1",
            check_interval=int(poll),
            max_attempts=int(10 * job_s / poll) + 10,
            deferrable=deferrable,
        )

    ctx = _context(f"bench__{name}")
    resume_s = 0.0
    start = time.perf_counter()
    try:
        operator().execute(ctx)
        submit_s = time.perf_counter() - start
    except TaskDeferred as deferred:
        submit_s = time.perf_counter() - start
        (event,) = asyncio.run(_drain(deferred.trigger))
        start = time.perf_counter()
        operator().execute_complete(ctx, event=event.payload)  # fresh, as on a resuming worker
        resume_s = time.perf_counter() - start
    return {"slot_s": submit_s + resume_s, "submit_s": submit_s, "resume_s": resume_s, "job": name,
            "done_at": time.time()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--job-seconds", type=float, default=600.0, help="how long each job trains")
    parser.add_argument("--poll", type=float, default=5.0, help="poll interval of every contender")
    parser.add_argument("--stagger", type=float, default=15.0, help="seconds between the contenders' starts")
    parser.add_argument("--json", dest="json_path", help="write the results to this file")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # keep the table readable: request logs, provider chatter

    import boto3
    from moto_sagemaker import FakeCloud

    _without_aiobotocore()

    clouds = {name: FakeCloud() for name in CONNS}
    for name, cloud in clouds.items():
        cloud.__enter__()
        os.environ[f"AIRFLOW_CONN_{CONNS[name].upper()}"] = cloud.connection_uri()
    try:
        kwargs = {"endpoint_url": clouds["ours"].endpoint_url, "region_name": "us-east-1",
                  "aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        s3, sagemaker = boto3.client("s3", **kwargs), boto3.client("sagemaker", **kwargs)
        s3.create_bucket(Bucket=BUCKET)  # moto's state is shared by the three servers
        s3.put_object(Bucket=BUCKET, Key="data/train/part-0.parquet", Body=b"PAR1")
        s3.put_object(Bucket=BUCKET, Key="provider/sourcedir.tar.gz", Body=b"")
        for cloud in clouds.values():
            cloud.calls.clear()

        contenders = {
            "ours (deferrable)": ("ours", lambda: run_ours(args.job_seconds, args.poll)),
            "provider sync": ("sync", lambda: run_provider(args.job_seconds, args.poll, deferrable=False)),
            "provider deferrable": ("deferrable", lambda: run_provider(args.job_seconds, args.poll, deferrable=True)),
        }
        with ThreadPoolExecutor(max_workers=len(contenders)) as pool:
            futures = {}
            for i, (label, (_, runner)) in enumerate(contenders.items()):
                # Staggered starts: building boto3 clients is CPU-bound, and three at once on a small
                # machine would charge each contender for the others' setup.
                futures[label] = pool.submit(lambda r=runner, d=i * args.stagger: (time.sleep(d), r())[1])
            rows: dict[str, dict[str, Any]] = {label: future.result() for label, future in futures.items()}
        for label, (name, _) in contenders.items():
            calls = Counter(clouds[name].calls)
            rows[label]["api_calls"] = sum(calls.values())
            rows[label]["calls_by_kind"] = dict(sorted(calls.items()))
            rows[label]["done_latency_s"] = rows[label]["done_at"] - _job_end(sagemaker, rows[label]["job"])
    finally:
        for cloud in clouds.values():
            cloud.__exit__(None, None, None)

    job_s = args.job_seconds
    print(f"job trains {job_s:.0f} s; poll interval {args.poll:.0f} s; the three run concurrently, one moto "
          f"server each (timed-job patch)")
    print(f"{'contender':22} {'slot s':>8} {'(submit':>8} {'+ resume)':>9} {'slot/job':>9} {'API calls':>10} "
          f"{'done latency s':>15}")
    for label, row in rows.items():
        print(f"{label:22} {row['slot_s']:8.2f} {row['submit_s']:8.2f} {row['resume_s']:9.2f} "
              f"{row['slot_s'] / job_s:9.2%} {row['api_calls']:10d} {row['done_latency_s']:15.1f}")
    ours, sync, deferred = rows["ours (deferrable)"], rows["provider sync"], rows["provider deferrable"]
    print(f"ratios: slot ours/provider sync {ours['slot_s'] / sync['slot_s']:.3f}, "
          f"ours/provider deferrable {ours['slot_s'] / deferred['slot_s']:.2f}; "
          f"API calls ours/provider deferrable {ours['api_calls'] / deferred['api_calls']:.2f}")
    for label, row in rows.items():
        print(f"  {label}: {row['calls_by_kind']}")
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps(
                {
                    "job_s": job_s,
                    "slot_s_ours": round(ours["slot_s"], 3),
                    "slot_s_provider_sync": round(sync["slot_s"], 3),
                    "slot_s_provider_deferrable": round(deferred["slot_s"], 3),
                    "api_calls_ours": ours["api_calls"],
                    "api_calls_provider_deferrable": deferred["api_calls"],
                    "api_calls_provider_sync": sync["api_calls"],
                    "done_latency_s_ours": round(ours["done_latency_s"], 2),
                    "done_latency_s_provider_deferrable": round(deferred["done_latency_s"], 2),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
