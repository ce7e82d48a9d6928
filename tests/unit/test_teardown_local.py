"""The sweep on this machine: local-backend jobs left behind by a dead run, and orphaned GPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import Clock, alive, bound, stop_running_jobs, wait_for

from airflow_retrain.operators.teardown import PrepareRunOperator
from airflow_retrain.runs import RunIdentity
from airflow_retrain.teardown.local import LocalInventory, parse_compute_apps
from airflow_retrain.teardown.policy import TeardownPolicy
from airflow_retrain.teardown.sweep import Sweeper
from airflow_retrain.training.base import JobState, TrainingJobRequest
from airflow_retrain.training.local import LocalTrainingBackend

DAG_ID = "churn_retrain"

# Trains "forever" (until stopped): a job whose run's worker was killed mid-training.
TRAIN = """
import os, pathlib, time
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "pid").write_text(str(os.getpid()))
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def backend(tmp_path):
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs")
    yield backend
    stop_running_jobs(backend)


def policy(tmp_path, **overrides) -> TeardownPolicy:
    return TeardownPolicy.model_validate(
        {"local": {"jobs_dir": str(tmp_path / "jobs"), "gpu_processes": False}, "grace_period": "15m",
         "claim_settle_seconds": 0, **overrides}
    )


def start_job(backend, tmp_path, run: RunIdentity, ttl: int = 6 * 3600) -> str:
    entry = tmp_path / "train.py"
    entry.write_text(textwrap.dedent(TRAIN))
    channel = tmp_path / "train"
    channel.mkdir(exist_ok=True)
    name = run.job_name(1)
    backend.submit(TrainingJobRequest(job_name=name, entry_point=str(entry), channels={"train": str(channel)},
                                      tags=run.job_tags(ttl_seconds=ttl)))
    wait_for((backend.jobs_dir / name / "output" / "data" / "pid").exists)
    return name


def script_pid(backend, name) -> int:
    return int((backend.jobs_dir / name / "output" / "data" / "pid").read_text())


def test_job_of_a_run_whose_worker_died_is_stopped_by_the_sweep(backend, tmp_path, state_dir, make_context):
    dead = RunIdentity("churn", DAG_ID, f"scheduled__{tmp_path.name}-dead", "ml-team")
    live = RunIdentity("churn", DAG_ID, f"scheduled__{tmp_path.name}-live", "ml-team")
    for run in (dead, live):
        PrepareRunOperator(task_id="prepare_run", pipeline="churn").execute(make_context(DAG_ID, run.run_id))
    live_job = start_job(backend, tmp_path, live)
    # A worker process submits the dead run's job, then is killed with SIGKILL mid-training: no on_kill,
    # no teardown. The job (its own session) trains on, orphaned.
    entry = tmp_path / "train.py"
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from airflow_retrain.runs import RunIdentity
        from airflow_retrain.training.base import TrainingJobRequest
        from airflow_retrain.training.local import LocalTrainingBackend
        run = RunIdentity("churn", {DAG_ID!r}, {dead.run_id!r}, "ml-team")
        LocalTrainingBackend(jobs_dir={str(backend.jobs_dir)!r}).submit(TrainingJobRequest(
            job_name=run.job_name(1), entry_point={str(entry)!r}, channels={{"train": {str(tmp_path / "train")!r}}},
            tags=run.job_tags()))
        time.sleep(600)
    """)])
    dead_job = dead.job_name(1)
    wait_for((backend.jobs_dir / dead_job / "output" / "data" / "pid").exists, timeout=60)
    worker.kill()
    worker.wait()
    pid = script_pid(backend, dead_job)
    assert backend.describe(dead_job).state == JobState.RUNNING and alive(pid)
    # The run failed; Airflow knows it ended (the Task SDK answers inside the sweep task; here a lookup
    # stands in for it).
    states = {dead.run_id: "failed", live.run_id: "running"}
    clock = Clock()
    pol = policy(tmp_path)

    def sweep():
        inventory = LocalInventory(pol, clock, run_state=lambda dag_id, run_id: states[run_id])
        result = Sweeper(pol, [inventory], clock=clock).run()
        return result, {r.resource: r for r in result.records}

    result, by_name = sweep()
    assert by_name[dead_job].outcome == "marked"
    assert by_name[dead_job].reason == "its DAG run has ended (teardown never stopped it)"
    assert by_name[dead_job].evidence["run_state"] == "failed"
    assert by_name[live_job].outcome == "busy"
    assert backend.describe(dead_job).state == JobState.RUNNING

    clock.now += 16 * 60  # the next sweeps, past the grace
    result, by_name = sweep()
    assert result.errors == []
    assert by_name[dead_job].outcome == "acted"
    assert backend.describe(dead_job).state == JobState.STOPPED
    assert not alive(pid)
    assert backend.describe(live_job).state == JobState.RUNNING
    assert not list((state_dir / "teardown" / "marks").glob(f"*{dead_job}*"))  # its mark went with it


def test_ttl_passed_or_run_report_written(backend, tmp_path, state_dir):
    expired = RunIdentity("churn", DAG_ID, f"manual__{tmp_path.name}-ttl")
    reported = RunIdentity("churn", DAG_ID, f"manual__{tmp_path.name}-rep")
    expired_job = start_job(backend, tmp_path, expired, ttl=-1)
    reported_job = start_job(backend, tmp_path, reported)
    from airflow_retrain import artifacts

    report = artifacts.ArtifactStore.resolve().run_path(DAG_ID, reported.run_key) / "report.json"
    artifacts.write_json(report, {"pipeline": "churn"})
    pol = policy(tmp_path, dry_run=True)
    result = Sweeper(pol, [LocalInventory(pol, run_state=lambda *_: None)]).run()
    by_name = {r.resource: r for r in result.records}
    assert by_name[expired_job].outcome == "would mark" and by_name[expired_job].reason == "past its TTL"
    assert by_name[reported_job].outcome == "would mark"
    assert by_name[reported_job].evidence["run_report"] == artifacts.to_uri(report)


def test_unknown_run_state_is_not_an_ended_run(backend, tmp_path):
    run = RunIdentity("churn", DAG_ID, f"manual__{tmp_path.name}-unknown")
    name = start_job(backend, tmp_path, run)
    pol = policy(tmp_path)
    result = Sweeper(pol, [LocalInventory(pol)]).run()  # outside a task the Task SDK has no answer
    (record,) = [r for r in result.records if r.resource == name]
    assert record.outcome == "busy"


def test_parse_compute_apps():
    text = (
        "pid, process_name, used_memory [MiB]\n"
        "4242, /usr/bin/python3, 1024 MiB\n"
        "77, jupyter, [N/A]\n"
        "\n"
    )
    parsed = parse_compute_apps(text)
    assert [(p.pid, p.process_name, p.used_memory_mib) for p in parsed] == [
        (4242, "/usr/bin/python3", 1024.0),
        (77, "jupyter", None),
    ]
    assert parse_compute_apps("No running processes found\n") == []


FAKE_SMI = """#!/bin/sh
[ "$1" = "--query-compute-apps=pid,process_name,used_memory" ] && [ "$2" = "--format=csv" ] || exit 9
echo "pid, process_name, used_memory [MiB]"
cat "{listing}"
"""


def sleeper(env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env={**os.environ, **(env or {})})


def test_gpu_processes_of_no_live_job(backend, tmp_path, monkeypatch):
    finished = RunIdentity("churn", DAG_ID, f"manual__{tmp_path.name}-gpu")
    # A finished local job whose data loader still holds the GPU, and someone's untagged process.
    orphan = sleeper({"SM_TRAINING_JOB_NAME": finished.job_name(1)})
    stranger = sleeper()
    try:
        job_dir = backend.jobs_dir / finished.job_name(1)
        job_dir.mkdir(parents=True)
        (job_dir / "job.json").write_text(
            json.dumps({"job_name": finished.job_name(1), "instance_type": "local", "instance_count": 1,
                        "created_at": 1, "tags": finished.job_tags()})
        )
        # Ended within local.retention (an older job's folder, and what it left, the sweep removes).
        (job_dir / "result.json").write_text(json.dumps({"state": "Completed", "ended_at": time.time()}))
        listing = tmp_path / "apps.csv"
        listing.write_text(f"{orphan.pid}, python, 2048 MiB\n{stranger.pid}, python, 512 MiB\n")
        bindir = tmp_path / "bin"
        bindir.mkdir()
        smi = bindir / "nvidia-smi"
        smi.write_text(FAKE_SMI.format(listing=listing))
        smi.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

        clock = Clock()
        pol = policy(tmp_path, local={"jobs_dir": str(backend.jobs_dir)}, kinds={"local.gpu_process": {"action": "kill"}})
        result = Sweeper(pol, [LocalInventory(pol, clock)], clock=clock).run()
        records = [r for r in result.records if r.kind == "local.gpu_process"]
        assert len(records) == 1 and records[0].outcome == "marked"
        assert records[0].evidence["pid"] == orphan.pid and records[0].evidence["used_memory_mib"] == 2048.0
        assert result.out_of_scope == 1  # the untagged process
        clock.now += 16 * 60
        result = Sweeper(pol, [LocalInventory(pol, clock)], clock=clock).run()
        (record,) = [r for r in result.records if r.kind == "local.gpu_process"]
        assert record.outcome == "acted" and record.detail == f"killed GPU process {orphan.pid}"
        assert orphan.wait(timeout=bound(10)) is not None
        assert stranger.poll() is None  # never touched
        # With the default action the finding is only reported.
        pol = policy(tmp_path, local={"jobs_dir": str(backend.jobs_dir)}, scope="all")
        result = Sweeper(pol, [LocalInventory(pol, clock)], clock=clock).run()
        (record,) = [r for r in result.records if r.kind == "local.gpu_process"]
        assert record.outcome == "reported" and record.evidence["pid"] == stranger.pid
    finally:
        for proc in (orphan, stranger):
            proc.kill()
            proc.wait()


def test_without_nvidia_smi_gpu_processes_are_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    pol = policy(tmp_path, local={"jobs_dir": str(tmp_path / "jobs")})
    result = Sweeper(pol, [LocalInventory(pol)]).run()
    assert result.errors == []
    assert result.notes == ["local: nvidia-smi not found: GPU processes not inventoried"]


def test_local_claim_is_exclusive(tmp_path):
    from airflow_retrain.teardown.base import Resource

    pol = policy(tmp_path)
    a, b = LocalInventory(pol, state_root=tmp_path), LocalInventory(pol, state_root=tmp_path)
    resource = Resource(kind="local.training_job", name="job-1", location="local", state="Running")
    a.set_tag(resource, pol.tags.claim, "sweep-a@1")
    b.set_tag(Resource(kind="local.training_job", name="job-1", location="local", state="Running"), pol.tags.claim, "sweep-b@1")
    assert Path(a.marks.claim_path(resource)).read_text() == "sweep-a@1"


def test_marks_of_jobs_that_ended_are_dropped(tmp_path):
    from airflow_retrain.teardown.base import Resource

    pol = policy(tmp_path)
    inventory = LocalInventory(pol, state_root=tmp_path)
    ended = Resource(kind="local.training_job", name="churn-0123456789ab-1", location="local", state="Running")
    inventory.set_tag(ended, pol.tags.planned, "stop@1")
    assert inventory.marks.tags_path(ended).exists()
    assert list(inventory.resources()) == []  # the job is no longer running (no record at all)
    assert not inventory.marks.tags_path(ended).exists()
