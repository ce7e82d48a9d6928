"""

from __future__ import annotations

from .cli import main
from .client import FakeCloudClient, FakeCloudHandle, start_fake_cloud
from .config import DEFAULT_ACCESS_KEY, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_REGION, LOG_GROUP, FakeCloudConfig
from .faults import ApiCallLog, Fault, FaultPlan, JobFault, JobFaultPlan
from .jobs import TrainingRun
from .sagemaker import training_instance_types
from .server import FakeCloud

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_REGION",
    "LOG_GROUP",
    "ApiCallLog",
    "FakeCloud",
    "FakeCloudClient",
    "FakeCloudConfig",
    "FakeCloudHandle",
    "Fault",
    "FaultPlan",
    "JobFault",
    "JobFaultPlan",
    "TrainingRun",
    "main",
    "start_fake_cloud",
    "training_instance_types",
]
