"""TeardownRunOperator (and PrepareRunOperator): stop what the run left running, clean up, report cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import alive, stop_running_jobs, wait_for

from airflow_retrain.operators.teardown import PrepareRunOperator, TeardownRunOperator
from airflow_retrain.runs import RunIdentity
from airflow_retrain.training.base import JobState, TrainingJobRequest
from airflow_retrain.training.local import LocalTrainingBackend

PIPELINE = "churn"
DAG_ID = "unit_teardown"

# Records its pid; waits for a "go" file in its channel when the "gate" hyperparameter is set.
TRAIN = """
import json, os, pathlib, time
hps = json.loads(os.environ["SM_HPS"])
out = pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"])
(out / "pid").write_text(str(os.getpid()))
print("started", flush=True)
channel = pathlib.Path(os.environ["SM_CHANNEL_TRAIN"])
while hps.get("gate") and not (channel / "go").exists():
    time.sleep(0.05)
pathlib.Path(os.environ["SM_MODEL_DIR"], "model.json").write_text("{}")
(out / "metrics.json").write_text(json.dumps({"metrics": {"acc": 0.7}, "info": {}}))
"""


@pytest.fixture
def backend(tmp_path):
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs")
    yield backend
    stop_running_jobs(backend)


def identity(tmp_path, suffix: str = "") -> RunIdentity:
    return RunIdentity(
        pipeline=PIPELINE, dag_id=DAG_ID, run_id=f"manual__{tmp_path.name}{suffix}", owner="tests"
    )


def start(backend, run: RunIdentity, attempt: int, entry_point: str, channel: Path, *, gate: bool) -> str:
    name = run.job_name(attempt)
    backend.submit(
        TrainingJobRequest(
            job_name=name,
            entry_point=entry_point,
            channels={"train": str(channel)},
            hyperparameters={"gate": gate},
            tags=run.job_tags(),
        )
    )
    wait_for((backend.jobs_dir / name / "output" / "data" / "pid").exists)
    return name


def script_pid(backend, name: str) -> int:
    return int((backend.jobs_dir / name / "output" / "data" / "pid").read_text())


def store_of(backend) -> Path:
    return backend.jobs_dir.parent / "store"


def teardown_op(backend, **kwargs) -> TeardownRunOperator:
    return TeardownRunOperator(
        task_id="teardown",
        pipeline=PIPELINE,
        backend_config={"jobs_dir": str(backend.jobs_dir)},
        artifact_root=store_of(backend).as_uri(),
        **kwargs,
    )


def test_prepare_run_records_the_run_in_the_artifact_store(tmp_path, make_context):
    run = identity(tmp_path)
    store = tmp_path / "store"
    op = PrepareRunOperator(task_id="prepare", pipeline=PIPELINE, spec={"name": PIPELINE}, artifact_root=store.as_uri())
    result = op.execute(make_context(DAG_ID, run.run_id))
    run_dir = store / DAG_ID / run.run_key
    assert result == {"run_key": run.run_key, "artifacts_uri": run_dir.as_uri(), "tags": run.run_tags()}
    assert json.loads((run_dir / "run.json").read_text()) == {
        "dag_id": DAG_ID,
        "run_id": run.run_id,
        "run_key": run.run_key,
        "spec": {"name": PIPELINE},
    }
    (run_dir / "dataset" / "train").mkdir(parents=True)
    (run_dir / "dataset" / "train" / "part-0.parquet").write_bytes(b"rows")
    teardown = TeardownRunOperator(
        task_id="teardown", pipeline=PIPELINE, backend_config={"jobs_dir": str(tmp_path)}, artifact_root=store.as_uri()
    )
    assert teardown.execute(make_context(DAG_ID, run.run_id))["scratch_removed"] == [(run_dir / "dataset").as_uri()]
    assert not (run_dir / "dataset").exists()
    assert (run_dir / "run.json").exists()  # what the run was stays; only scratch goes


def test_teardown_stops_its_runs_jobs_and_leaves_others(
    backend, entry_point, channel, tmp_path, make_context
):
    run, other = identity(tmp_path), identity(tmp_path, "-other")
    done = start(backend, run, 1, entry_point, channel, gate=False)
    wait_for(lambda: backend.describe(done).state == JobState.COMPLETED)
    running = start(backend, run, 2, entry_point, channel, gate=True)
    neighbour = start(backend, other, 1, entry_point, channel, gate=True)
    running_pid = script_pid(backend, running)
    scratch = run.scratch_dir()
    (scratch / "datasets").mkdir(parents=True)
    (scratch / "datasets" / "train.parquet").write_bytes(b"rows")
    other_scratch = other.scratch_dir()
    other_scratch.mkdir(parents=True)
    run_dir, other_dir = store_of(backend) / DAG_ID / run.run_key, store_of(backend) / DAG_ID / other.run_key
    for base in (run_dir, other_dir):
        (base / "training" / "job" / "model").mkdir(parents=True)
        (base / "training" / "job" / "model" / "model.json").write_text("{}")
        (base / "report.json").write_text("{}")

    # Found by the run's tags: nothing is pulled from XCom.
    result = teardown_op(backend).execute(make_context(DAG_ID, run.run_id))

    assert result["stopped_jobs"] == [running]
    assert [(j["job_name"], j["state"]) for j in result["jobs"]] == [
        (done, "Completed"),
        (running, "Stopped"),
    ]
    assert result["errors"] == []
    assert backend.describe(running).state == JobState.STOPPED
    assert not alive(running_pid)
    for name in (done, running):
        for sub in ("model", "work", "input"):
            assert not (backend.jobs_dir / name / sub).exists(), (name, sub)
        assert (backend.jobs_dir / name / "job.json").exists()
    assert result["scratch_removed"] == [(run_dir / "training").as_uri(), scratch.as_uri()]
    assert not scratch.exists() and not (run_dir / "training").exists()
    assert (run_dir / "report.json").exists()

    # The other run of the same DAG is untouched.
    assert backend.describe(neighbour).state == JobState.RUNNING
    assert alive(script_pid(backend, neighbour))
    assert (backend.jobs_dir / neighbour / "model").exists()
    assert other_scratch.exists()
    assert (other_dir / "training" / "job" / "model" / "model.json").exists()

    # Compute and cost add up over the run's jobs (local is free by the price table).
    seconds = [backend.describe(name).billable_seconds for name in (done, running)]
    assert [j["compute_seconds"] for j in result["jobs"]] == seconds
    assert result["compute_seconds"] == round(sum(seconds), 3)
    assert all(s > 0 for s in seconds)
    assert result["cost_usd"] == 0.0
    assert all(j["hourly_price_usd"] == 0.0 for j in result["jobs"])


def test_teardown_sums_cost_with_price_override(backend, entry_point, channel, tmp_path, make_context):
    run = identity(tmp_path)
    names = [start(backend, run, attempt, entry_point, channel, gate=False) for attempt in (1, 2)]
    for name in names:
        wait_for(lambda name=name: backend.describe(name).state.terminal)

    result = teardown_op(backend, hourly_price_usd=3600.0).execute(make_context(DAG_ID, run.run_id))
    assert result["stopped_jobs"] == []
    assert [j["job_name"] for j in result["jobs"]] == names
    for job in result["jobs"]:
        assert job["hourly_price_usd"] == 3600.0
        assert job["cost_usd"] == pytest.approx(job["compute_seconds"], abs=1e-5)  # $1 per second
    assert result["cost_usd"] == pytest.approx(sum(j["cost_usd"] for j in result["jobs"]), abs=1e-6)
    assert result["cost_usd"] == pytest.approx(result["compute_seconds"], abs=1e-5)
    assert result["cost_usd"] > 0


def test_keep_scratch(backend, tmp_path, make_context):
    run = identity(tmp_path)
    scratch = run.scratch_dir()
    scratch.mkdir(parents=True)
    (scratch / "keep.txt").write_text("debug me")
    result = teardown_op(backend, keep_scratch=True).execute(make_context(DAG_ID, run.run_id))
    assert result["scratch_removed"] is None
    assert (scratch / "keep.txt").read_text() == "debug me"
    teardown_op(backend).execute(make_context(DAG_ID, run.run_id))
    assert not scratch.exists()


def test_teardown_of_a_run_with_nothing_to_do(backend, tmp_path, make_context):
    result = teardown_op(backend).execute(make_context(DAG_ID, identity(tmp_path).run_id))
    assert result == {
        "stopped_jobs": [],
        "jobs": [],
        "compute_seconds": 0,
        "cost_usd": 0,
        "cost_unknown_jobs": [],
        "scratch_removed": [],
        "errors": [],
    }
