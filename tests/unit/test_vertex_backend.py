"""VertexTrainingBackend through the real ``JobServiceClient`` against the fake Vertex AI (gRPC) and its
GCS stand-in: submit, describe, labels, outputs, cost, links, cancel, replicas, spot, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fakes import fake_vertex
from helpers import connected_fake_vertex, wait_for

from airflow_retrain.runs import RunIdentity, to_labels
from airflow_retrain.training.base import (
    JobState,
    TrainingInputError,
    TrainingJobExists,
    TrainingJobNotFound,
    TrainingJobRequest,
    TrainingOutputsMissing,
)
from airflow_retrain.training.vertex import VertexCloudError, VertexTrainingBackend

ROOT = Path(__file__).resolve().parents[2]
CONN = "google_fake_vx"
BUCKET = "retrain-vx"

SCRIPT = '''
import json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import contract

def run(argv):
    hp = contract.parse_cli(argv)
    env = contract.TrainingEnvironment.from_environ(default_channels=("train",))
    rounds, sleep = int(hp.get("rounds", 2)), float(hp.get("sleep", 0))
    start, ck = 0, env.checkpoint_dir
    if ck and (ck / "state.json").exists():
        try:
            start = json.loads((ck / "state.json").read_text())["round"]
        except (ValueError, KeyError):
            raise contract.TrainingError(f"checkpoint {ck / 'state.json'} cannot be read")
    trained = 0
    for r in range(start, rounds):
        time.sleep(sleep)
        trained += 1
        print(f"round {r + 1}/{rounds}", flush=True)
        if ck:
            ck.mkdir(parents=True, exist_ok=True)
            contract.write_json(ck / "state.json", {"round": r + 1})
    if hp.get("fail"):
        raise contract.TrainingError(hp["fail"])
    env.model_dir.mkdir(parents=True, exist_ok=True)
    (env.model_dir / "model.json").write_text("{}")
    files = sorted(p.name for p in env.channel("train").iterdir())
    contract.write_metrics(env, {"roc_auc": 0.9}, {"rounds_trained": trained, "files": files,
                           "host": env.current_host, "hosts": list(env.hosts), "platform": env.platform})

sys.exit(contract.run_main(run))
'''


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with connected_fake_vertex(tmp_path_factory.mktemp("gcs"), CONN, "retrain-proj", stop_grace_seconds=2) as server:
        yield server


@pytest.fixture
def bucket(fake):
    fake.reset()
    path = fake.gcs_root / BUCKET
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def make_backend(**kwargs) -> VertexTrainingBackend:
    config = {"region": "us-central1", "staging_bucket": f"gs://{BUCKET}", "prefix": "unit", "connection_id": CONN}
    return VertexTrainingBackend(**{**config, **kwargs})


@pytest.fixture
def backend(bucket) -> VertexTrainingBackend:
    return make_backend()


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text(SCRIPT)
    shutil.copy(ROOT / "include" / "training" / "churn" / "contract.py", folder / "contract.py")
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "part-0.parquet").write_bytes(b"PAR1")
    return folder / "train.py", data


def request(source, name="churn-abc123-1", count=1, **hps) -> TrainingJobRequest:
    entry, data = source
    return TrainingJobRequest(
        job_name=name,
        entry_point=str(entry),
        channels={"train": str(data)},
        hyperparameters=hps,
        instance_count=count,
        max_runtime_seconds=600,
        tags=RunIdentity("churn", "Churn.Retrain", "manual__2026", "ML Platform").job_tags(),
    )


def finished(backend, name="churn-abc123-1", timeout=30.0):
    return wait_for(lambda: (j := backend.describe(name)).state.terminal and j, timeout)


def test_submit_describe_labels_outputs_cost_links_cleanup(fake, backend, source, tmp_path):
    req = request(source)
    job = backend.submit(req)
    assert job.state in (JobState.PENDING, JobState.RUNNING)
    done = finished(backend)
    assert done.state == JobState.COMPLETED, done.failure_reason
    cj = backend.client.get_custom_job(name=done.details["resource_name"])
    tags = req.tags
    assert dict(cj.labels) == {**to_labels(tags), "retrain_job-name": "churn-abc123-1"}
    assert cj.labels["retrain_dag-id"] == "churn-retrain" and cj.labels["retrain_owner"] == "ml-platform"
    pool = cj.job_spec.worker_pool_specs[0]
    assert pool.machine_spec.machine_type == "n1-standard-4" and pool.replica_count == 1
    assert pool.container_spec.command[1] == f"/gcs/{BUCKET}/unit/churn-abc123-1/source/train.py"
    assert done.started_at and done.ended_at >= done.started_at and done.billable_seconds >= 0

    found = backend.find_jobs({"retrain:dag-id": "Churn.Retrain", "retrain:run-key": tags["retrain:run-key"]})
    assert [j.job_name for j in found] == ["churn-abc123-1"]
    assert found[0].tags["retrain:pipeline"] == "churn"
    assert backend.find_jobs({"retrain:run-key": "other"}) == []

    outputs = backend.fetch_outputs("churn-abc123-1", tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "output" / "metrics.json").read_text())
    assert metrics["info"]["files"] == ["part-0.parquet"] and metrics["info"]["platform"] == "vertex"
    assert outputs.model_uri == f"file://{tmp_path / 'out' / 'model'}"

    cost = backend.cost(done)
    assert (cost.hourly_price_usd, cost.region, cost.price_source, cost.instance_type) == (
        0.2185, "us-central1", "table", "n1-standard-4"
    )
    assert cost.usd == round(done.billable_seconds / 3600 * 0.2185, 6)

    job_id = done.details["resource_name"].rsplit("/", 1)[-1]
    assert backend.job_link_params("churn-abc123-1") == {
        "region": "us-central1", "project_id": "retrain-proj", "custom_job_id": job_id
    }
    assert backend.job_link_params("no-such-job") == {}

    assert backend.cleanup("churn-abc123-1") == [
        f"gs://{BUCKET}/unit/churn-abc123-1/source/", f"gs://{BUCKET}/unit/churn-abc123-1/input/"
    ]
    assert backend.fetch_outputs("churn-abc123-1", tmp_path / "again").model_uri  # outputs kept
    shutil.rmtree(fake.gcs_root / BUCKET / "unit" / "churn-abc123-1" / "model")
    with pytest.raises(TrainingOutputsMissing, match="model/ is missing"):
        backend.fetch_outputs("churn-abc123-1", tmp_path / "third")


def test_duplicate_name_reattaches_and_unknown_job(backend, source):
    backend.submit(request(source))
    with pytest.raises(TrainingJobExists):
        backend.submit(request(source))
    with pytest.raises(TrainingJobNotFound):
        backend.describe("never-submitted-1")
    finished(backend)


def test_cancel_stops_the_job_and_is_idempotent(fake, backend, source):
    backend.submit(request(source, rounds=100, sleep=0.2))
    wait_for(lambda: backend.describe("churn-abc123-1").state == JobState.RUNNING, 10)
    resource = backend.describe("churn-abc123-1").details["resource_name"]
    pids = wait_for(lambda: fake.job_info(resource)["pids"], 10)
    assert backend.stop("churn-abc123-1").state in (JobState.STOPPING, JobState.STOPPED)
    done = finished(backend)
    assert done.state == JobState.STOPPED and done.failure_reason.startswith("Cancelled")
    assert backend.stop("churn-abc123-1").state == JobState.STOPPED
    import psutil

    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


def test_cancelled_from_outside(backend, source):
    backend.submit(request(source, rounds=100, sleep=0.2))
    name = backend.describe("churn-abc123-1").details["resource_name"]
    backend.client.cancel_custom_job(name=name)  # e.g. from the console
    done = finished(backend)
    assert done.state == JobState.STOPPED and not backend.is_permanent_failure(done)


def test_failing_script_quotes_its_error_and_is_permanent(backend, source):
    backend.submit(request(source, fail="target column 'churned' not found"))
    done = finished(backend)
    assert done.state == JobState.FAILED
    assert done.failure_reason.startswith("AlgorithmError: The replica workerpool0-0 exited with a non-zero status of 1")
    assert "ERROR: target column 'churned' not found" in done.failure_reason
    assert backend.is_permanent_failure(done)


def test_replicas_get_the_cluster_spec_and_one_dying_fails_the_job(fake, bucket, source, tmp_path):
    backend = make_backend(replica_count=2)
    backend.submit(request(source, name="two-1"))
    done = finished(backend, "two-1")
    assert done.state == JobState.COMPLETED and done.instance_count == 2
    metrics = json.loads((bucket / "unit" / "two-1" / "output" / "metrics.json").read_text())
    assert metrics["info"]["hosts"] == ["workerpool0-0", "workerpool0-1"]

    backend.submit(request(source, name="two-2", rounds=100, sleep=0.2))
    resource = wait_for(lambda: backend.describe("two-2").state == JobState.RUNNING and backend.describe("two-2"), 10)
    info = wait_for(lambda: len((i := fake.job_info(resource.details["resource_name"]))["pids"]) == 2 and i, 10)
    fake.kill_replica(resource.details["resource_name"], 1)
    failed = finished(backend, "two-2")
    assert failed.state == JobState.FAILED and "workerpool0-1 exited with signal 9" in failed.failure_reason
    import psutil

    assert not psutil.pid_exists(info["pids"][0]) or psutil.Process(info["pids"][0]).status() == psutil.STATUS_ZOMBIE


def test_spot_preemption_restarts_from_the_checkpoint(fake, bucket, source):
    backend = make_backend(spot=True)
    backend.submit(request(source, rounds=8, sleep=0.25))
    cj = backend.client.get_custom_job(name=backend.describe("churn-abc123-1").details["resource_name"])
    assert cj.job_spec.scheduling.strategy.name == "SPOT"
    state = bucket / "unit" / "churn-abc123-1" / "checkpoints" / "state.json"
    wait_for(lambda: state.exists() and json.loads(state.read_text())["round"] >= 3, 20)
    fake.reclaim(cj.name)
    done = finished(backend)
    assert done.state == JobState.COMPLETED, done.failure_reason
    assert fake.job_info(cj.name)["interruptions"] == 1
    info = json.loads((bucket / "unit" / "churn-abc123-1" / "output" / "metrics.json").read_text())["info"]
    assert info["rounds_trained"] <= 5  # resumed from round >= 3 of 8, not from scratch
    cost = backend.cost(done)
    assert cost.spot and cost.hourly_price_usd == 0.0438 and cost.spot_savings_usd == pytest.approx(
        round(done.billable_seconds / 3600 * (0.2185 - 0.0438), 6), abs=2e-6  # two amounts, each rounded to 1e-6
    )


def test_on_demand_preemption_fails_retryably(fake, backend, source):
    backend.submit(request(source, rounds=100, sleep=0.2))
    name = wait_for(lambda: (j := backend.describe("churn-abc123-1")).state == JobState.RUNNING and j, 10)
    fake.reclaim(name.details["resource_name"])
    done = finished(backend)
    assert done.state == JobState.FAILED and done.failure_reason.startswith("CapacityError")
    assert not backend.is_permanent_failure(done)


def test_unreadable_checkpoint_fails_with_its_path(bucket, backend, source):
    ck = bucket / "unit" / "churn-abc123-1" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "state.json").write_text("{not json")
    backend.submit(request(source))
    done = finished(backend)
    assert done.state == JobState.FAILED and "checkpoint" in done.failure_reason
    assert "checkpoints/state.json cannot be read" in done.failure_reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"machine_type": "n9-giant-4"}, "training.vertex.machine_type: 'n9-giant-4' is not a Vertex AI"),
        ({"accelerator_type": "NVIDIA_TESLA_Z9", "accelerator_count": 1}, "not a Vertex AI AcceleratorType"),
        ({"accelerator_type": "NVIDIA_L4", "accelerator_count": 1}, "NVIDIA_L4 is not offered with machine type n1-standard-4"),
        ({"machine_type": "a2-highgpu-1g"}, "a2-highgpu-1g comes with GPUs"),
        ({"region": None}, "training.vertex.region is required"),
        ({"staging_bucket": ""}, "training.vertex.staging_bucket is required"),
    ],
)
def test_bad_machine_and_missing_settings_name_the_field(kwargs, message):
    with pytest.raises(TrainingInputError, match=message.replace(".", r"\.").replace("(", r"\(")):
        make_backend(**kwargs)


def test_missing_project_and_missing_bucket(monkeypatch, fake, bucket, source):
    conn = fake_vertex.connection(fake)
    conn["extra"].pop("project")
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_NOPROJ", json.dumps(conn))
    with pytest.raises(TrainingInputError, match="training.vertex.project is not set"):
        make_backend(connection_id="google_noproj").submit(request(source))
    with pytest.raises(TrainingInputError, match="training.vertex.staging_bucket: bucket gs://nope"):
        make_backend(staging_bucket="nope").submit(request(source))


def test_quota_exceeded_quotes_the_cloud_and_leaves_nothing(fake, bucket, backend, source):
    before = set(fake.job_ids())
    fake.exceed_quota(1)
    with pytest.raises(VertexCloudError, match="quota exceeded .*custom_model_training_cpus.*replica_count"):
        backend.submit(request(source))
    assert set(fake.job_ids()) == before
    assert not [p for p in (bucket / "unit").rglob("*") if p.is_file()]  # staged files removed


@pytest.mark.slow
def test_teardown_finds_the_runs_vertex_jobs_by_label_and_stops_them(fake, bucket, source, tmp_path, make_context):
    from airflow_retrain.operators.teardown import TeardownRunOperator

    run = RunIdentity("churn", "unit_vx_teardown", f"manual__{tmp_path.name}", "tests")
    other = RunIdentity("churn", "unit_vx_teardown", f"manual__{tmp_path.name}-other", "tests")
    backend = make_backend()
    for identity, name in ((run, "vx-td-1"), (other, "vx-td-2")):
        req = request(source, name=name, rounds=100, sleep=0.2)
        backend.submit(TrainingJobRequest(**{**req.__dict__, "tags": identity.job_tags()}))
    wait_for(lambda: backend.describe("vx-td-1").state == JobState.RUNNING, 10)
    op = TeardownRunOperator(
        task_id="teardown",
        pipeline="churn",
        backend="vertex",
        backend_config=backend.config(),
        artifact_root=(tmp_path / "store").as_uri(),
    )
    result = op.execute(make_context("unit_vx_teardown", run.run_id))
    assert result["stopped_jobs"] == ["vx-td-1"] and result["errors"] == []
    assert finished(backend, "vx-td-1").state == JobState.STOPPED
    assert backend.describe("vx-td-2").state == JobState.RUNNING  # another run's job is untouched
    assert not [p for p in (bucket / "unit" / "vx-td-1" / "source").rglob("*") if p.is_file()]  # staged code removed
    backend.stop("vx-td-2")


def test_job_log_comes_from_cloud_logging_with_a_cursor(fake, backend, source):
    backend.submit(request(source, rounds=3))
    done = finished(backend)
    assert done.state == JobState.COMPLETED
    text, cursor = backend.read_logs("churn-abc123-1", 0)
    assert "[workerpool0-0] round 1/3\n[workerpool0-0] round 2/3\n[workerpool0-0] round 3/3\n" in text
    assert isinstance(cursor, str) and "|" in cursor  # timestamp|insertId, JSON-able for the trigger
    assert backend.read_logs("churn-abc123-1", cursor) == ("", cursor)  # nothing new, nothing repeated
    assert fake.logging.calls >= 2


def test_async_describe_and_logs_match_the_sync_ones(fake, backend, source):
    import asyncio

    backend.submit(request(source))
    done = finished(backend)
    fresh = make_backend()  # a triggerer rebuilds the backend from its config: no cached resource name

    async def both():
        return await fresh.adescribe("churn-abc123-1"), await fresh.aread_logs("churn-abc123-1", 0)

    job, (text, cursor) = asyncio.run(both())
    assert (job.state, job.details["resource_name"]) == (done.state, done.details["resource_name"])
    assert (text, cursor) == backend.read_logs("churn-abc123-1", 0)
    with pytest.raises(TrainingJobNotFound):
        asyncio.run(make_backend().adescribe("never-submitted-1"))


def test_plain_grpc_is_refused_for_a_host_that_is_not_loopback(monkeypatch, fake, bucket, source):
    conn = fake_vertex.connection(fake)
    conn["extra"]["api_endpoint"] = "vertex.example.com:443"
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_REMOTE_PLAIN", json.dumps(conn))
    with pytest.raises(TrainingInputError, match="'google_remote_plain': api_endpoint_insecure is honoured only for a loopback"):
        make_backend(connection_id="google_remote_plain").submit(request(source))


def test_staging_goes_through_the_gcs_json_api(fake, backend, source):
    backend.submit(request(source))
    finished(backend)
    # what the backend staged is visible to any GCS client of the fake, not only through its folder
    import gcsfs
    from google.auth.credentials import AnonymousCredentials

    fs = gcsfs.GCSFileSystem(endpoint_url=fake.gcs.endpoint, token=AnonymousCredentials(), project="p")
    assert f"{BUCKET}/unit/churn-abc123-1/source/train.py" in fs.find(f"{BUCKET}/unit/churn-abc123-1/source")
    assert f"{BUCKET}/unit/churn-abc123-1/input/train/part-0.parquet" in fs.find(f"{BUCKET}/unit/churn-abc123-1/input")
