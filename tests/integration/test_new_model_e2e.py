"""An analyst adds a model, its YAML and a spec to a checkout whose manifest is cached, and gets a champion.

No ``make dbt-manifest``, no switch: the stale manifest does not reject the spec (the DAG renders
``dbt_build`` alone and its docs say the graph is stale); the run's ``dbt_build`` builds the new mart and
refreshes the manifest and dbt's selection; ``gate_data`` skips the contract check (the YAML documents two
columns, no ``contract.enforced``) and has no null-rate limit the spec did not state (a feature ~9 % null);
the model is promoted. The next parse shows the dbt nodes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

MART = """-- An analyst's new mart: a few churn features and a sparse one (about 9 % null).
select
    customer_id,
    churned,
    tenure_months,
    monthly_charges,
    contract_one_year,
    contract_two_year,
    is_senior_citizen,
    case when hash(customer_id) % 100 < 9 then null else total_charges end as total_charges_sparse
from {{ ref('churn_features') }}
"""

MART_YAML = """version: 2
models:
  - name: my_features
    description: Churn features for the analyst's model (documented, no contract).
    config:
      materialized: table
    columns:
      - name: customer_id
        data_tests: [unique, not_null]
      - name: churned
        data_tests:
          - accepted_values:
              arguments: {values: [0, 1]}
"""


def _spec() -> dict:
    spec = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())
    spec.update(name="my_model", description="The analyst's new model.")
    spec["dbt"]["select"] = ["+my_features"]
    spec["dataset"]["feature_table"] = "my_features"
    spec["registry"]["model_name"] = "my_model"
    spec["registry"].pop("experiment", None)
    spec["gates"]["metrics"] = {"roc_auc": {"min": 0.7}}
    spec["gates"]["data"].pop("max_null_rate")  # the defaults: no absolute limit, a rise over the champion
    spec["gates"].pop("efficiency", None)
    return spec


@pytest.fixture
def checkout(tmp_path, monkeypatch, airflow_db, warehouse):
    """A copy of the project whose dbt manifest is cached, then a new mart + YAML + spec added."""
    from airflow_retrain.dbt.__main__ import cache_manifest

    home = tmp_path / "project"
    shutil.copytree(ROOT / "dbt", home / "dbt", ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    shutil.copytree(ROOT / "include", home / "include", ignore=shutil.ignore_patterns("pipelines", "examples"))
    (home / "include" / "pipelines").mkdir(parents=True)
    monkeypatch.setenv("RETRAIN_HOME", str(home))
    cache_manifest(str(home / "dbt"))  # the manifest as it was before the analyst's change
    (home / "dbt/models/marts/my_features.sql").write_text(MART)
    (home / "dbt/models/marts/my_features.yml").write_text(MART_YAML)
    (home / "include/pipelines/my_model.yaml").write_text(yaml.safe_dump(_spec()))
    monkeypatch.setenv("RETRAIN_SPECS_DIR", str(home / "include/pipelines"))
    return home


def _bag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag


def test_a_new_model_needs_no_extra_step(checkout, state_dir):
    from mlflow import MlflowClient

    dag = _bag().dags["my_model_retrain"]
    assert "dbt_build" in dag.task_ids and not any(t.startswith("dbt.") for t in dag.task_ids)
    assert "dbt graph:" in dag.doc_md and "stale" in dag.doc_md

    dr = dag.test()
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success", states

    uri = f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("my_model", "champion")
    assert champion.tags["retrain.promotion.decision"] == "promoted"
    snapshot = json.loads(Path(client.download_artifacts(champion.run_id, "snapshot/training_stats.json")).read_text())
    assert 0.07 < snapshot["columns"]["total_charges_sparse"]["null_rate"] < 0.11  # ~9 % null, and it passed
    verdict = json.loads(Path(client.download_artifacts(champion.run_id, "gates/data.json")).read_text())
    contract = next(c for c in verdict["checks"] if c["name"] == "schema.contract")
    assert contract["reason"].startswith("skipped: dbt model 'my_features' has no enforced contract")

    again = _bag().dags["my_model_retrain"]  # the next parse: dbt_build cached the manifest and the selection
    assert "dbt.my_features" in again.task_ids and "dbt graph:" not in (again.doc_md or "")
