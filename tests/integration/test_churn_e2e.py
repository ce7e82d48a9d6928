"""The whole churn DAG on the embedded defaults, run by Airflow (``dag.test()``), on the real data.

One module-scoped sequence against one registry: a good run promotes v1; a run whose gate fails
registers v2 but leaves ``champion`` on v1; a run whose training fails registers nothing and its teardown
still runs and cleans up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def specs_dir(tmp_path_factory) -> Path:
    base = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())
    folder = tmp_path_factory.mktemp("specs")
    (folder / "churn.yaml").write_text(yaml.safe_dump(base))
    gate_fail = dict(base, name="churn_gatefail", retries=0)
    gate_fail["gates"] = {"metrics": {"roc_auc": {"min": 0.99}, "accuracy": {"min": 0.75}}}
    (folder / "churn_gatefail.yaml").write_text(yaml.safe_dump(gate_fail))
    train_fail = dict(base, name="churn_trainfail", retries=0)
    train_fail["training"] = dict(base["training"], entry_point="tests/fixtures/failing_train.py")
    (folder / "churn_trainfail.yaml").write_text(yaml.safe_dump(train_fail))
    return folder


@pytest.fixture(scope="module")
def bag(specs_dir, airflow_db, warehouse, dbt_manifest):
    from airflow.dag_processing.dagbag import DagBag

    os.environ["RETRAIN_SPECS_DIR"] = str(specs_dir)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    yield bag
    os.environ.pop("RETRAIN_SPECS_DIR", None)


def run_dag(bag, dag_id):
    dr = bag.dags[dag_id].test()
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    return dr, states


def mlflow_client(state_dir):
    from mlflow import MlflowClient

    uri = f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def report(state_dir, dag_id):
    return json.loads((state_dir / "reports" / dag_id / "latest.json").read_text())


def test_good_run_promotes_first_champion(bag, state_dir):
    dr, states = run_dag(bag, "churn_retrain")
    assert dr.state == "success", states
    assert set(states.values()) == {"success"}
    client = mlflow_client(state_dir)
    champion = client.get_model_version_by_alias("churn", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["retrain.gate.metrics"] == "passed"
    assert champion.tags["retrain.promotion.decision"] == "promoted"
    run = client.get_run(champion.run_id)
    assert run.data.metrics["roc_auc"] > 0.80
    assert run.data.params["dataset.rows_train"] == "5620"
    # The logged model carries a signature with the mart's 25 features.
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    assert len(model.metadata.get_input_schema().inputs) == 25
    rep = report(state_dir, "churn_retrain")
    assert rep["stages"]["dbt_build"]["tests_failed"] == 0
    assert rep["stages"]["dbt_build"]["models_built"] == 2
    assert rep["stages"]["promote"]["champion_after"] == "1"
    teardown = rep["stages"]["teardown"]
    assert teardown["scratch_removed"] and not Path(teardown["scratch_removed"]).exists()
    assert teardown["jobs"][0]["state"] == "Completed"
    assert teardown["compute_seconds"] > 0


def test_gate_failure_keeps_champion(bag, state_dir):
    dr, states = run_dag(bag, "churn_gatefail_retrain")
    assert dr.state == "failed"
    assert states["gate_metrics"] == "failed"
    assert states["promote"] == "upstream_failed"
    assert states["teardown"] == "success" and states["report"] == "success"
    client = mlflow_client(state_dir)
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "1"
    rejected = client.get_model_version("churn", "2")
    assert rejected.tags["retrain.gate.metrics"] == "failed"
    assert "roc_auc" in rejected.tags["retrain.gate.metrics.message"]
    assert "retrain.promotion.decision" not in rejected.tags


def test_training_failure_still_tears_down(bag, state_dir):
    dr, states = run_dag(bag, "churn_trainfail_retrain")
    assert dr.state == "failed"
    assert states["train"] == "failed"
    assert states["register"] == "upstream_failed"
    assert states["teardown"] == "success"
    rep = report(state_dir, "churn_trainfail_retrain")
    teardown = rep["stages"]["teardown"]
    assert [j["state"] for j in teardown["jobs"]] == ["Failed"]
    assert teardown["scratch_removed"] and not Path(teardown["scratch_removed"]).exists()
    client = mlflow_client(state_dir)
    assert sorted(str(v.version) for v in client.search_model_versions("name = 'churn'")) == ["1", "2"]
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "1"
