"""The training.vertex spec block: machine/accelerator types, required settings, budget, the DAG it builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import spec_problems

from airflow_retrain.dag_factory import build_dag
from airflow_retrain.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "include" / "examples" / "vertex" / "churn.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_names_region_and_machine():
    spec = load_spec(EXAMPLE)
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
    assert message in spec_problems(tmp_path, data)


def test_budget_uses_the_machine_and_accelerator_price(tmp_path):
    data = example()
    data["training"]["vertex"].update(accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1, replica_count=2)
    data["training"]["max_cost_usd"] = 0.5
    # $0.621/h (n1-standard-4 + T4) x 2 replicas x 0.5 h = $0.62 > $0.50
    assert "a job may cost up to $0.62 (2 x n1-standard-4+nvidia-tesla-t4" in spec_problems(tmp_path, data)
    data["training"]["vertex"]["spot"] = True  # spot column: $0.1863/h
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_spec(path).training.vertex.spot


def test_a_machine_without_a_price_names_the_vertex_field(tmp_path):
    data = example()
    data["training"]["vertex"]["machine_type"] = "n1-standard-8"
    assert "training.vertex.machine_type: " in spec_problems(tmp_path, data)
    data["training"]["resources"]["hourly_price_usd"] = 0.38  # an override prices it
    path = tmp_path / "priced.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_spec(path).training.vertex.machine_type == "n1-standard-8"
