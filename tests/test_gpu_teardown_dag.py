"""The gpu_teardown DAG: loads with the policy's schedule; a malformed policy fails it alone, by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"


def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_gpu_teardown_dag_shape():
    bag = dagbag()
    assert bag.import_errors == {}
    dag = bag.dags["gpu_teardown"]
    assert dag.max_active_runs == 1 and not dag.catchup
    assert dag.task_ids == ["sweep"]
    assert {"retrain", "teardown"} <= set(dag.tags)
    assert dag.schedule == "*/15 * * * *"
    task = dag.get_task("sweep")
    assert task.policy_path == str(ROOT / "include" / "teardown" / "policy.yaml")
    assert task.execution_timeout.total_seconds() < 15 * 60


def test_malformed_policy_is_an_import_error_naming_the_field_and_spares_other_dags(tmp_path, monkeypatch):
    policy = tmp_path / "policy.yaml"
    policy.write_text("schedule: '@hourly'\nkinds:\n  sagemaker.endpoint: {action: stop}\n")
    monkeypatch.setenv("RETRAIN_TEARDOWN_POLICY", str(policy))
    bag = dagbag()
    assert "gpu_teardown" not in bag.dag_ids
    assert "churn_retrain" in bag.dag_ids
    (where, message), = bag.import_errors.items()
    assert where.endswith("gpu_teardown.py")
    assert str(policy) in message and "kinds.sagemaker.endpoint.action" in message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("grace_period: .inf\n", "grace_period: Input should be a finite number"),
        ("schedule: '0 0 31 2 *'\n", "schedule: cron expression '0 0 31 2 *' never fires"),
        ("schedule: '0 25 * * *'\n", "schedule: invalid cron expression '0 25 * * *'"),
    ],
)
def test_policy_value_errors_are_one_import_error_naming_file_and_field(tmp_path, monkeypatch, text, field):
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    monkeypatch.setenv("RETRAIN_TEARDOWN_POLICY", str(policy))
    bag = dagbag()
    assert "gpu_teardown" not in bag.dag_ids and "churn_retrain" in bag.dag_ids
    (where, message), = bag.import_errors.items()
    assert where.endswith("gpu_teardown.py")
    assert f"invalid teardown policy {policy}: {field}" in message
    assert "OverflowError" not in message and "AirflowTimetableInvalid" not in message


def test_schedule_comes_from_the_policy(tmp_path, monkeypatch):
    policy = tmp_path / "policy.yaml"
    policy.write_text("schedule: '@hourly'\ndry_run: true\n")
    monkeypatch.setenv("RETRAIN_TEARDOWN_POLICY", str(policy))
    dag = dagbag().dags["gpu_teardown"]
    assert dag.schedule == "@hourly"


@pytest.mark.slow
def test_dag_file_imports_nothing_heavy():
    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]);"
        "print([m for m in ('mlflow','pandas','duckdb','boto3','botocore','psycopg2') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code, str(DAGS / "gpu_teardown.py")], capture_output=True, text=True,
                         check=True, env=os.environ.copy())
    assert out.stdout.strip().splitlines()[-1] == "[]"
