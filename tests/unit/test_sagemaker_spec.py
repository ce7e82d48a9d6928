"""The training.sagemaker spec block, pool and budget: every problem named by field, at load time."""

from __future__ import annotations

from pathlib import Path

import yaml
from helpers import spec_problems, write_spec

from airflow_retrain.dag_factory import build_dag
from airflow_retrain.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "include" / "pipelines" / "churn.yaml"
EXAMPLE = ROOT / "include" / "examples" / "sagemaker" / "churn.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_missing_image_when_none_can_be_resolved(tmp_path):
    data = example()
    data["training"]["sagemaker"]["framework_version"] = "0.9-9"
    assert "training.sagemaker.image: not set and no SageMaker XGBoost framework version '0.9-9'" in spec_problems(
        tmp_path, data
    )
    data["training"]["sagemaker"]["image"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:1"
    assert load_spec(write_spec(tmp_path, data)).training.sagemaker.image.endswith("/churn:1")


def test_unknown_instance_type_per_botocore(tmp_path):
    data = example()
    data["training"]["resources"]["instance_type"] = "ml.g99.huge"
    assert "training.resources.instance_type: 'ml.g99.huge' is not a SageMaker training instance type" in spec_problems(
        tmp_path, data
    )


def test_bad_role_arn_and_half_a_vpc(tmp_path):
    data = example()
    data["training"]["sagemaker"]["role_arn"] = "my-role"
    assert "training.sagemaker.role_arn: String should match pattern" in spec_problems(tmp_path, data)
    data = example()
    data["training"]["sagemaker"]["subnets"] = ["subnet-1"]
    assert "training.sagemaker: subnets and security_group_ids go together" in spec_problems(tmp_path, data)


def test_unknown_price_is_flagged_at_load(tmp_path):
    # A local run labelled ml.g5.xlarge used to fail *after* training, in the cost lookup.
    data = yaml.safe_load(LOCAL.read_text())
    data["training"]["resources"]["instance_type"] = "ml.g5.xlarge"
    text = spec_problems(tmp_path, data)
    assert "training.resources.instance_type: no price for local instance type 'ml.g5.xlarge'" in text
    assert "hourly_price_usd" in text
    data["training"]["resources"]["hourly_price_usd"] = 1.0
    assert load_spec(write_spec(tmp_path, data)).training.resources.hourly_price_usd == 1.0


def test_budget_checked_at_load(tmp_path):
    data = example()
    data["training"]["resources"]["instance_type"] = "ml.p4d.24xlarge"
    text = spec_problems(tmp_path, data)
    assert "training.max_cost_usd: a job may cost up to $18.84 (1 x ml.p4d.24xlarge at $37.688/h" in text


def test_dag_wires_backend_settings_pool_and_budget(tmp_path):
    data = example()
    data["training"]["pool"] = "gpu_quota"
    dag = build_dag(load_spec(write_spec(tmp_path, data)))
    train, teardown = dag.get_task("train"), dag.get_task("teardown")
    assert train.pool == "gpu_quota" and train.max_cost_usd == 1.0
    assert train.backend == teardown.backend == "sagemaker"
    assert train.backend_config == teardown.backend_config
    assert train.backend_config["bucket"] == "airflow-retrain-demo" and "aws_access_key_id" not in train.backend_config
    assert train.deferrable is None  # decided on the worker: [operators] default_deferrable
    assert [link.name for link in train.operator_extra_links] == ["SageMaker Training Job", "SageMaker Training Logs"]
