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

The provider's deferrable mode runs for real: its ``SageMakerTrigger`` polls through aiobotocore (in the
lock), as on a triggerer.

Each contender gets its own fake cloud (``scripts/fake_cloud``, the one ``make fake-cloud`` runs, as a
child process) so its API calls are counted apart. Jobs really run a script (``tests/fixtures/
sagemaker_job.py``, which trains nothing and writes a model and metrics) and the fake's
``min_training_seconds`` keeps each one training (and billed) for ``--job-seconds``.

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
JOB_SCRIPT = ROOT / "tests" / "fixtures" / "sagemaker_job.py"
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
        entry_point=str(_TMP / "source" / "train.py"),
        channels={"train": f"s3://{BUCKET}/data/train/"},
        hyperparameters={},
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

    import io
    import shutil
    import tarfile

    from fakes import fake_cloud

    (_TMP / "source").mkdir(parents=True, exist_ok=True)
    shutil.copy(JOB_SCRIPT, _TMP / "source" / "train.py")
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w:gz") as archive:
        archive.add(JOB_SCRIPT, arcname="train.py")
    clouds = {}
    try:
        for name in CONNS:
            clouds[name] = fake_cloud.start_fake_cloud(
                0, _TMP / f"cloud-{name}", config={"min_training_seconds": args.job_seconds}
            )
            os.environ.update(clouds[name].airflow_env(CONNS[name]))
            if clouds[name].bootstrap(BUCKET, ROLE.rsplit("/", 1)[1]) != ROLE:
                raise SystemExit(f"the fake cloud's role is not {ROLE}")
            s3 = clouds[name].client("s3")
            s3.put_object(Bucket=BUCKET, Key="data/train/part-0.parquet", Body=b"PAR1")
            s3.put_object(Bucket=BUCKET, Key="provider/sourcedir.tar.gz", Body=tar.getvalue())
            clouds[name].reset_calls()

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
            calls = Counter(clouds[name].calls())
            rows[label]["api_calls"] = sum(calls.values())
            rows[label]["calls_by_kind"] = dict(sorted(calls.items()))
            rows[label]["done_latency_s"] = rows[label]["done_at"] - _job_end(clouds[name].client("sagemaker"),
                                                                              rows[label]["job"])
    finally:
        for cloud in clouds.values():
            cloud.stop()

    job_s = args.job_seconds
    print(f"job trains {job_s:.0f} s; poll interval {args.poll:.0f} s; the three run concurrently, one fake "
          f"cloud each (scripts/fake_cloud, min_training_seconds)")
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
