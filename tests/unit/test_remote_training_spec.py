"""What the ``training.sagemaker`` and ``training.vertex`` spec blocks share: each example differs from the
local spec only in ``training``, each block's required fields and the block itself are named when missing,
and a block set beside another backend is named too."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import spec_problems

from airflow_retrain.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "include" / "pipelines" / "churn.yaml"
BACKENDS = ["sagemaker", "vertex"]


def example_path(backend: str) -> Path:
    return ROOT / "include" / "examples" / backend / "churn.yaml"


def example(backend: str) -> dict:
    return yaml.safe_load(example_path(backend).read_text())


@pytest.mark.parametrize(("backend", "connection_id"), [("sagemaker", "aws_default"), ("vertex", "google_cloud_default")])
def test_example_differs_from_the_local_spec_only_in_training(backend, connection_id):
    local, remote = yaml.safe_load(LOCAL.read_text()), example(backend)
    assert {k: v for k, v in local.items() if k != "training"} == {
        k: v for k, v in remote.items() if k != "training"
    }
    training = load_spec(example_path(backend)).training
    assert training.backend == backend
    assert getattr(training, backend).connection_id == connection_id


@pytest.mark.parametrize(
    ("backend", "field"),
    [("sagemaker", "role_arn"), ("sagemaker", "bucket"), ("vertex", "region"), ("vertex", "staging_bucket")],
)
def test_missing_required_field(tmp_path, backend, field):
    data = example(backend)
    del data["training"][backend][field]
    assert f"training.{backend}.{field}: required field is missing" in spec_problems(tmp_path, data)


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_block(tmp_path, backend):
    data = example(backend)
    del data["training"][backend]
    assert f"training.{backend}: required with backend '{backend}'" in spec_problems(tmp_path, data)


@pytest.mark.parametrize("backend", BACKENDS)
def test_block_with_another_backend(tmp_path, backend):
    data = example(backend)
    data["training"]["backend"] = "local"
    data["training"]["resources"]["instance_type"] = "local"  # a cloud instance type is a problem of its own
    assert f"training.{backend}: set, but training.backend is 'local'" in spec_problems(tmp_path, data)
