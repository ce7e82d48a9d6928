"""Processes that leave the job's session (``setsid``) end with the job: max runtime, stop, a dead runner, the sweep.

Real processes throughout; "no process is left" is read from ``/proc`` here, independently of the code
under test, by the job's token (``RETRAIN_JOB_TOKEN`` in ``job.json``).
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest
from helpers import alive, stop_running_jobs, token_pids, wait_for

from airflow_retrain.runs import RunIdentity
from airflow_retrain.teardown.local import LocalInventory
from airflow_retrain.teardown.policy import TeardownPolicy
from airflow_retrain.teardown.sweep import Sweeper
from airflow_retrain.training.base import JobState, TrainingJobRequest
from airflow_retrain.training.local import LocalTrainingBackend

# Starts a child in its own session that ignores SIGTERM, and a daemon (fork, setsid, fork; the middle
# one exits, so the daemon is nobody's child in the job), records their pids, then trains "forever" --
# or, with ``--mode exit``, writes a model and exits 0 leaving both behind.
ESCAPE = """
import json, os, pathlib, subprocess, sys, time
out = pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"])
child = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
    start_new_session=True,
)
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode())
        os.close(w)
        time.sleep(600)
    os._exit(0)
os.close(w)
daemon = int(os.read(r, 32))
os.waitpid(middle, 0)
(out / "pids.tmp").write_text(json.dumps({"script": os.getpid(), "child": child.pid, "daemon": daemon}))
os.replace(out / "pids.tmp", out / "pids.json")
print("started", flush=True)
if os.environ.get("SM_HP_MODE") == "exit":
    pathlib.Path(os.environ["SM_MODEL_DIR"], "model.json").write_text("{}")
    (out / "metrics.json").write_text(json.dumps({"metrics": {"accuracy": 0.8}, "info": {}}))
    sys.exit(0)
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def backend(tmp_path):
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs")
    yield backend
    stop_running_jobs(backend)
    for record in backend.jobs_dir.glob("*/job.json"):  # never leave an escaped process behind a failed test
        for pid in token_pids(job_token(record.parent)):
            os.kill(pid, signal.SIGKILL)


def job_token(job_dir: Path) -> str:
    """The job's token; for a record without one, the job-name marker every process of it carries."""
    record = json.loads((job_dir / "job.json").read_text())
    return record.get("process_token") or f"SM_TRAINING_JOB_NAME={record['job_name']}"


def start(backend, tmp_path, name: str, run: RunIdentity | None = None, **kwargs) -> tuple[str, dict[str, int]]:
    entry = tmp_path / "escape.py"
    entry.write_text(textwrap.dedent(ESCAPE))
    channel = tmp_path / "train"
    channel.mkdir(exist_ok=True)
    tags = run.job_tags() if run else {}
    backend.submit(TrainingJobRequest(name, str(entry), {"train": str(channel)}, tags=tags, **kwargs))
    pids_file = backend.jobs_dir / name / "output" / "data" / "pids.json"
    wait_for(pids_file.exists, timeout=60)
    return job_token(backend.jobs_dir / name), json.loads(pids_file.read_text())


def assert_escaped(token: str, pids: dict[str, int]) -> None:
    """The child and the daemon run in sessions of their own, outside the job's process group."""
    running = token_pids(token)
    for who in ("child", "daemon"):
        assert pids[who] in running, f"{who} is not running with the job's token"
        assert os.getsid(pids[who]) != os.getsid(pids["script"])



def assert_only_the_runner_is_left(backend, job_name: str, token: str) -> None:
    """Nothing of the job runs but, at most, its runner in the moment between recording the end and exiting."""
    runner = backend.describe(job_name).details["pid"]
    assert set(token_pids(token)) <= {runner}
    wait_for(lambda: token_pids(token) == [], timeout=30)

def test_max_runtime_ends_children_that_left_the_session(backend, tmp_path):
    token, pids = start(backend, tmp_path, "escape-runtime", max_runtime_seconds=2)
    assert_escaped(token, pids)
    job = wait_for(lambda: (j := backend.describe("escape-runtime")).state.terminal and j, timeout=60)
    assert job.failure_reason == "MaxRuntimeExceeded: ran over 2 s"
    assert_only_the_runner_is_left(backend, "escape-runtime", token)  # it ended the rest before recording the end


def test_stop_ends_children_that_left_the_session(backend, tmp_path):
    token, pids = start(backend, tmp_path, "escape-stop")
    assert_escaped(token, pids)
    job = backend.stop("escape-stop", grace_seconds=30)  # what on_kill and the sweep's "stop" call
    assert job.state == JobState.STOPPED
    assert token_pids(token) == []


def test_a_script_that_exits_leaves_nothing_running(backend, tmp_path):
    token, pids = start(backend, tmp_path, "escape-exit", hyperparameters={"mode": "exit"})
    job = wait_for(lambda: (j := backend.describe("escape-exit")).state.terminal and j, timeout=60)
    assert job.state == JobState.COMPLETED
    assert_only_the_runner_is_left(backend, "escape-exit", token)
    log = backend.read_logs("escape-exit")[0]
    assert "[local-runner] ended" in log and str(pids["child"]) in log and str(pids["daemon"]) in log


def test_reattaching_after_the_runner_was_killed_ends_its_leftovers(backend, tmp_path):
    token, pids = start(backend, tmp_path, "escape-reattach")
    runner = backend.describe("escape-reattach").details["pid"]
    os.kill(runner, signal.SIGKILL)
    wait_for(lambda: not alive(runner), timeout=30)
    assert alive(pids["script"])
    assert_escaped(token, pids)
    # A retry's worker looks the job up again (a fresh backend, as in another process).
    jobs = LocalTrainingBackend(jobs_dir=backend.jobs_dir).find_jobs({})
    assert [(j.job_name, j.state) for j in jobs] == [("escape-reattach", JobState.FAILED)]
    assert token_pids(token) == []


def _sweep(tmp_path, clock=None, **policy):
    pol = TeardownPolicy.model_validate(
        {"local": {"jobs_dir": str(tmp_path / "jobs"), "gpu_processes": False, **policy}, "claim_settle_seconds": 0}
    )
    inventory = LocalInventory(pol, clock, run_state=lambda *_: None, state_root=tmp_path / "state")
    return Sweeper(pol, [inventory], clock=clock).run()


def _kill_runner_and_wait(backend, name: str) -> None:
    runner = backend.describe(name).details["pid"]
    os.kill(runner, signal.SIGKILL)
    wait_for(lambda: not alive(runner), timeout=30)


def test_sweep_after_the_runner_was_killed_ends_escaped_processes_and_removes_the_job(backend, tmp_path):
    token, pids = start(backend, tmp_path, "escape-sweep")
    _kill_runner_and_wait(backend, "escape-sweep")
    assert_escaped(token, pids)
    assert (backend.jobs_dir / "escape-sweep" / "work").is_dir()

    result = _sweep(tmp_path, retention="1h")  # within retention: its processes end, its folder stays
    assert result.errors == []
    assert token_pids(token) == []
    assert (backend.jobs_dir / "escape-sweep" / "job.json").exists()

    later = time.time() + 3601
    result = _sweep(tmp_path, clock=lambda: later, retention="1h")
    assert not (backend.jobs_dir / "escape-sweep").exists()  # record, log and scratch
    assert any("escape-sweep: removed" in note for note in result.notes)


def test_sweep_ends_leftovers_the_describe_did_not_see(backend, tmp_path):
    # A finished job whose runner recorded its end but then something of the job started again (here:
    # a process carrying the token, as a leftover the runner could not find would).
    token, pids = start(backend, tmp_path, "escape-left", hyperparameters={"mode": "exit"})
    wait_for(lambda: backend.describe("escape-left").state.terminal, timeout=60)
    import subprocess
    import sys

    straggler = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, "RETRAIN_JOB_TOKEN": token},
        start_new_session=True,
    )
    try:
        wait_for(lambda: straggler.pid in token_pids(token), timeout=30)
        result = _sweep(tmp_path)
        assert token_pids(token) == []
        assert any(f"escape-left: ended 1 process(es) it left running [{straggler.pid}]" in n for n in result.notes)
    finally:
        straggler.kill()
        straggler.wait()


def test_sweep_removes_scratch_once_the_run_ended_and_keeps_the_record(backend, tmp_path, state_dir):
    from airflow_retrain import artifacts

    run = RunIdentity("churn", "churn_retrain", f"manual__{tmp_path.name}-scratch")
    token, pids = start(backend, tmp_path, run.job_name(1), run=run)
    name = run.job_name(1)
    _kill_runner_and_wait(backend, name)
    result = _sweep(tmp_path)
    assert token_pids(token) == []
    assert (backend.jobs_dir / name / "work").is_dir()  # the run is live: a retry may still publish from here

    report = artifacts.ArtifactStore.resolve().run_path(run.dag_id, run.run_key) / "report.json"
    artifacts.write_json(report, {"pipeline": "churn"})  # the run's last act: it has ended
    result = _sweep(tmp_path)
    assert result.errors == []
    for sub in ("model", "input", "work"):
        assert not (backend.jobs_dir / name / sub).exists()
    assert (backend.jobs_dir / name / "job.json").exists() and (backend.jobs_dir / name / "log.txt").exists()


def test_dry_run_sweep_removes_nothing(backend, tmp_path):
    start(backend, tmp_path, "escape-dry", hyperparameters={"mode": "exit"})
    wait_for(lambda: backend.describe("escape-dry").state.terminal, timeout=60)
    later = time.time() + 8 * 86400
    pol = TeardownPolicy.model_validate(
        {"dry_run": True, "local": {"jobs_dir": str(tmp_path / "jobs"), "gpu_processes": False}}
    )
    inventory = LocalInventory(pol, lambda: later, run_state=lambda *_: None, state_root=tmp_path / "state")
    result = Sweeper(pol, [inventory], clock=lambda: later).run()
    assert (backend.jobs_dir / "escape-dry" / "job.json").exists()
    assert any("escape-dry: would remove its folder" in note for note in result.notes)


def test_retention_is_a_duration_with_a_default():
    assert TeardownPolicy().local.retention == 7 * 86400
    assert TeardownPolicy.model_validate({"local": {"retention": "2d"}}).local.retention == 2 * 86400


def test_kill_job_never_signals_init_or_the_callers_parents(monkeypatch):
    """A careless root (init, a parent shell) must not turn "its descendants" into every process here."""
    from airflow_retrain.training import supervisor

    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(supervisor.os, "kill", lambda pid, sig: sent.append((pid, sig)))  # nothing is signalled
    assert supervisor.kill_job(None, roots=[1], include_roots=True, grace_seconds=0.1) == []
    assert supervisor.kill_job(None, roots=[os.getppid()], include_roots=True, grace_seconds=0.1) == []
    assert sent == []


def test_an_empty_environ_is_unknown_not_another_job(tmp_path, monkeypatch):
    """A child still inside execve shows an empty /proc/<pid>/environ: its runner must not read as dead."""
    from airflow_retrain.training import supervisor

    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "environ").write_bytes(b"")
    (tmp_path / "4243").mkdir()
    (tmp_path / "4243" / "environ").write_bytes(b"PATH=/bin\0RETRAIN_JOB_TOKEN=other\0")
    monkeypatch.setattr(supervisor, "_PROC", tmp_path)
    marker = supervisor.token_marker("mine")
    assert supervisor.environ_has(4242, marker) is None
    assert supervisor.environ_has(4243, marker) is False
    assert supervisor.environ_has(4244, marker) is False  # gone
