"""DAG-folder checks: no import errors, the expected shape, a cheap parse, broken specs isolated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.usefixtures("dbt_manifest")

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"


def dagbag(monkeypatch=None, specs_dir: Path | None = None):
    from airflow.dag_processing.dagbag import DagBag

    if specs_dir is not None:
        monkeypatch.setenv("RETRAIN_SPECS_DIR", str(specs_dir))
    return DagBag(dag_folder=str(DAGS))


def retrain_dag_ids(bag) -> list[str]:
    """The spec-built DAGs (the folder also holds fixed DAGs such as gpu_teardown)."""
    return sorted(d for d in bag.dag_ids if d.endswith("_retrain"))


def test_no_import_errors():
    bag = dagbag()
    assert bag.import_errors == {}
    assert "churn_retrain" in bag.dag_ids


def test_churn_dag_shape():
    dag = dagbag().dags["churn_retrain"]
    assert dag.max_active_runs == 1
    assert {"retrain", "churn"} <= set(dag.tags)
    assert dag.doc_md and "include/pipelines/churn.yaml" in dag.doc_md
    order = [
        "prepare_run", "dbt_build", "gate_dbt", "export_dataset", "gate_data", "train", "register", "gate_model",
        "promote", "teardown", "report",
    ]
    dbt_nodes = ["dbt.churn_features", "dbt.stg_telco_customers", "dbt.source_raw__telco_customers"]
    assert sorted(dag.task_ids) == sorted(order + dbt_nodes)
    for node in dbt_nodes:  # one grid node per dbt model (and source with tests), completed by dbt_build
        # started in the triggerer beside dbt_build (dag.test() runs them on its loop: they reschedule)
        assert dag.get_task(node).start_from_trigger and "dbt_build" not in dag.get_task(node).upstream_task_ids
    assert len(dag.get_task("dbt.churn_features").test_ids) == 30
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    for task_id in ("teardown", "report"):
        task = dag.get_task(task_id)
        assert task.is_teardown, task_id
        assert "prepare_run" in task.upstream_task_ids
    assert dag.get_task("prepare_run").is_setup
    assert dag.get_task("train").retries == 1
    assert dag.get_task("train").owner == "ml-platform"


@pytest.mark.slow
def test_dag_file_imports_nothing_heavy():
    """Parsing the DAG file must not import mlflow, pandas, duckdb, dbt, xgboost, sklearn or boto3."""
    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]);"
        "heavy=[m for m in ('mlflow','pandas','duckdb','dbt','xgboost','sklearn','boto3','pyarrow') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(DAGS / "retrain.py")], capture_output=True, text=True, check=True, env=os.environ.copy()
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_broken_spec_is_an_import_error_and_spares_other_dags(tmp_path, monkeypatch):
    churn = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())
    (tmp_path / "churn.yaml").write_text(yaml.safe_dump(churn))
    broken = dict(churn, name="fraud")
    broken["training"] = dict(churn["training"], backend="sagemakr")
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(broken))
    bag = dagbag(monkeypatch, tmp_path)
    assert retrain_dag_ids(bag) == ["churn_retrain"]
    assert len(bag.import_errors) == 1
    (where, message), = bag.import_errors.items()
    # Reported by the check file, which has no DAGs: Airflow 3 hides every DAG of a file with an import
    # error, so reporting it from retrain.py would take churn_retrain down with it.
    assert where.endswith("retrain_spec_check.py")
    assert str(tmp_path / "fraud.yaml") in message
    assert "training.backend" in message and "sagemakr" in message


def test_every_spec_broken_still_reports_each(tmp_path, monkeypatch, dbt_manifest):
    from airflow_retrain.dbt.manifest import load_index
    from airflow_retrain.dbt.selection import cache_selection

    churn = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())
    a = dict(churn, name="a")
    del a["registry"]
    b = dict(churn, name="b", dbt=dict(churn["dbt"], select=["+nope"]))
    cache_selection(dbt_manifest, load_index(dbt_manifest).fingerprint, ["+nope"], None, None)  # dbt confirmed it
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(a))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(b))
    bag = dagbag(monkeypatch, tmp_path)
    assert retrain_dag_ids(bag) == []
    assert [p.rsplit("/", 1)[-1] for p in bag.import_errors] == ["retrain_spec_check.py"]
    message = json.dumps(bag.import_errors)
    assert "a.yaml" in message and "registry: required field is missing" in message
    assert "b.yaml" in message and "dbt selector '+nope' matches no node" in message
