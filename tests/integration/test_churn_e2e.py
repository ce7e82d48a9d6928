"""The whole churn DAG on the embedded defaults, run by Airflow (``dag.test()``), on the real data.

One module-scoped sequence against one registry: a good run passes the data gates before training and
the model gates after it, and promotes v1; a run whose data gate fails stops before training; a run whose
model gate fails registers v2 but leaves ``champion`` on v1; a run whose training fails registers nothing
and its teardown still runs and cleans up; a second good run measures drift against v1's training
snapshot and re-scores v1 on its own holdout.
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
    data_fail = dict(base, name="churn_datafail", retries=0)
    data_fail["gates"] = dict(base["gates"], data=dict(base["gates"]["data"], label_rate={"min": 0.4, "max": 0.5}))
    (folder / "churn_datafail.yaml").write_text(yaml.safe_dump(data_fail))
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
    return json.loads((state_dir / "artifacts" / dag_id / "latest_report.json").read_text())


def all_removed(uris) -> bool:
    from airflow_retrain.artifacts import artifact_path

    return bool(uris) and not any(artifact_path(uri).exists() for uri in uris)


def test_good_run_promotes_first_champion(bag, state_dir):
    dr, states = run_dag(bag, "churn_retrain")
    assert dr.state == "success", states
    assert set(states.values()) == {"success"}
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    # Data gates before training, model gates after registration.
    assert tis["gate_data"].end_date <= tis["train"].start_date
    assert tis["register"].end_date <= tis["gate_model"].start_date <= tis["promote"].start_date
    client = mlflow_client(state_dir)
    champion = client.get_model_version_by_alias("churn", "champion")
    assert str(champion.version) == "1"
    for gate in ("data", "metrics", "champion", "slices", "efficiency"):
        assert champion.tags[f"retrain.gate.{gate}"] == "passed", gate
    assert champion.tags["retrain.gate.champion.decision"] == "no_champion"
    assert champion.tags["retrain.snapshot"] == f"runs:/{champion.run_id}/snapshot/training_stats.json"
    evidence = client.get_run(champion.run_id).data.metrics
    assert evidence["gate.data.passed"] == 1.0 and evidence["gate.data.label_rate"] > 0.2
    assert evidence["gate.efficiency.model_mb"] < 5
    assert any(k.startswith("gate.slices.contract_two_year") for k in evidence)
    artifacts = {a.path for a in client.list_artifacts(champion.run_id, "gates")}
    assert artifacts == {f"gates/{g}.json" for g in ("data", "metrics", "champion", "slices", "efficiency")}
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
    text = (state_dir / "artifacts" / "churn_retrain" / "latest_report.json").read_text()
    assert '"gate_data"' in text and '"gate_model"' in text
    teardown = rep["stages"]["teardown"]
    assert all_removed(teardown["scratch_removed"])
    assert teardown["jobs"][0]["state"] == "Completed"
    assert teardown["compute_seconds"] > 0


def test_data_gate_failure_stops_before_training(bag, state_dir):
    dr, states = run_dag(bag, "churn_datafail_retrain")
    assert dr.state == "failed"
    assert states["gate_data"] == "failed"
    assert states["train"] == "upstream_failed" and states["register"] == "upstream_failed"
    assert states["teardown"] == "success" and states["report"] == "success"
    rep = report(state_dir, "churn_datafail_retrain")
    (verdict,) = rep["gate_verdicts"]["gate_data"]
    assert not verdict["passed"] and "label rate of 'churned'" in verdict["message"] and "< min 0.4" in verdict["message"]
    assert rep["stages"]["teardown"]["jobs"] == []  # no training job was started
    client = mlflow_client(state_dir)
    assert [str(v.version) for v in client.search_model_versions("name = 'churn'")] == ["1"]


def test_gate_failure_keeps_champion(bag, state_dir):
    dr, states = run_dag(bag, "churn_gatefail_retrain")
    assert dr.state == "failed"
    assert states["gate_model"] == "failed"
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
    assert all_removed(teardown["scratch_removed"])
    client = mlflow_client(state_dir)
    assert sorted(str(v.version) for v in client.search_model_versions("name = 'churn'")) == ["1", "2"]
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "1"


def test_second_run_compares_with_the_champions_snapshot_and_rescores_it(bag, state_dir):
    dr, states = run_dag(bag, "churn_retrain")
    assert dr.state == "success", states
    client = mlflow_client(state_dir)
    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'churn'"))
    candidate = client.get_model_version("churn", str(versions[-1]))
    # Same data: no drift against v1's training snapshot; v1 re-scored on this holdout equals the candidate.
    data = client.get_run(candidate.run_id).data.metrics
    assert data["gate.data.passed"] == 1.0 and data["gate.data.psi.tenure_months"] < 0.01
    assert candidate.tags["retrain.gate.champion.champion_version"] == "1"
    assert candidate.tags["retrain.gate.champion.decision"] == "does_not_beat"
    assert float(candidate.tags["retrain.gate.champion.delta"]) == 0.0
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "1"
