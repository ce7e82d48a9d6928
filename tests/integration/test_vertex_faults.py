"""Faults on the Vertex AI path at the operator level, against the fake Vertex AI (``scripts/fake_vertex.py``),
as ``test_sagemaker_faults`` does for SageMaker:

- the worker killed (SIGKILL while the job trains, polling in place or deferred) and the task retried: the
  retry reattaches to the same custom job, exactly one ``CreateCustomJob``, and completes;
- the task killed (``on_kill``, what Airflow calls when a user marks a running task failed): the custom
  job is cancelled;
- the Spot VMs reclaimed mid-training: the same job restarts and resumes from its checkpoint, the task
  completes with one ``CreateCustomJob``.

The worker is a separate Python process (not a fork: the fake's gRPC server runs in this process, and
gRPC does not survive a fork), killed with SIGKILL: no ``on_kill``, no ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred
from helpers import bound, connected_fake_vertex, wait_for

from airflow_retrain.operators.training import TrainModelOperator
from airflow_retrain.runs import RunIdentity

ROOT = Path(__file__).resolve().parents[2]
CONN, BUCKET, DAG_ID = "google_fake_faults", "retrain-vx-faults", "churn_retrain"
CONFIG = {"region": "us-central1", "staging_bucket": f"gs://{BUCKET}", "prefix": "f", "connection_id": CONN}

SCRIPT = '''
import json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import contract

def run(argv):
    hp = contract.parse_cli(argv)
    env = contract.TrainingEnvironment.from_environ(default_channels=("train",))
    rounds, sleep, ck, start = int(hp.get("rounds", 1)), float(hp.get("sleep", 0)), env.checkpoint_dir, 0
    if ck and (ck / "state.json").exists():
        start = json.loads((ck / "state.json").read_text())["round"]
    for r in range(start, rounds):
        time.sleep(sleep)
        print(f"round {r + 1}/{rounds}", flush=True)
        if ck:
            ck.mkdir(parents=True, exist_ok=True)
            contract.write_json(ck / "state.json", {"round": r + 1})
    env.model_dir.mkdir(parents=True, exist_ok=True)
    (env.model_dir / "model.json").write_text("{}")
    contract.write_metrics(env, {"roc_auc": 0.9}, {"rounds_trained": rounds - start})

sys.exit(contract.run_main(run))
'''

# The worker: runs the train task's execute() once, then stays until it is killed (a deferred task's
# worker would hand the trigger on; either way it never finishes the task).
WORKER = '''
import json, sys, time
from airflow.sdk.exceptions import TaskDeferred
from airflow_retrain.operators.training import TrainModelOperator

cfg = json.loads(sys.argv[1])

class TI:
    try_number = cfg["try_number"]
    def xcom_push(self, key, value):
        pass
    def xcom_pull(self, *args, **kwargs):
        return None

class Dag:
    dag_id = cfg["dag_id"]

class Task:
    owner = "tests"

try:
    TrainModelOperator(**cfg["operator"]).execute({"dag": Dag(), "run_id": cfg["run_id"], "task": Task(), "ti": TI()})
except TaskDeferred:
    pass
time.sleep(600)
'''


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with connected_fake_vertex(tmp_path_factory.mktemp("gcs"), CONN, "faults-proj", stop_grace_seconds=1) as server:
        yield server


@pytest.fixture
def cloud(fake, monkeypatch):
    fake.reset()
    shutil.rmtree(fake.gcs_root / BUCKET, ignore_errors=True)
    (fake.gcs_root / BUCKET).mkdir()
    monkeypatch.delenv("RETRAIN_DEFERRABLE", raising=False)
    return fake


@pytest.fixture
def operator_kwargs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    shutil.copy(ROOT / "include" / "training" / "churn" / "contract.py", src / "contract.py")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.parquet").write_bytes(b"PAR1")

    def _make(deferrable: bool, backend_config: dict | None = None, **hyperparameters) -> dict:
        return {
            "task_id": "train",
            "pipeline": "churn",
            "entry_point": str(src / "train.py"),
            "channels": {"train": str(tmp_path / "data")},
            "hyperparameters": hyperparameters,
            "backend": "vertex",
            "backend_config": backend_config or CONFIG,
            "max_runtime_seconds": 600,
            "poll_interval": 0.2,
            "deferrable": deferrable,
            "warehouse_conn_id": None,
        }

    return _make


def complete(op, ctx, deferrable_outcome):
    """Finish a task whose ``execute`` deferred: run the trigger inline, then ``execute_complete``."""
    if not isinstance(deferrable_outcome, TaskDeferred):
        return deferrable_outcome

    async def collect():
        return [event async for event in deferrable_outcome.trigger.run()]

    (event,) = asyncio.run(asyncio.wait_for(collect(), 120))
    return op.execute_complete(ctx, event=event.payload)


def execute(op, ctx):
    try:
        return op.execute(ctx)
    except TaskDeferred as deferred:
        return deferred


def running_job(cloud) -> str:
    """The id of the fake's one custom job once it runs (its replicas started)."""
    return wait_for(
        lambda: (ids := cloud.job_ids()) and cloud.job_info(ids[0])["state"] == "JOB_STATE_RUNNING" and ids[0], 120
    )


@pytest.mark.slow
@pytest.mark.parametrize("deferrable", [False, True], ids=["polling", "deferred"])
def test_worker_killed_mid_job_then_retried_reattaches_to_the_same_job(cloud, operator_kwargs, make_context, deferrable):
    run_id = f"manual__vx_kill_{deferrable}"
    kwargs = operator_kwargs(deferrable, rounds=8, sleep=0.5)
    cfg = {"operator": kwargs, "dag_id": DAG_ID, "run_id": run_id, "try_number": 1}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(cfg)], stdout=subprocess.DEVNULL)
    try:
        job_id = running_job(cloud)
        wait_for(lambda: any(line.endswith("round 1/8") for line in cloud.job_info(job_id)["log"]), 60)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(bound(30))
    assert cloud.job_info(job_id)["state"] == "JOB_STATE_RUNNING"  # the kill left the job training

    ctx = make_context(DAG_ID, run_id, try_number=2)
    op = TrainModelOperator(**kwargs)
    result = complete(op, ctx, execute(op, ctx))
    assert result["state"] == "Completed", result
    assert cloud.calls["CreateCustomJob"] == 1
    assert cloud.job_ids() == [job_id]
    assert result["job_name"] == RunIdentity("churn", DAG_ID, run_id).job_name(1)  # the first try's job
    assert result["info"]["rounds_trained"] == 8  # one uninterrupted job, not a restart


def test_on_kill_cancels_the_custom_job(cloud, operator_kwargs, make_context):
    op = TrainModelOperator(**operator_kwargs(False, rounds=600, sleep=0.5))
    ctx = make_context(DAG_ID, "manual__vx_on_kill")
    outcome: dict = {}

    def task():
        try:
            outcome["result"] = op.execute(ctx)
        except Exception as e:  # noqa: BLE001 - the killed task fails; what matters is the job
            outcome["error"] = e

    thread = threading.Thread(target=task, daemon=True)
    thread.start()
    job_id = running_job(cloud)
    op.on_kill()
    assert wait_for(lambda: cloud.job_info(job_id)["state"] == "JOB_STATE_CANCELLED", 40)  # the fake ends the job's processes first
    assert cloud.calls["CancelCustomJob"] == 1
    thread.join(bound(60))
    assert not thread.is_alive() and "result" not in outcome  # the task does not report a trained model
    assert cloud.calls["CreateCustomJob"] == 1


def test_spot_reclaim_mid_task_resumes_from_the_checkpoint(cloud, operator_kwargs, make_context):
    op = TrainModelOperator(**operator_kwargs(False, {**CONFIG, "spot": True}, rounds=6, sleep=0.3))
    ctx = make_context(DAG_ID, "manual__vx_spot")
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=op.execute(ctx)), daemon=True)
    thread.start()
    job_id = running_job(cloud)
    wait_for(lambda: any(line.endswith("round 2/6") for line in cloud.job_info(job_id)["log"]), 60)
    cloud.reclaim(job_id)
    thread.join(bound(120))
    result = outcome["result"]
    assert result["state"] == "Completed", result
    info = cloud.job_info(job_id)
    assert info["interruptions"] == 1 and info["attempts"] == 2
    assert 0 < result["info"]["rounds_trained"] < 6  # the restart began from the checkpoint, not round 1
    assert cloud.calls["CreateCustomJob"] == 1
