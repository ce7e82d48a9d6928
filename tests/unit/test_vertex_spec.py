"""The training.vertex spec block: machine/accelerator types, required settings, budget, the DAG it builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airflow_retrain.dag_factory import build_dag
from airflow_retrain.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "include" / "pipelines" / "churn.yaml"
EXAMPLE = ROOT / "include" / "examples" / "vertex" / "churn.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def problems(tmp_path, data) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as e:
        load_spec(path)
    return str(e.value)


def test_example_differs_from_the_local_spec_only_in_training():
    local, vx = yaml.safe_load(LOCAL.read_text()), example()
    assert {k: v for k, v in local.items() if k != "training"} == {k: v for k, v in vx.items() if k != "training"}
    spec = load_spec(EXAMPLE)
    assert spec.training.backend == "vertex"
    assert (spec.training.vertex.region, spec.training.vertex.machine_type) == ("us-central1", "n1-standard-4")


def test_the_dag_prices_the_vertex_machine_and_passes_the_block():
    dag = build_dag(load_spec(EXAMPLE))
    train = dag.get_task("train")
    assert (train.backend, train.instance_type, train.instance_count) == ("vertex", "n1-standard-4", 1)
    assert train.backend_config["staging_bucket"] == "gs://airflow-retrain-demo"
    assert train.backend_config["connection_id"] == "google_cloud_default"
    assert [link.name for link in train.operator_extra_links] == ["Vertex AI Custom Job", "Vertex AI Job Logs"]
    from airflow.serialization.serialized_objects import DagSerialization

    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task("train")
    assert sorted(restored.extra_links) == ["Vertex AI Custom Job", "Vertex AI Job Logs"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"machine_type": "n9-giant-4"}, "training.vertex.machine_type: 'n9-giant-4' is not a Vertex AI training machine type"),
        ({"accelerator_type": "NVIDIA_TESLA_Z9", "accelerator_count": 1}, "training.vertex.accelerator_type: 'NVIDIA_TESLA_Z9' is not a Vertex AI AcceleratorType"),
        ({"accelerator_type": "NVIDIA_L4", "accelerator_count": 1}, "training.vertex.accelerator_type: NVIDIA_L4 is not offered with machine type n1-standard-4"),
        ({"accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 0}, "training.vertex.accelerator_count: must be at least 1"),
        ({"machine_type": "g2-standard-8", "accelerator_type": "NVIDIA_L4", "accelerator_count": 2}, "g2-standard-8 comes with 1 x NVIDIA_L4, not 2"),
        ({"accelerator_count": 2}, "training.vertex.accelerator_count: 2 set without accelerator_type"),
        ({"region": "Central"}, "training.vertex.region"),
        ({"staging_bucket": "gs://UPPER"}, "training.vertex.staging_bucket"),
        ({"replica_count": 0}, "training.vertex.replica_count"),
    ],
)
def test_bad_block_names_the_field(tmp_path, change, message):
    data = example()
    data["training"]["vertex"].update(change)
    assert message in problems(tmp_path, data)


@pytest.mark.parametrize("field", ["region", "staging_bucket"])
def test_missing_region_or_bucket(tmp_path, field):
    data = example()
    del data["training"]["vertex"][field]
    assert f"training.vertex.{field}: required field is missing" in problems(tmp_path, data)


def test_missing_block_and_block_on_another_backend(tmp_path):
    data = example()
    del data["training"]["vertex"]
    assert "training.vertex: required with backend 'vertex'" in problems(tmp_path, data)
    data = example()
    data["training"]["backend"] = "local"
    assert "training.vertex: set, but training.backend is 'local'" in problems(tmp_path, data)


def test_budget_uses_the_machine_and_accelerator_price(tmp_path):
    data = example()
    data["training"]["vertex"].update(accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1, replica_count=2)
    data["training"]["max_cost_usd"] = 0.5
    # $0.621/h (n1-standard-4 + T4) x 2 replicas x 0.5 h = $0.62 > $0.50
    assert "a job may cost up to $0.62 (2 x n1-standard-4+nvidia-tesla-t4" in problems(tmp_path, data)
    data["training"]["vertex"]["spot"] = True  # spot column: $0.1863/h
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_spec(path).training.vertex.spot


def test_a_machine_without_a_price_names_the_vertex_field(tmp_path):
    data = example()
    data["training"]["vertex"]["machine_type"] = "n1-standard-8"
    assert "training.vertex.machine_type: " in problems(tmp_path, data)
    data["training"]["resources"]["hourly_price_usd"] = 0.38  # an override prices it
    path = tmp_path / "priced.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_spec(path).training.vertex.machine_type == "n1-standard-8"
