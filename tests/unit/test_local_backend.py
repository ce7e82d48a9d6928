"""LocalTrainingBackend: real subprocesses under the SageMaker training-container contract."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest
from helpers import alive, stop_running_jobs, wait_for

from airflow_retrain.training import get_backend
from airflow_retrain.training.base import (
    JobState,
    TrainingJobExists,
    TrainingJobNotFound,
    TrainingJobRequest,
    TrainingOutputsMissing,
)
from airflow_retrain.training.local import LocalTrainingBackend, local_gpu_count

# A script that follows the contract: hyperparameters in, model and metrics out.
TRAIN_OK = """
import json, os, pathlib
hps = json.loads(os.environ["SM_HPS"])
pathlib.Path(os.environ["SM_MODEL_DIR"], "model.json").write_text(json.dumps({"hps": hps}))
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json").write_text(
    json.dumps({"metrics": {"accuracy": 0.9}, "info": {"device": "cpu"}})
)
print("trained", flush=True)
"""

# Records everything the script can see of its environment.
DUMP_ENV = """
import json, os, pathlib, sys
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "seen.json").write_text(
    json.dumps({"env": dict(os.environ), "argv": sys.argv[1:], "cwd": os.getcwd()})
)
"""

FAIL = """
import sys
print("loading data", flush=True)
print("step 1 ok", flush=True)
print("boom: bad data in column tenure", file=sys.stderr, flush=True)
sys.exit(3)
"""

FAIL_WITH_FAILURE_FILE = """
import os, pathlib, sys
print("lots of noise", flush=True)
pathlib.Path(os.environ["SM_OUTPUT_FAILURE"]).write_text("target column has 3 classes, expected 2\\n")
print("more noise", flush=True)
sys.exit(1)
"""

# Prints, records its pid (and optionally a child's), then waits for a "go" file in its channel.
GATED = """
import json, os, pathlib, subprocess, sys, time
out = pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"])
pids = {"script": os.getpid()}
if os.environ.get("SM_HP_SPAWN_CHILD") == "true":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pids["child"] = child.pid
(out / "pids.tmp").write_text(json.dumps(pids))
os.replace(out / "pids.tmp", out / "pids.json")
print("started", flush=True)
gate = pathlib.Path(os.environ["SM_CHANNEL_TRAIN"], "go")
while not gate.exists():
    time.sleep(0.05)
print("finished", flush=True)
pathlib.Path(os.environ["SM_MODEL_DIR"], "model.json").write_text("{}")
(out / "metrics.json").write_text(json.dumps({"metrics": {"accuracy": 0.8}, "info": {}}))
"""


def wait_terminal(backend, job_name: str, timeout: float = 15.0):
    return wait_for(lambda: (j := backend.describe(job_name)).state.terminal and j, timeout)


@pytest.fixture
def channel(tmp_path) -> Path:
    path = tmp_path / "data" / "train"
    path.mkdir(parents=True)
    (path / "rows.csv").write_text("a,b\n1,2\n")
    return path


@pytest.fixture
def script(tmp_path):
    def _write(source: str, name: str = "train.py") -> str:
        path = tmp_path / "scripts" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return str(path)

    return _write


@pytest.fixture
def backend(tmp_path):
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs")
    leftover_pids: list[int] = []
    backend.leftover_pids = leftover_pids  # tests register child pids to kill should they survive
    yield backend
    stop_running_jobs(backend)
    for pid in leftover_pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def request(name: str, entry_point: str, channel: Path, **kwargs) -> TrainingJobRequest:
    return TrainingJobRequest(
        job_name=name, entry_point=entry_point, channels={"train": str(channel)}, **kwargs
    )


def read_pids(backend, job_name: str) -> dict[str, int]:
    path = backend.jobs_dir / job_name / "output" / "data" / "pids.json"
    wait_for(path.exists)
    return json.loads(path.read_text())


# --- submit / complete ------------------------------------------------------------------------


def test_get_backend_builds_local_with_config(tmp_path):
    backend = get_backend("local", jobs_dir=str(tmp_path / "j"))
    assert isinstance(backend, LocalTrainingBackend)
    assert backend.jobs_dir == tmp_path / "j"
    with pytest.raises(ValueError, match="unknown training backend 'sagemakr'; known: local"):
        get_backend("sagemakr")


def test_submit_runs_to_completion_with_outputs(backend, script, channel):
    job = backend.submit(request("ok-1", script(TRAIN_OK), channel, hyperparameters={"depth": 4}))
    assert job.job_name == "ok-1"
    assert job.backend == "local"
    assert job.state in (JobState.RUNNING, JobState.COMPLETED)
    assert job.details["pid"] > 0

    done = wait_terminal(backend, "ok-1")
    assert done.state == JobState.COMPLETED
    assert done.failure_reason is None
    assert done.ended_at >= done.started_at >= done.created_at

    store = backend.jobs_dir.parent / "store"
    outputs = backend.fetch_outputs("ok-1", store / "training" / "ok-1")
    assert outputs.model_uri == (store / "training" / "ok-1" / "model").as_uri()
    assert outputs.output_uri == (store / "training" / "ok-1" / "output").as_uri()
    published = store / "training" / "ok-1"
    assert json.loads((published / "model" / "model.json").read_text()) == {"hps": {"depth": 4}}
    assert outputs.metrics_uri == (published / "output" / "metrics.json").as_uri()
    assert json.loads((published / "output" / "metrics.json").read_text())["metrics"] == {"accuracy": 0.9}
    assert backend.read_logs("ok-1")[0] == "trained\n"

    # Once teardown cleaned the job up, its outputs cannot be published again: the caller retrains.
    backend.cleanup("ok-1")
    with pytest.raises(TrainingOutputsMissing, match="ok-1 completed, but its outputs .* were cleaned up"):
        backend.fetch_outputs("ok-1", store / "again")


def test_uri_channels_are_staged_into_the_job(backend, script, tmp_path):
    """Channels given as artifact-store URIs are downloaded into <job>/input/data/<channel>."""
    store = tmp_path / "store" / "dataset" / "train"
    (store / "nested").mkdir(parents=True)
    (store / "part-0.parquet").write_bytes(b"rows")
    (store / "nested" / "part-1.parquet").write_bytes(b"more")
    entry = script(
        """
        import json, os, pathlib
        root = pathlib.Path(os.environ["SM_CHANNEL_TRAIN"])
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        out = pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"])
        (out / "metrics.json").write_text(json.dumps({"metrics": {}, "root": str(root), "files": files}))
        """
    )
    backend.submit(TrainingJobRequest(job_name="uri-1", entry_point=entry, channels={"train": store.as_uri()}))
    assert wait_terminal(backend, "uri-1").state == JobState.COMPLETED
    seen = json.loads((backend.jobs_dir / "uri-1" / "output" / "data" / "metrics.json").read_text())
    assert seen["root"] == str(backend.jobs_dir / "uri-1" / "input" / "data" / "train")
    assert seen["files"] == ["nested/part-1.parquet", "part-0.parquet"]

    missing = (tmp_path / "store" / "nothing").as_uri()
    with pytest.raises(FileNotFoundError, match=f"channel 'train' {missing} does not exist"):
        backend.submit(TrainingJobRequest(job_name="uri-2", entry_point=entry, channels={"train": missing}))
    assert not (backend.jobs_dir / "uri-2").exists()  # nothing half-made for a retry to trip over


def test_fetch_outputs_refuses_unfinished_job(backend, script, channel):
    backend.submit(request("gated-1", script(GATED), channel))
    with pytest.raises(RuntimeError, match="gated-1 is Running, not Completed"):
        backend.fetch_outputs("gated-1", backend.jobs_dir.parent / "store")


def test_describe_unknown_job(backend):
    with pytest.raises(TrainingJobNotFound, match="nope"):
        backend.describe("nope")


# --- the SageMaker environment contract -------------------------------------------------------


def test_environment_contract(backend, script, tmp_path, channel):
    validation = tmp_path / "data" / "validation"
    validation.mkdir()
    hps = {"epochs": 3, "learning_rate": 0.1, "objective": "binary:logistic", "early_stop": True}
    backend.submit(
        TrainingJobRequest(
            job_name="env-1",
            entry_point=script(DUMP_ENV),
            channels={"train": str(channel), "validation": str(validation)},
            hyperparameters=hps,
            gpu="none",
        )
    )
    assert wait_terminal(backend, "env-1").state == JobState.COMPLETED
    job_dir = backend.jobs_dir / "env-1"
    seen = json.loads((job_dir / "output" / "data" / "seen.json").read_text())
    env = seen["env"]

    assert env["SM_CHANNEL_TRAIN"] == str(channel)
    assert env["SM_CHANNEL_VALIDATION"] == str(validation)
    assert json.loads(env["SM_CHANNELS"]) == ["train", "validation"]
    assert env["SM_MODEL_DIR"] == str(job_dir / "model")
    assert env["SM_OUTPUT_DATA_DIR"] == str(job_dir / "output" / "data")
    assert env["SM_OUTPUT_FAILURE"] == str(job_dir / "output" / "failure")
    assert env["SM_TRAINING_JOB_NAME"] == env["TRAINING_JOB_NAME"] == "env-1"
    assert json.loads(env["SM_HPS"]) == hps
    assert env["SM_HP_EPOCHS"] == "3"
    assert env["SM_HP_OBJECTIVE"] == "binary:logistic"  # strings are passed raw, not JSON-quoted
    assert env["SM_HP_EARLY_STOP"] == "true"
    assert env["SM_NUM_GPUS"] == "0"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert seen["argv"] == [
        "--epochs", "3",
        "--learning_rate", "0.1",
        "--objective", "binary:logistic",
        "--early_stop", "true",
    ]  # fmt: skip
    assert seen["cwd"] == str(job_dir / "work")
    assert json.loads((job_dir / "input" / "config" / "hyperparameters.json").read_text()) == hps


def test_gpu_auto_reports_visible_gpus(backend, script, channel, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    backend.submit(request("env-auto", script(DUMP_ENV), channel, gpu="auto"))
    assert wait_terminal(backend, "env-auto").state == JobState.COMPLETED
    env = json.loads((backend.jobs_dir / "env-auto" / "output" / "data" / "seen.json").read_text())["env"]
    assert env["SM_NUM_GPUS"] == str(local_gpu_count())
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert backend.describe("env-auto").details["gpus_visible"] == local_gpu_count()


SECRETS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:hunter2-airflow@db/airflow",
    "AIRFLOW_CONN_WAREHOUSE": "postgresql://wh:hunter2-conn@wh/db",
    "MLFLOW_TRACKING_PASSWORD": "hunter2-mlflow",
    "RETRAIN_PG_PASSWORD": "hunter2-pg",
    "AWS_SECRET_ACCESS_KEY": "hunter2-aws",
    "SM_CHANNEL_SNEAKY": "/not/my/channel",
}


def test_script_sees_no_private_environment(backend, script, channel, monkeypatch):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    backend.submit(request("env-priv", script(DUMP_ENV), channel))
    assert wait_terminal(backend, "env-priv").state == JobState.COMPLETED
    job_dir = backend.jobs_dir / "env-priv"
    env = json.loads((job_dir / "output" / "data" / "seen.json").read_text())["env"]

    leaked = [k for k in env if k.startswith(("AIRFLOW", "MLFLOW_", "RETRAIN_PG_", "AWS_"))]
    assert leaked == []
    assert "SM_CHANNEL_SNEAKY" not in env
    assert "HARMLESS_SETTING" not in env  # an allow-list: unknown names stay with the worker (issue 5)
    assert "AIRFLOW_HOME" in os.environ  # (set by conftest; proves the filter had something to drop)

    record = (job_dir / "job.json").read_text()
    assert "env" not in json.loads(record)
    for value in SECRETS.values():
        assert value not in record
    for name in ("runner.log", "log.txt", "input/config/hyperparameters.json"):
        text = (job_dir / name).read_text()
        assert not any(value in text for value in SECRETS.values()), name


# Secrets as they sit in a real worker's environment, under names no prefix deny-list would guess.
PLANTED_SECRETS = {
    "PGPASSWORD": "planted-pg",
    "DATABASE_URL": "postgresql://u:planted-db@h/db",
    "OPENAI_API_KEY": "sk-planted-openai",
    "HF_TOKEN": "hf_planted",
    "GITHUB_TOKEN": "ghp_planted",
    "AZURE_CLIENT_SECRET": "planted-azure",
    "_AIRFLOW_WWW_USER_PASSWORD": "planted-www",
    "AIRFLOW_CONN_X": "postgresql://x:planted-conn@h/db",
    "AWS_SECRET_ACCESS_KEY": "planted-aws",
    "MLFLOW_TRACKING_PASSWORD": "planted-mlflow",
}


def _proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_running_job_environment_is_an_allow_list(tmp_path, script, channel, monkeypatch):
    """Read the real environment of the running runner and script from /proc/<pid>/environ."""
    for key, value in PLANTED_SECRETS.items():
        monkeypatch.setenv(key, value)
    # The machine's own LC_*/MKL_*/OPENBLAS_* variables (some hosts set OPENBLAS_CORETYPE) pass by design:
    # this test decides them, so its expected set holds on any host.
    for key in [k for k in os.environ if k.startswith(("LC_", "MKL_", "OPENBLAS_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.setenv("PYTHONPATH", "/worker/only")
    monkeypatch.setenv("TEAM_SETTING", "asked-for")
    backend = LocalTrainingBackend(
        jobs_dir=tmp_path / "jobs",
        pass_environment=["TEAM_SETTING", "OPENAI_API_KEY_NOT_SET"],
        environment={"MODE": "nightly"},
    )
    try:
        job = backend.submit(request("env-proc", script(GATED), channel))
        pids = read_pids(backend, "env-proc")
        for name, pid in (("runner", job.details["pid"]), ("script", pids["script"])):
            env = _proc_environ(pid)
            leaked = {k: v for k, v in env.items() if k in PLANTED_SECRETS or v in PLANTED_SECRETS.values()}
            assert leaked == {}, (name, leaked)
            # The one RETRAIN_ name is the job's own process token (never a worker value: see job.json).
            assert env.pop("RETRAIN_JOB_TOKEN") == backend._record("env-proc")["process_token"], name
            assert not [k for k in env if k.startswith(("AIRFLOW", "_AIRFLOW", "MLFLOW", "AWS_", "RETRAIN_"))], name
            assert env["PATH"] == os.environ["PATH"]
            assert env["LANG"] == env["LC_ALL"] == "C.UTF-8"
            assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "2"
            assert env["TEAM_SETTING"] == "asked-for" and env["MODE"] == "nightly"
            assert "PYTHONPATH" not in env
            assert env["SM_TRAINING_JOB_NAME"] == "env-proc" and env["SM_CHANNEL_TRAIN"] == str(channel)
            extra = set(env) - {"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE",
                                "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TEAM_SETTING", "MODE", "PYTHONUNBUFFERED",
                                "TRAINING_JOB_NAME", "CUDA_VISIBLE_DEVICES", "TZ", "PYTHONHASHSEED",
                                "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS", "LD_LIBRARY_PATH"}  # fmt: skip
            # SM_* is the container contract; OPENBLAS_* the thread settings the backend passes by prefix.
            assert {k for k in extra if not k.startswith(("SM_", "OPENBLAS_"))} == set(), (name, extra)
        (channel / "go").write_text("")
        assert wait_terminal(backend, "env-proc").state == JobState.COMPLETED
    finally:
        stop_running_jobs(backend)


def test_a_spec_cannot_pass_airflow_variables_or_the_contract(tmp_path):
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs", environment={"AIRFLOW_CONN_WAREHOUSE": "x"})
    with pytest.raises(ValueError, match="reserved"):
        backend.submit(TrainingJobRequest(job_name="x", entry_point=__file__, channels={}))
    assert not (tmp_path / "jobs" / "x").exists()


@pytest.mark.parametrize("key", ["a=b", "nul\x00", "$(id)", "x y"])
def test_bad_hyperparameter_key_leaves_no_job_behind(backend, script, channel, key):
    """Refused before the job exists: no record that a retry would wait 60 s on, then run a second job."""
    with pytest.raises(ValueError, match="not a valid identifier"):
        backend.submit(request("badkey-1", script(TRAIN_OK), channel, hyperparameters={key: 1}))
    assert not (backend.jobs_dir / "badkey-1").exists()
    assert backend.find_jobs({}) == []


# --- failures -------------------------------------------------------------------------------


def test_failing_script_reports_last_lines(backend, script, channel):
    backend.submit(request("fail-1", script(FAIL), channel))
    job = wait_terminal(backend, "fail-1")
    assert job.state == JobState.FAILED
    assert job.failure_reason.startswith("AlgorithmError: exit code 3: ")
    assert "boom: bad data in column tenure" in job.failure_reason
    assert "step 1 ok" in job.failure_reason
    with pytest.raises(RuntimeError, match="Failed, not Completed"):
        backend.fetch_outputs("fail-1", backend.jobs_dir.parent / "store")


def test_failure_file_wins_over_log_lines(backend, script, channel):
    backend.submit(request("fail-2", script(FAIL_WITH_FAILURE_FILE), channel))
    job = wait_terminal(backend, "fail-2")
    assert job.state == JobState.FAILED
    assert job.failure_reason == "AlgorithmError: exit code 1: target column has 3 classes, expected 2"


def test_duplicate_name_raises_and_leaves_first_job_alone(backend, script, channel):
    entry = script(TRAIN_OK)
    backend.submit(request("dup-1", entry, channel))
    with pytest.raises(TrainingJobExists, match="dup-1"):
        backend.submit(request("dup-1", entry, channel, hyperparameters={"other": 1}))
    assert wait_terminal(backend, "dup-1").state == JobState.COMPLETED
    model = json.loads((backend.jobs_dir / "dup-1" / "model" / "model.json").read_text())
    assert model == {"hps": {}}
    assert [j.job_name for j in backend.find_jobs({})] == ["dup-1"]


def test_missing_channel_path(backend, script, tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(FileNotFoundError, match=rf"channel 'train' path {missing} missing"):
        backend.submit(request("nochan-1", script(TRAIN_OK), missing))
    assert not (backend.jobs_dir / "nochan-1").exists()


def test_missing_entry_point(backend, tmp_path, channel):
    missing = tmp_path / "train_missing.py"
    with pytest.raises(FileNotFoundError, match=rf"entry point {missing} does not exist"):
        backend.submit(request("noentry-1", str(missing), channel))
    assert not (backend.jobs_dir / "noentry-1").exists()


@pytest.mark.skipif(local_gpu_count() > 0, reason="a GPU is visible here")
def test_gpu_required_without_gpu_raises(backend, script, channel):
    with pytest.raises(RuntimeError, match="gpu-1: resources.gpu is 'required' but no GPU is visible"):
        backend.submit(request("gpu-1", script(TRAIN_OK), channel, gpu="required"))
    assert not (backend.jobs_dir / "gpu-1").exists()


# --- stop / max runtime -----------------------------------------------------------------------


def test_stop_stops_running_script(backend, script, channel):
    backend.submit(request("stop-1", script(GATED), channel))
    pids = read_pids(backend, "stop-1")
    assert backend.describe("stop-1").state == JobState.RUNNING
    runner = backend.describe("stop-1").details["pid"]
    assert alive(runner) and alive(pids["script"])

    job = backend.stop("stop-1", grace_seconds=5)
    assert job.state == JobState.STOPPED
    assert job.failure_reason.startswith("stopped by request")
    assert job.ended_at is not None
    assert (backend.jobs_dir / "stop-1" / "stop_requested").exists()
    wait_for(lambda: not alive(runner), timeout=3)
    assert not alive(pids["script"])
    assert "finished" not in backend.read_logs("stop-1")[0]


def test_stop_kills_the_scripts_child(backend, script, channel):
    backend.submit(request("stop-2", script(GATED), channel, hyperparameters={"spawn_child": True}))
    pids = read_pids(backend, "stop-2")
    backend.leftover_pids.append(pids["child"])
    assert alive(pids["child"])
    assert backend.stop("stop-2", grace_seconds=5).state == JobState.STOPPED
    assert not alive(pids["script"])
    # A training script's workers (data loaders, torchrun ranks) must not outlive the job.
    wait_for(lambda: not alive(pids["child"]), timeout=1)


def test_stop_is_a_noop_on_terminal_jobs(backend, script, channel):
    backend.submit(request("done-1", script(TRAIN_OK), channel))
    wait_terminal(backend, "done-1")
    job = backend.stop("done-1")
    assert job.state == JobState.COMPLETED
    assert not (backend.jobs_dir / "done-1" / "stop_requested").exists()


def test_max_runtime_exceeded_fails_the_job(backend, script, channel):
    started = time.monotonic()
    backend.submit(request("slow-1", script(GATED), channel, max_runtime_seconds=1))
    pids = read_pids(backend, "slow-1")
    job = wait_terminal(backend, "slow-1", timeout=10)
    assert time.monotonic() - started < 5
    assert job.state == JobState.FAILED
    assert job.failure_reason == "MaxRuntimeExceeded: ran over 1 s"
    assert not alive(pids["script"])
    assert "[local-runner] MaxRuntimeExceeded after 1 s" in backend.read_logs("slow-1")[0]
    assert 1.0 <= job.billable_seconds < 5


# --- finding and reattaching ------------------------------------------------------------------


def test_find_jobs_by_tag_subset_oldest_first(backend, script, channel):
    entry = script(TRAIN_OK)
    backend.submit(request("t-b", entry, channel, tags={"run": "r1", "attempt": "1"}))
    backend.submit(request("t-a", entry, channel, tags={"run": "r1", "attempt": "2"}))
    backend.submit(request("t-c", entry, channel, tags={"run": "r2", "attempt": "1"}))
    for name in ("t-a", "t-b", "t-c"):
        wait_terminal(backend, name)

    # Ordered by creation time, not by name or directory order.
    assert [j.job_name for j in backend.find_jobs({"run": "r1"})] == ["t-b", "t-a"]
    assert [j.job_name for j in backend.find_jobs({"run": "r1", "attempt": "2"})] == ["t-a"]
    assert [j.job_name for j in backend.find_jobs({"attempt": "1"})] == ["t-b", "t-c"]
    assert [j.job_name for j in backend.find_jobs({})] == ["t-b", "t-a", "t-c"]
    assert backend.find_jobs({"run": "r3"}) == []
    assert backend.find_jobs({"run": "r1", "owner": "x"}) == []
    assert backend.find_jobs({"run": "r1"})[0].tags == {"run": "r1", "attempt": "1"}


def test_find_jobs_without_jobs_dir(tmp_path):
    assert LocalTrainingBackend(jobs_dir=tmp_path / "never-created").find_jobs({}) == []


def test_find_jobs_skips_unreadable_records(backend, script, channel):
    backend.submit(request("good-1", script(TRAIN_OK), channel, tags={"k": "v"}))
    broken = backend.jobs_dir / "broken-1"
    broken.mkdir()
    (broken / "job.json").write_text("{not json")
    assert [j.job_name for j in backend.find_jobs({"k": "v"})] == ["good-1"]


def test_second_backend_instance_reattaches_to_running_job(backend, script, channel):
    """A retried worker builds a fresh backend on the same jobs_dir and must see the same job."""
    backend.submit(request("re-1", script(GATED), channel, tags={"run": "r1"}))
    read_pids(backend, "re-1")

    other = LocalTrainingBackend(jobs_dir=backend.jobs_dir)
    seen = other.describe("re-1")
    assert seen.state == JobState.RUNNING
    assert seen.details["pid"] == backend.describe("re-1").details["pid"]
    assert [j.job_name for j in other.find_jobs({"run": "r1"})] == ["re-1"]
    assert "started" in other.read_logs("re-1")[0]

    (channel / "go").touch()
    done = wait_terminal(other, "re-1")
    assert done.state == JobState.COMPLETED
    published = other.fetch_outputs("re-1", backend.jobs_dir.parent / "store" / "re-1")
    assert (backend.jobs_dir.parent / "store" / "re-1" / "model" / "model.json").exists()
    assert published.model_uri.startswith("file://")


def test_second_backend_instance_can_stop_the_job(backend, script, channel):
    backend.submit(request("re-2", script(GATED), channel))
    pids = read_pids(backend, "re-2")
    other = LocalTrainingBackend(jobs_dir=backend.jobs_dir)
    assert other.stop("re-2", grace_seconds=5).state == JobState.STOPPED
    assert backend.describe("re-2").state == JobState.STOPPED
    assert not alive(pids["script"])


# --- logs, cleanup, cost ----------------------------------------------------------------------


def test_read_logs_offsets(backend, script, channel):
    assert backend.read_logs("not-started", 7) == ("", 7)
    backend.submit(request("logs-1", script(GATED), channel))
    text, offset = wait_for(lambda: (r := backend.read_logs("logs-1"))[0] and r)
    assert text == "started\n"
    assert offset == len(b"started\n")
    assert backend.read_logs("logs-1", offset) == ("", offset)

    (channel / "go").touch()
    wait_terminal(backend, "logs-1")
    text, end = backend.read_logs("logs-1", offset)
    assert text == "finished\n"
    assert end == offset + len(b"finished\n")
    assert backend.read_logs("logs-1", end) == ("", end)
    assert backend.read_logs("logs-1", 0) == ("started\nfinished\n", end)


def test_cleanup_removes_scratch_and_keeps_record(backend, script, channel):
    backend.submit(request("clean-1", script(TRAIN_OK), channel, tags={"run": "r1"}))
    wait_terminal(backend, "clean-1")
    job_dir = backend.jobs_dir / "clean-1"

    removed = backend.cleanup("clean-1")
    assert sorted(removed) == sorted(str(job_dir / sub) for sub in ("model", "work", "input"))
    for sub in ("model", "work", "input"):
        assert not (job_dir / sub).exists()
    assert (job_dir / "job.json").exists()
    assert backend.describe("clean-1").state == JobState.COMPLETED
    assert [j.job_name for j in backend.find_jobs({"run": "r1"})] == ["clean-1"]
    assert backend.cleanup("clean-1") == []  # idempotent


def test_billable_seconds_and_cost(backend, script, channel):
    backend.submit(request("cost-1", script(TRAIN_OK), channel, instance_count=2))
    job = wait_terminal(backend, "cost-1")
    assert job.billable_seconds > 0
    assert job.billable_seconds == pytest.approx(job.ended_at - job.started_at, abs=0.001)

    free = backend.cost(job)
    assert (free.usd, free.hourly_price_usd, free.price_source) == (0.0, 0.0, "table")
    assert free.instance_count == 2

    charged = backend.cost(job, hourly_price_usd=3600.0)  # $1 per instance-second
    assert charged.price_source == "override"
    assert charged.usd == pytest.approx(job.billable_seconds * 2, abs=1e-5)


def test_running_job_billable_seconds_grow(backend, script, channel):
    backend.submit(request("grow-1", script(GATED), channel))
    read_pids(backend, "grow-1")
    first = backend.describe("grow-1").billable_seconds
    time.sleep(0.1)
    second = backend.describe("grow-1").billable_seconds
    assert 0 < first < second
    assert backend.describe("grow-1").ended_at is None
