"""The gpu_teardown DAG run by Airflow (``dag.test()``): a local job whose DAG run has ended is found through
the Task SDK (``get_dagrun_state``), marked by one scheduled sweep and stopped by the next."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from helpers import alive, stop_running_jobs, wait_for

from airflow_retrain.runs import RunIdentity
from airflow_retrain.training.base import JobState, TrainingJobRequest
from airflow_retrain.training.local import LocalTrainingBackend

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_sweep_dag_stops_the_job_of_an_ended_run(tmp_path, monkeypatch, airflow_db, state_dir):
    from airflow.dag_processing.dagbag import DagBag

    jobs_dir = tmp_path / "jobs"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"grace_period: 0s\nclaim_settle_seconds: 0\nlocal: {{jobs_dir: {jobs_dir}, gpu_processes: false}}\n"
        f"warehouse_connection_id: e2e_ledger\n"
    )
    monkeypatch.setenv("RETRAIN_TEARDOWN_POLICY", str(policy))
    monkeypatch.setenv("AIRFLOW_CONN_E2E_LEDGER", json.dumps({"conn_type": "duckdb", "host": str(tmp_path / "w.duckdb")}))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    dag = bag.dags["gpu_teardown"]

    first = dag.test()  # a DAG run that has ended, as a crashed retraining run would have
    assert first.state == "success"

    backend = LocalTrainingBackend(jobs_dir=jobs_dir)
    run = RunIdentity("churn", dag.dag_id, first.run_id, "ml-team")
    from airflow_retrain import artifacts

    run_path = artifacts.ArtifactStore.resolve().run_path(run.dag_id, run.run_key)  # as PrepareRunOperator does
    artifacts.write_json(run_path / "run.json", {"dag_id": run.dag_id, "run_id": run.run_id, "run_key": run.run_key})
    entry = tmp_path / "train.py"
    entry.write_text(textwrap.dedent("""
        import os, pathlib, time
        pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "pid").write_text(str(os.getpid()))
        time.sleep(600)
    """))
    (tmp_path / "train").mkdir()
    name = run.job_name(1)
    try:
        backend.submit(TrainingJobRequest(job_name=name, entry_point=str(entry), channels={"train": str(tmp_path / "train")},
                                          tags=run.job_tags()))
        wait_for((jobs_dir / name / "output" / "data" / "pid").exists, timeout=30)
        pid = int((jobs_dir / name / "output" / "data" / "pid").read_text())

        marking = dag.test()
        assert marking.state == "success"
        summary = marking.get_task_instance("sweep").xcom_pull(task_ids="sweep")
        (record,) = summary["changed"]
        assert record["outcome"] == "marked" and record["resource"] == name
        assert record["evidence"]["run_state"] == "success"  # answered by the Task SDK inside the task
        assert backend.describe(name).state == JobState.RUNNING

        acting = dag.test()
        assert acting.state == "success"
        summary = acting.get_task_instance("sweep").xcom_pull(task_ids="sweep")
        assert summary["outcomes"] == {"acted": 1}
        wait_for(lambda: backend.describe(name).state.terminal, timeout=30)
        assert backend.describe(name).state == JobState.STOPPED and not alive(pid)
    finally:
        stop_running_jobs(backend)
