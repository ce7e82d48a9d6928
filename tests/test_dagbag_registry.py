"""DAG shapes of the registry options: rollback DAGs, approval and the SageMaker mirror; spec errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"


def churn_spec() -> dict:
    return yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())


def bag_for(tmp_path, monkeypatch, **specs):
    from airflow.dag_processing.dagbag import DagBag

    for name, spec in specs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("RETRAIN_SPECS_DIR", str(tmp_path))
    return DagBag(dag_folder=str(DAGS))


def test_rollback_dag_per_spec_with_params(tmp_path, monkeypatch):
    bag = bag_for(tmp_path, monkeypatch, churn=churn_spec())
    assert bag.import_errors == {}
    dag = bag.dags["rollback_churn"]
    assert dag.schedule is None and dag.max_active_runs == 1 and dag.render_template_as_native_obj
    assert dag.task_ids == ["rollback"]
    params = dag.params
    assert params["version"] is None
    assert params.get_param("reason").schema == {"type": "string", "minLength": 3, "maxLength": 1000}  # required
    schema = params.get_param("version").schema
    assert schema["type"] == ["null", "integer"] and schema["minimum"] == 1
    task = dag.get_task("rollback")
    assert task.model_name == "churn" and task.version == "{{ params.version }}"


def test_approval_and_mirror_shape(tmp_path, monkeypatch):
    spec = churn_spec()
    spec["registry"]["approval"] = {"required": True, "timeout_minutes": 90}
    spec["registry"]["mirror"] = {"sagemaker": {"model_package_group": "churn-models", "connection_id": "aws_prod",
                                                "region": "eu-west-1"}}
    dag = bag_for(tmp_path, monkeypatch, churn=spec).dags["churn_retrain"]
    chain = ["gate_model", "decide_promotion", "approve_promotion", "promote", "teardown"]
    for up, down in zip(chain, chain[1:], strict=False):
        assert down in dag.get_task(up).downstream_task_ids, (up, down)
    approve = dag.get_task("approve_promotion")
    assert approve.response_timeout.total_seconds() == 90 * 60 and approve.defaults == ["Reject"]
    mirror = dag.get_task("mirror_sagemaker")
    assert "promote" in mirror.upstream_task_ids
    assert (mirror.model_package_group, mirror.aws_conn_id, mirror.region) == ("churn-models", "aws_prod", "eu-west-1")


@pytest.mark.parametrize(("registry", "field"), [
    ({"approval": {"required": True, "timeout_minutes": 0}}, "registry.approval.timeout_minutes"),
    ({"mirror": {"sagemaker": {"model_package_group": "bad group!"}}}, "registry.mirror.sagemaker.model_package_group"),
    ({"mirror": {"sagemaker": {"model_package_group": "g", "region": "moon"}}}, "registry.mirror.sagemaker.region"),
    ({"lease": {"settle_seconds": 0}}, "registry.lease.settle_seconds"),
    ({"model_name": "o'brien \"x\""}, "registry.model_name"),
])
def test_bad_registry_options_name_the_field(tmp_path, registry, field):
    from airflow_retrain.spec import SpecError, load_spec

    spec = churn_spec()
    spec["registry"].update(registry)
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        load_spec(path)


def test_broken_spec_spares_the_rollback_dags(tmp_path, monkeypatch):
    broken = dict(churn_spec(), name="fraud")
    broken["registry"] = dict(broken["registry"], approval={"required": "sometimes"})
    bag = bag_for(tmp_path, monkeypatch, churn=churn_spec(), fraud=broken)
    assert "rollback_churn" in bag.dag_ids and "rollback_fraud" not in bag.dag_ids
    assert all(not where.endswith("rollback.py") for where in bag.import_errors)


@pytest.mark.slow
def test_rollback_dag_file_imports_nothing_heavy():
    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]);"
        "heavy=[m for m in ('mlflow','pandas','duckdb','dbt','xgboost','sklearn','boto3','pyarrow') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(DAGS / "rollback.py")], capture_output=True, text=True,
                         check=True, env=os.environ.copy())
    assert out.stdout.strip().splitlines()[-1] == "[]"
