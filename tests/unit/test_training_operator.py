"""TrainModelOperator against the real local backend: results, failures, retries, reattach, on_kill."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from helpers import bound, stop_running_jobs, wait_for

from airflow_retrain.operators.training import TrainingJobFailed, TrainModelOperator
from airflow_retrain.runs import RunIdentity
from airflow_retrain.training.base import JobState, TrainingJobRequest
from airflow_retrain.training.local import LocalTrainingBackend

PIPELINE = "churn"
DAG_ID = "unit_train"

# One script, steered by its channel (files the test drops there) and hyperparameters.
TRAIN = """
import json, os, pathlib, sys, time
hps = json.loads(os.environ["SM_HPS"])
channel = pathlib.Path(os.environ["SM_CHANNEL_TRAIN"])
with open(channel / "runs.txt", "a") as fh:
    fh.write(os.environ["SM_TRAINING_JOB_NAME"] + "\\n")
print("epoch 1 loss 0.5", flush=True)
if hps.get("gate"):
    while not (channel / "go").exists():
        time.sleep(0.05)
if (channel / "fail").exists():
    print("ERROR: out of memory on batch 3", file=sys.stderr, flush=True)
    sys.exit(2)
pathlib.Path(os.environ["SM_MODEL_DIR"], "model.json").write_text(json.dumps({"trees": 12}))
metrics_path = pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json")
if "metrics_raw" in hps:
    metrics_path.write_text(hps["metrics_raw"])
elif not hps.get("skip_metrics"):
    metrics_path.write_text(json.dumps({
        "metrics": {
            "roc_auc": 0.91,
            "log_loss": float("nan"),
            "f1": None,
            "lift": float("inf"),
            "rows": "1000",
            "label": "n/a",
        },
        "info": {"device": "cpu", "n_trees": 12},
    }))
print("done", flush=True)
"""

EXPECTED_METRICS = {
    "roc_auc": 0.91,
    "log_loss": None,
    "f1": None,
    "lift": None,
    "rows": None,  # the string "1000" is not a number: only finite reals count (issue 5)
    "label": None,
}


@pytest.fixture
def jobs_dir(tmp_path) -> Path:
    path = tmp_path / "jobs"
    yield path
    stop_running_jobs(LocalTrainingBackend(jobs_dir=path))


@pytest.fixture
def run_id(tmp_path) -> str:
    return f"manual__{tmp_path.name}"


@pytest.fixture
def run(run_id) -> RunIdentity:
    return RunIdentity(pipeline=PIPELINE, dag_id=DAG_ID, run_id=run_id, owner="tests")


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def make_op(entry_point, channel, jobs_dir, store_dir):
    def _make(**kwargs) -> TrainModelOperator:
        params = {
            "task_id": "train",
            "pipeline": PIPELINE,
            "entry_point": entry_point,
            "channels": {"train": str(channel)},
            "backend_config": {"jobs_dir": str(jobs_dir)},
            "poll_interval": 0.1,
            "artifact_root": store_dir.as_uri(),
            **kwargs,
        }
        return TrainModelOperator(**params)

    return _make


def runs_of(channel: Path) -> list[str]:
    path = channel / "runs.txt"
    return path.read_text().split() if path.exists() else []


def execute_in_thread(op, context) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def _target():
        try:
            box["result"] = op.execute(context)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    thread = threading.Thread(target=_target, daemon=True)
    thread.start()
    return thread, box


# --- construction ---------------------------------------------------------------------------


def test_constructor_is_cheap_and_honest(make_op, entry_point):
    op = make_op(hyperparameters={"depth": 4})
    assert op.template_fields == ("entry_point", "channels", "hyperparameters", "data_fingerprint")
    assert op.entry_point == entry_point
    assert op.hyperparameters == {"depth": 4}
    assert "training_backend" not in op.__dict__  # the backend is built on first use
    op.on_kill()  # nothing submitted yet: nothing to stop, and no backend built for it
    assert "training_backend" not in op.__dict__


# --- happy path -------------------------------------------------------------------------------


def test_happy_path_returns_metrics_and_pushes_xcoms(make_op, make_context, run, run_id, jobs_dir, channel, store_dir):
    ctx = make_context(DAG_ID, run_id)
    started = time.time()
    result = make_op().execute(ctx)

    job_name = run.job_name(1)
    assert result["job_name"] == job_name
    assert result["backend"] == "local"
    assert result["state"] == "Completed"
    assert result["metrics"] == EXPECTED_METRICS
    assert result["info"] == {"device": "cpu", "n_trees": 12}
    published = store_dir / DAG_ID / run.run_key / "training" / job_name
    assert result["model_uri"] == (published / "model").as_uri()
    assert result["output_uri"] == (published / "output").as_uri()
    assert result["metrics_uri"] == (published / "output" / "metrics.json").as_uri()
    assert json.loads((published / "model" / "model.json").read_text()) == {"trees": 12}
    assert json.loads((published / "outputs.json").read_text())["model_uri"] == result["model_uri"]
    assert result["compute_seconds"] > 0

    job = LocalTrainingBackend(jobs_dir=jobs_dir).describe(job_name)
    assert result["compute_seconds"] == job.billable_seconds
    assert result["cost"]["usd"] == 0.0
    assert result["cost"]["price_source"] == "table"
    assert result["cost"]["seconds"] == job.billable_seconds
    json.dumps(result, allow_nan=False)  # JSON-able for XCom, NaN included

    assert ctx["ti"].xcoms == {"job_name": job_name, "metrics": EXPECTED_METRICS}
    assert runs_of(channel) == [job_name]

    # The job carries the run's tags: teardown and retries find it by them.
    assert {k: v for k, v in job.tags.items() if k != "retrain:expires-at"} == {
        "retrain:pipeline": PIPELINE,
        "retrain:dag-id": DAG_ID,
        "retrain:run-key": run.run_key,
        "retrain:owner": "tests",
    }
    # Expires after the max runtime plus an hour of grace.
    assert int(job.tags["retrain:expires-at"]) == pytest.approx(started + 3600 + 3600, abs=60)


def test_hyperparameters_and_price_override(make_op, make_context, run_id, jobs_dir, tmp_path):
    result = make_op(
        hyperparameters={"metrics_raw": json.dumps({"metrics": {"acc": 0.5}})},
        instance_count=2,
        hourly_price_usd=3600.0,  # $1 per instance-second
    ).execute(make_context(DAG_ID, run_id))
    assert result["metrics"] == {"acc": 0.5}
    assert result["info"] == {}
    assert result["cost"]["price_source"] == "override"
    assert result["cost"]["instance_count"] == 2
    assert result["cost"]["usd"] == pytest.approx(result["compute_seconds"] * 2, abs=1e-5)


# --- failures ---------------------------------------------------------------------------------


def test_missing_metrics_fails_naming_the_job(make_op, make_context, run, run_id):
    ctx = make_context(DAG_ID, run_id)
    with pytest.raises(TrainingJobFailed, match=rf"training job {run.job_name(1)} wrote no metrics\.json"):
        make_op(hyperparameters={"skip_metrics": True}).execute(ctx)
    assert "metrics" not in ctx["ti"].xcoms


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "metrics.json is not JSON"),
        (json.dumps({"info": {"device": "cpu"}}), "metrics.json has no 'metrics' object"),
        (json.dumps({"metrics": [0.9]}), "metrics.json has no 'metrics' object"),
        (json.dumps([1, 2]), "metrics.json has no 'metrics' object"),
    ],
)
def test_malformed_metrics_fail_naming_the_job(make_op, make_context, run, run_id, raw, message):
    with pytest.raises(TrainingJobFailed, match=rf"training job {run.job_name(1)}: {message}"):
        make_op(hyperparameters={"metrics_raw": raw}).execute(make_context(DAG_ID, run_id))


def test_failed_script_raises_with_reason(make_op, make_context, run, run_id, channel):
    (channel / "fail").touch()
    ctx = make_context(DAG_ID, run_id)
    with pytest.raises(TrainingJobFailed) as e:
        make_op().execute(ctx)
    message = str(e.value)
    assert message.startswith(f"training job {run.job_name(1)} Failed: AlgorithmError: exit code 2: ")
    assert "ERROR: out of memory on batch 3" in message
    assert "est. $0.0000" in message
    assert ctx["ti"].xcoms == {"job_name": run.job_name(1)}


def test_max_runtime_is_passed_to_the_backend(make_op, make_context, run, run_id):
    started = time.monotonic()
    with pytest.raises(
        TrainingJobFailed, match=rf"{run.job_name(1)} Failed: MaxRuntimeExceeded: ran over 1 s"
    ):
        make_op(hyperparameters={"gate": True}, max_runtime_seconds=1).execute(make_context(DAG_ID, run_id))
    assert time.monotonic() - started < 6


# --- retries ----------------------------------------------------------------------------------


def test_retry_after_failure_starts_next_attempt(make_op, make_context, run, run_id, jobs_dir, channel):
    (channel / "fail").touch()
    with pytest.raises(TrainingJobFailed):
        make_op().execute(make_context(DAG_ID, run_id, try_number=1))
    (channel / "fail").unlink()

    ctx = make_context(DAG_ID, run_id, try_number=2)
    result = make_op().execute(ctx)
    assert result["job_name"] == run.job_name(2)
    assert result["job_name"].endswith("-2")
    assert ctx["ti"].xcoms["job_name"] == run.job_name(2)
    jobs = LocalTrainingBackend(jobs_dir=jobs_dir).find_jobs(run.run_tags())
    assert [(j.job_name, j.state) for j in jobs] == [
        (run.job_name(1), JobState.FAILED),
        (run.job_name(2), JobState.COMPLETED),
    ]
    assert runs_of(channel) == [run.job_name(1), run.job_name(2)]


def test_retry_while_job_runs_reattaches(make_op, make_context, run, run_id, jobs_dir, channel, entry_point):
    # The first attempt's worker died, but its job still runs.
    backend = LocalTrainingBackend(jobs_dir=jobs_dir)
    backend.submit(
        TrainingJobRequest(
            job_name=run.job_name(1),
            entry_point=entry_point,
            channels={"train": str(channel)},
            hyperparameters={"gate": True},
            tags=run.job_tags(),
        )
    )
    wait_for(lambda: runs_of(channel))

    ctx = make_context(DAG_ID, run_id, try_number=2)
    thread, box = execute_in_thread(make_op(), ctx)
    wait_for(lambda: "job_name" in ctx["ti"].xcoms)
    assert ctx["ti"].xcoms["job_name"] == run.job_name(1)
    assert [j.job_name for j in backend.find_jobs({})] == [run.job_name(1)]
    assert backend.describe(run.job_name(1)).state == JobState.RUNNING

    (channel / "go").touch()
    thread.join(timeout=bound(10))
    assert not thread.is_alive()
    assert "error" not in box, box.get("error")
    assert box["result"]["job_name"] == run.job_name(1)
    assert box["result"]["metrics"] == EXPECTED_METRICS
    assert [j.job_name for j in backend.find_jobs({})] == [run.job_name(1)]
    assert runs_of(channel) == [run.job_name(1)]  # the script ran once


def test_retry_after_completion_reuses_job(make_op, make_context, run, run_id, jobs_dir, channel):
    first = make_op().execute(make_context(DAG_ID, run_id, try_number=1))
    ctx = make_context(DAG_ID, run_id, try_number=2)
    second = make_op().execute(ctx)
    assert second["job_name"] == first["job_name"] == run.job_name(1)
    assert second["metrics"] == first["metrics"]
    assert second["compute_seconds"] == first["compute_seconds"]
    assert ctx["ti"].xcoms == {"job_name": run.job_name(1), "metrics": EXPECTED_METRICS}
    assert runs_of(channel) == [run.job_name(1)]
    assert len(LocalTrainingBackend(jobs_dir=jobs_dir).find_jobs({})) == 1


def test_completed_but_unpublished_job_is_published_not_rerun(
    make_op, make_context, run, run_id, jobs_dir, channel, store_dir
):
    """A worker that died after the job completed but before publishing: the retry publishes, no new job."""
    first = make_op().execute(make_context(DAG_ID, run_id))
    shutil.rmtree(store_dir / DAG_ID / run.run_key / "training")
    second = make_op().execute(make_context(DAG_ID, run_id, try_number=2))
    assert second["job_name"] == first["job_name"] == run.job_name(1)
    assert (store_dir / DAG_ID / run.run_key / "training" / run.job_name(1) / "outputs.json").exists()
    assert runs_of(channel) == [run.job_name(1)]


def test_cleared_run_after_teardown_trains_again(make_op, make_context, run, run_id, jobs_dir, channel, store_dir):
    """Teardown removed the outputs (store and backend): clearing the run must train, not reuse job 1."""
    from airflow_retrain.operators.teardown import TeardownRunOperator

    first = make_op().execute(make_context(DAG_ID, run_id))
    teardown = TeardownRunOperator(
        task_id="teardown", pipeline=PIPELINE, backend_config={"jobs_dir": str(jobs_dir)},
        artifact_root=store_dir.as_uri(),
    )
    removed = teardown.execute(make_context(DAG_ID, run_id))["scratch_removed"]
    assert (store_dir / DAG_ID / run.run_key / "training").as_uri() in removed
    assert not (store_dir / DAG_ID / run.run_key / "training").exists()

    again = make_op().execute(make_context(DAG_ID, run_id, try_number=1))
    assert first["job_name"] == run.job_name(1)
    assert again["job_name"] == run.job_name(2)
    assert runs_of(channel) == [run.job_name(1), run.job_name(2)]
    assert (store_dir / DAG_ID / run.run_key / "training" / run.job_name(2) / "model" / "model.json").exists()


def test_other_runs_jobs_are_not_reused(make_op, make_context, run, run_id, jobs_dir, channel):
    make_op().execute(make_context(DAG_ID, run_id))
    other = RunIdentity(pipeline=PIPELINE, dag_id=DAG_ID, run_id=run_id + "-next", owner="tests")
    result = make_op().execute(make_context(DAG_ID, other.run_id))
    assert result["job_name"] == other.job_name(1) != run.job_name(1)
    assert runs_of(channel) == [run.job_name(1), other.job_name(1)]


# --- on_kill ----------------------------------------------------------------------------------


def test_on_kill_stops_the_running_job(make_op, make_context, run, run_id, jobs_dir, channel):
    op = make_op(hyperparameters={"gate": True})
    ctx = make_context(DAG_ID, run_id)
    thread, box = execute_in_thread(op, ctx)
    wait_for(lambda: runs_of(channel) and "job_name" in ctx["ti"].xcoms)
    backend = LocalTrainingBackend(jobs_dir=jobs_dir)
    assert backend.describe(run.job_name(1)).state == JobState.RUNNING

    op.on_kill()
    assert backend.describe(run.job_name(1)).state == JobState.STOPPED
    thread.join(timeout=bound(10))
    assert not thread.is_alive()
    assert isinstance(box.get("error"), TrainingJobFailed), box
    assert f"training job {run.job_name(1)} Stopped: stopped by request" in str(box["error"])
    assert "done" not in backend.read_logs(run.job_name(1))[0]


def test_task_timeout_stops_the_job(tmp_path, make_context, monkeypatch):
    """execution_timeout interrupts the wait: the job is stopped, not left for a retry to inherit."""
    from airflow.sdk.exceptions import AirflowTaskTimeout

    script = tmp_path / "slow.py"
    script.write_text("import time\nprint('training', flush=True)\ntime.sleep(60)\n")
    channel = tmp_path / "train"
    channel.mkdir()
    op = TrainModelOperator(
        task_id="train",
        pipeline="unit",
        entry_point=str(script),
        channels={"train": str(channel)},
        backend_config={"jobs_dir": str(tmp_path / "jobs")},
        poll_interval=0.1,
    )
    backend = op.training_backend
    real_describe = backend.describe
    calls = {"n": 0}

    def describe_then_time_out(name):
        calls["n"] += 1
        if calls["n"] == 4:  # the timeout fires once, during the wait
            raise AirflowTaskTimeout("Timeout, PID: 1")
        return real_describe(name)

    monkeypatch.setattr(backend, "describe", describe_then_time_out)
    ctx = make_context(run_id="timeout-run")
    with pytest.raises(AirflowTaskTimeout):
        op.execute(ctx)
    monkeypatch.setattr(backend, "describe", real_describe)
    assert backend.describe(ctx["ti"].xcoms["job_name"]).state == JobState.STOPPED
