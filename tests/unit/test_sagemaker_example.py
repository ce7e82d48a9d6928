"""The SageMaker example spec and the demo's handling of it (no cloud, no Airflow run)."""

from __future__ import annotations

import runpy
from pathlib import Path

import botocore.session
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "include" / "pipelines" / "churn.yaml"
SAGEMAKER = ROOT / "include" / "examples" / "sagemaker" / "churn.yaml"


def test_example_differs_from_the_local_spec_only_in_training():
    local, sagemaker = yaml.safe_load(LOCAL.read_text()), yaml.safe_load(SAGEMAKER.read_text())
    assert local.pop("training")["backend"] == "local"
    training = sagemaker.pop("training")
    assert local == sagemaker
    assert training["backend"] == "sagemaker"
    assert training["entry_point"] == "include/training/churn/train.py"
    block = training["sagemaker"]
    # The image comes from framework_version (or `image:`); the instance type is a resource, as for every backend.
    assert {"role_arn", "bucket", "prefix", "region", "connection_id", "framework_version", "volume_size_gb"} <= set(block)
    instance_type = training["resources"]["instance_type"]
    enum = botocore.session.get_session().get_service_model("sagemaker").shape_for("TrainingInstanceType").enum
    assert instance_type == "ml.m5.xlarge" and instance_type in enum


def test_demo_runs_a_spec_from_a_folder_of_its_own(tmp_path):
    demo = runpy.run_path(str(ROOT / "scripts" / "demo.py"))
    assert demo["_specs_dir_for"](SAGEMAKER, tmp_path) == SAGEMAKER.parent
    crowded = tmp_path / "specs"
    crowded.mkdir()
    (crowded / "a.yaml").write_text("name: a\n")
    (crowded / "b.yaml").write_text("name: b\n")
    folder = demo["_specs_dir_for"](crowded / "b.yaml", tmp_path / "state")
    assert [p.name for p in folder.iterdir()] == ["b.yaml"]
    assert demo["_read_spec"](SAGEMAKER)["training"]["sagemaker"]["connection_id"] == "aws_default"
    assert demo["DEFAULT_SPECS"]["sagemaker"] == SAGEMAKER
