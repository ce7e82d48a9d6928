"""Multi-GPU jobs are priced and counted per GPU: Vertex accelerator_count, SageMaker multi-GPU instance types.

The one cost model (:mod:`airflow_retrain.cost`) prices a Vertex replica as its machine plus each attached
GPU, and counts GPUs from the backends' catalogs; the spec's budget check, the DAG's launch-time budget,
the run's cost and the ledger's GPU-hours all go through it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import load_problems

from airflow_retrain.cost import estimate_cost, gpus_per_instance, max_job_cost
from airflow_retrain.spec import load_spec
from airflow_retrain.teardown.ledger import training_run_entry
from airflow_retrain.training.base import JobState, TrainingJob
from airflow_retrain.training.sagemaker_catalog import gpus_per_instance as sagemaker_gpus
from airflow_retrain.training.vertex_catalog import ATTACHABLE_GPU_COUNTS, machine_problems, price_key

ROOT = Path(__file__).resolve().parents[2]
VERTEX_EXAMPLE = ROOT / "include" / "examples" / "vertex" / "churn.yaml"

# us-central1 list prices of the cost model's table: n1-standard-4 and one T4, per hour.
N1_STANDARD_4, T4 = 0.2185, 0.4025


def vertex_spec(tmp_path, max_cost_usd: float = 1.0, **vertex) -> Path:
    """The Vertex example (max_runtime_seconds 1800) with ``training.vertex`` changed."""
    data = yaml.safe_load(VERTEX_EXAMPLE.read_text())
    data["training"]["vertex"].update(vertex)
    data["training"]["max_cost_usd"] = max_cost_usd
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_four_t4s_cost_four_times_the_gpu_and_count_four_gpus():
    one = estimate_cost("vertex", price_key("n1-standard-4", "NVIDIA_TESLA_T4", 1), 3600)
    four = estimate_cost("vertex", price_key("n1-standard-4", "NVIDIA_TESLA_T4", 4), 3600, instance_count=2)
    assert one.hourly_price_usd == round(N1_STANDARD_4 + T4, 6)
    assert four.instance_type == "n1-standard-4+4xnvidia-tesla-t4"
    assert four.hourly_price_usd == round(N1_STANDARD_4 + 4 * T4, 6)
    assert four.usd == round(2 * (N1_STANDARD_4 + 4 * T4), 6)
    assert (one.gpus, four.gpus) == (1, 8)
    assert four.gpu_hours == 8.0
    assert four.to_dict()["gpus"] == 8


def test_spot_prices_every_attached_gpu_at_the_spot_rate():
    spot = estimate_cost("vertex", "n1-standard-4+2xnvidia-tesla-t4", 3600, spot=True)
    assert spot.hourly_price_usd == round(0.0438 + 2 * 0.1425, 6)


def test_a_budget_one_t4_fits_is_refused_for_four_t4s(tmp_path):
    # max_runtime 1800 s: 1 x T4 may cost $0.31, 4 x T4 $0.91; the budget is $0.50.
    one = load_spec(vertex_spec(tmp_path, 0.5, accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1))
    assert one.training.max_cost_usd == 0.5
    message = load_problems(vertex_spec(tmp_path, 0.5, accelerator_type="NVIDIA_TESLA_T4", accelerator_count=4))
    assert "training.max_cost_usd: a job may cost up to $0.91 (1 x n1-standard-4+4xnvidia-tesla-t4 at $1.8285/h" in message


def test_the_dag_launch_budget_prices_the_accelerator_count(tmp_path):
    from airflow_retrain.dag_factory import build_dag

    spec = load_spec(vertex_spec(tmp_path, 5.0, accelerator_type="NVIDIA_TESLA_T4", accelerator_count=4, replica_count=2))
    train = build_dag(spec).get_task("train")
    assert (train.instance_type, train.instance_count) == ("n1-standard-4+4xnvidia-tesla-t4", 2)
    worst = max_job_cost("vertex", train.instance_type, train.instance_count, train.max_runtime_seconds)
    assert worst.usd == round(2 * (N1_STANDARD_4 + 4 * T4) * 0.5, 6)


@pytest.mark.parametrize(
    ("vertex", "message"),
    [
        (
            {"accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 3},
            "training.vertex.accelerator_count: 3 x NVIDIA_TESLA_T4 is not offered on n1-standard-4; choose 1, 2, 4",
        ),
        (
            {"accelerator_type": "NVIDIA_TESLA_V100", "accelerator_count": 16},
            "training.vertex.accelerator_count: 16 x NVIDIA_TESLA_V100 is not offered on n1-standard-4; choose 1, 2, 4, 8",
        ),
        (
            {"machine_type": "n1-standard-96", "accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 1},
            "training.vertex.accelerator_count: n1-standard-96 has 96 vCPUs, more than 1 x NVIDIA_TESLA_T4 allows (48); use 4 GPUs",
        ),
        (
            {"machine_type": "a2-highgpu-1g", "accelerator_type": "NVIDIA_TESLA_A100", "accelerator_count": 2},
            "training.vertex.accelerator_count: a2-highgpu-1g comes with 1 x NVIDIA_TESLA_A100, not 2",
        ),
    ],
)
def test_counts_the_cloud_does_not_offer_are_refused_at_load(tmp_path, vertex, message):
    assert message in load_problems(vertex_spec(tmp_path, **vertex))


def test_every_offered_count_is_accepted_by_the_catalog():
    for accelerator, limits in ATTACHABLE_GPU_COUNTS.items():
        for count in limits:
            assert machine_problems("n1-standard-4", accelerator, count, "training.vertex") == [], (accelerator, count)


def test_run_cost_of_a_finished_vertex_job_counts_its_accelerators():
    from google.cloud.aiplatform_v1.types import CustomJob
    from google.cloud.aiplatform_v1.types import JobState as VertexState

    from airflow_retrain.training.vertex import VertexTrainingBackend

    backend = VertexTrainingBackend(
        region="us-central1", staging_bucket="gs://b", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=4
    )
    pool = {
        "machine_spec": {"machine_type": "n1-standard-4", "accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 4},
        "replica_count": 2,
        "container_spec": {"image_uri": "xgboost"},
    }
    custom_job = CustomJob(
        name="projects/p/locations/us-central1/customJobs/1",
        display_name="churn-1",
        state=VertexState.JOB_STATE_SUCCEEDED,
        job_spec={"worker_pool_specs": [pool]},
        create_time={"seconds": 900},
        start_time={"seconds": 1000},
        end_time={"seconds": 4600},
    )
    job = backend._job(custom_job)  # what describe() returns for this custom job
    cost = backend.cost(job)
    assert (job.instance_type, job.instance_count, job.billable_seconds) == ("n1-standard-4+4xnvidia-tesla-t4", 2, 3600.0)
    assert cost.usd == round(2 * (N1_STANDARD_4 + 4 * T4), 6)
    entry = training_run_entry("churn", "churn_retrain", "k", job, cost, now=5000.0)
    assert entry.gpu_hours == 8.0  # 2 replicas x 4 T4 x 1 h


@pytest.mark.parametrize(
    ("instance_type", "gpus"),
    [("ml.g4dn.12xlarge", 4), ("ml.p3.8xlarge", 4), ("ml.g5.24xlarge", 4), ("ml.g6.48xlarge", 8),
     ("ml.p5.4xlarge", 1), ("ml.g5.xlarge", 1), ("ml.m5.xlarge", 0), ("ml.trn1.32xlarge", 0)],
)
def test_sagemaker_gpus_per_instance_come_from_the_catalog(instance_type, gpus):
    assert sagemaker_gpus(instance_type) == gpus
    assert gpus_per_instance("sagemaker", instance_type) == gpus


def test_ledger_gpu_hours_of_a_multi_gpu_sagemaker_job():
    job = TrainingJob(
        job_name="churn-2", backend="sagemaker", state=JobState.COMPLETED, instance_type="ml.g5.24xlarge",
        instance_count=3, created_at=0.0, started_at=0.0, ended_at=1800.0, billable_seconds=1800.0,
        details={"region": "us-east-1"},
    )
    cost = estimate_cost("sagemaker", "ml.g5.24xlarge", 1800, 3, hourly_price_usd=10.0)
    entry = training_run_entry("churn", "churn_retrain", "k", job, cost, now=1800.0)
    assert entry.gpu_hours == 6.0  # 3 instances x 4 GPUs x 0.5 h
    assert cost.gpus == 12


def test_unknown_gpu_family_is_unknown_not_zero():
    assert sagemaker_gpus("ml.g99.xlarge") is None
    assert estimate_cost("sagemaker", "ml.g99.xlarge", 60, hourly_price_usd=1.0).gpus is None
    assert "gpus" not in estimate_cost("local", "local", 60).to_dict()
