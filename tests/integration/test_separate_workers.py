"""Every task of the churn DAG as if on its own worker: its own working directory, its own local
scratch (``RETRAIN_SCRATCH``) and temp dir (``TMPDIR``), all deleted when the task ends -- and the run
still succeeds, because every hand-off goes through the artifact store (a ``file://`` root that is
none of those folders), never through a worker's disk.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import dagbag_of_spec, run_on_separate_workers

# Runs here retrain the same inputs as an earlier champion of the session: force them to train.
FORCE = {"force": True}

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "churn_workers_retrain"
# One fixed date: the rerun test clears and reruns the first run (its run id is named after it).
WHEN = datetime(2026, 3, 1, tzinfo=UTC)
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifact-store")


@pytest.fixture(scope="module")
def bag(tmp_path_factory, store, airflow_db, warehouse):
    spec = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())
    spec["name"] = "churn_workers"
    spec["retries"] = 0
    spec["registry"] = dict(spec["registry"], model_name="churn_workers")
    spec["artifacts"] = {"root": store.as_uri()}
    with dagbag_of_spec(tmp_path_factory.mktemp("specs"), spec) as bag:
        yield bag


@pytest.fixture(scope="module")
def first_run(bag, store, tmp_path_factory) -> SimpleNamespace:
    """The DAG's run on ``WHEN``, each task on its own worker, and what it left in the store, read as it
    finished (a later test clears and reruns this run, rewriting its report)."""
    run = run_on_separate_workers(bag.dags[DAG_ID], tmp_path_factory.mktemp("first-run"), WHEN)
    run.run_dirs = run_dirs = [p for p in (store / DAG_ID).iterdir() if p.is_dir()]
    run.reports = {p: json.loads((p / "report.json").read_text()) for p in run_dirs}
    run.latest_report = json.loads((store / DAG_ID / "latest_report.json").read_text())
    run.entries = {p: sorted(c.name for c in p.iterdir()) for p in run_dirs}
    return run


def test_each_task_on_its_own_worker(first_run, store, state_dir):
    dr, states = first_run.dr, first_run.states
    assert dr.state == "success", states
    assert set(states.values()) == {"success"}
    ran = [w["task_id"] for w in first_run.workers]
    # every task ran through the isolating wrapper (a dbt node task that waited for dbt_build rescheduled:
    # it ran more than once, each time on a worker of its own)
    assert sorted(set(ran)) == sorted(states), ran
    assert len({w["scratch"] for w in first_run.workers}) == len(ran)

    # The hand-offs were URIs into the store, not paths on a worker.

    run_dirs = first_run.run_dirs
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    report = first_run.reports[run_dir]
    assert first_run.latest_report == report
    stages = report["stages"]
    for channel in ("train", "test"):
        assert stages["export_dataset"]["channels"][channel] == (run_dir / "dataset" / channel).as_uri()
    job = stages["train"]["job_name"]
    assert stages["train"]["model_uri"] == (run_dir / "training" / job / "model").as_uri()
    assert stages["train"]["metrics"]["roc_auc"] > 0.8
    assert stages["register"]["version"] == "1"
    assert stages["promote"]["champion_after"] == "1"
    # Teardown removed the run's scratch from the store (MLflow keeps the registered model) ...
    assert sorted(stages["teardown"]["scratch_removed"]) == [
        (run_dir / "dataset").as_uri(),
        (run_dir / "dbt").as_uri(),
        (run_dir / "training").as_uri(),
    ]
    assert first_run.entries[run_dir] == ["report.json", "run.json"]
    # ... and nothing used the shared state dir as scratch.
    assert not (state_dir / "runs" / DAG_ID).exists()
    assert not (state_dir / "artifacts" / DAG_ID).exists()


def test_run_cleared_after_teardown_trains_again(first_run, bag, store, separate_workers):
    """``dag.test`` on the same date clears the finished first run and runs it again: the same run
    id, whose training outputs its teardown deleted. It must train a second job (not hand on URIs of
    deleted files, which used to end in a bare StopIteration in register) and register that job's model."""
    (run_dir,) = [p for p in (store / DAG_ID).iterdir() if p.is_dir()]
    before = json.loads((run_dir / "report.json").read_text())["stages"]
    assert not (run_dir / "training").exists()  # teardown removed the outputs

    again = bag.dags[DAG_ID].test(logical_date=WHEN, run_after=WHEN, run_conf=FORCE)
    states = {ti.task_id: ti.state for ti in again.get_task_instances()}
    assert again.state == "success", states
    assert [p for p in (store / DAG_ID).iterdir() if p.is_dir()] == [run_dir]  # the same run
    after = json.loads((run_dir / "report.json").read_text())["stages"]
    assert before["train"]["job_name"].endswith("-1")
    assert after["train"]["job_name"] == before["train"]["job_name"][:-1] + "2"
    assert int(after["register"]["version"]) == int(before["register"]["version"]) + 1
