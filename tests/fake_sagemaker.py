"""A SageMaker + CloudWatch fake for the teardown tests and benchmark: moto's server, in-process.

moto 5.2.5 has no ``StopTrainingJob`` and finishes every training job at once. Its server runs in this
process (``ThreadedMotoServer``), so :func:`patch_training_jobs` extends its SageMaker backend here: a
``StopTrainingJob`` action, and :func:`set_training_job_status` to hold a job ``InProgress``.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from datetime import UTC, datetime
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/sagemaker"
CONN_ID = "aws_fake"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int | None = None):
    """Start moto's server on loopback; returns ``(server, endpoint_url)``."""
    from moto.server import ThreadedMotoServer

    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def reset(endpoint_url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")).read()


def aws_connection(endpoint_url: str) -> str:
    """The Airflow connection (as the ``AIRFLOW_CONN_<ID>`` JSON) pointing the provider at the fake."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint_url, "region_name": REGION},
        }
    )


STOP_CALLS: list[str] = []


def patch_training_jobs() -> None:
    """Give moto's SageMaker a ``StopTrainingJob`` (idempotent; records each call in :data:`STOP_CALLS`)."""
    from moto.core.responses import EmptyResult
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.responses import SageMakerResponse

    if getattr(SageMakerResponse, "_retrain_stop_patched", False):
        return

    def stop_training_job(self) -> Any:
        name = self._get_param("TrainingJobName")
        job = self.sagemaker_backend.training_jobs.get(name)
        if job is None:
            raise ValidationError(message=f"Could not find training job '{name}'.")
        STOP_CALLS.append(name)
        if job.training_job_status == "InProgress":
            job.training_job_status = job.secondary_status = "Stopped"
        return EmptyResult()

    SageMakerResponse.stop_training_job = stop_training_job
    SageMakerResponse._retrain_stop_patched = True


def set_training_job_status(name: str, status: str = "InProgress") -> None:
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends[ACCOUNT][REGION].training_jobs[name].training_job_status = status


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def create_endpoint(sm, name: str, tags: dict[str, str], instance_type: str = "ml.g4dn.xlarge", count: int = 1) -> None:
    sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img:latest"})
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": f"{name}-model", "InitialInstanceCount": count, "InstanceType": instance_type}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config", Tags=_tags(tags))


def create_notebook(sm, name: str, tags: dict[str, str], instance_type: str = "ml.p3.2xlarge") -> None:
    sm.create_notebook_instance(NotebookInstanceName=name, InstanceType=instance_type, RoleArn=ROLE, Tags=_tags(tags))


def create_training_job(sm, name: str, tags: dict[str, str], instance_type: str = "ml.g5.xlarge", count: int = 1,
                        max_runtime: int = 86400) -> None:
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "img:latest", "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://bucket/out"},
        ResourceConfig={"InstanceType": instance_type, "InstanceCount": count, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": max_runtime},
        Tags=_tags(tags),
    )
    set_training_job_status(name, "InProgress")


def invoke(cloudwatch, endpoint: str, at: float, count: float = 5.0) -> None:
    """Record ``count`` Invocations of the endpoint at epoch ``at`` (what SageMaker reports to CloudWatch)."""
    cloudwatch.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {
                "MetricName": "Invocations",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}],
                "Timestamp": datetime.fromtimestamp(at, UTC),
                "Value": count,
                "Unit": "None",
            }
        ],
    )


def tags_of(sm, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}


def create_processing_job(sm, name: str, tags: dict[str, str], instance_type: str = "ml.g4dn.xlarge") -> None:
    sm.create_processing_job(
        ProcessingJobName=name,
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": 10}},
        AppSpecification={"ImageUri": "img:latest"},
        RoleArn=ROLE,
        StoppingCondition={"MaxRuntimeInSeconds": 86400},
        Tags=_tags(tags),
    )
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends[ACCOUNT][REGION].processing_jobs[name].processing_job_status = "InProgress"
