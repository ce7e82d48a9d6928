"""The ``training:`` block of a spec: the script, its resources and the backend that runs it."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from airflow_retrain.spec.fields import (
    IDENTIFIER_RE,
    RESERVED_HYPERPARAMETERS,
    FiniteFloat,
    StrictModel,
    check_env_name,
    check_image,
    gcs_bucket_problem,
    key_prefix_problem,
    s3_bucket_problem,
    unsafe_text,
)
from airflow_retrain.training import BACKEND_NAMES


class ResourcesSpec(StrictModel):
    instance_type: str = "local"
    # bounded: the ledger's instance_count column is a 32-bit INTEGER, and no cloud quota comes near 1000
    instance_count: StrictInt = Field(1, ge=1, le=1000)
    max_runtime_seconds: StrictInt = Field(3600, ge=60, le=7 * 24 * 3600)
    gpu: Literal["auto", "required", "none"] = "auto"
    hourly_price_usd: FiniteFloat | None = Field(
        None, ge=0, le=10_000, description="override the price table, e.g. an internal chargeback rate"
    )


class CloudJobSpec(StrictModel):
    """What the cloud blocks check alike: the ``prefix`` under their bucket and the training ``image``
    (each subclass declares both fields, with its own description)."""

    @field_validator("prefix", check_fields=False)
    @classmethod
    def _object_prefix(cls, value: str) -> str:
        if problem := key_prefix_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("image", check_fields=False)
    @classmethod
    def _image_reference(cls, value: str | None) -> str | None:
        return check_image(value)


class SageMakerSpec(CloudJobSpec):
    """Where and how SageMaker runs the job (``training.sagemaker``, required with ``backend: sagemaker``).

    The instance type and count come from ``training.resources``; credentials and the endpoint come
    from the Airflow AWS connection (``connection_id``), never from the spec.
    """

    role_arn: str = Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$", description="execution role")
    bucket: str = Field(description="S3 bucket for code, inputs and outputs (its name, not an s3:// URI)")
    prefix: str = Field("airflow-retrain", description="key prefix under the bucket")
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    connection_id: str = Field("aws_default", description="Airflow AWS connection (credentials, endpoint_url)")
    image: str | None = Field(None, description="training image; default: the SageMaker XGBoost framework image")
    framework_version: str = Field("1.7-1", description="SageMaker XGBoost framework version for the image")
    volume_size_gb: StrictInt = Field(30, ge=1, le=16384)
    # botocore's SubnetId / SecurityGroupId / KmsKeyId shapes
    subnets: list[Annotated[str, Field(pattern=r"^[-0-9a-zA-Z]{1,32}$")]] = Field(default_factory=list, max_length=16)
    security_group_ids: list[Annotated[str, Field(pattern=r"^[-0-9a-zA-Z]{1,32}$")]] = Field(
        default_factory=list, max_length=5
    )
    kms_key_id: str | None = Field(
        None, pattern=r"^[a-zA-Z0-9:/_-]{1,2048}$", description="KMS key for the output and the training volume"
    )
    spot: StrictBool = Field(False, description="managed spot training (MaxWaitTimeInSeconds = 2 x max runtime)")

    @field_validator("bucket")
    @classmethod
    def _s3_bucket_name(cls, value: str) -> str:
        if value.startswith("s3://"):
            raise ValueError(f"{value!r}: give the bucket's name, without s3://")
        if problem := s3_bucket_problem(value):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _vpc_pair(self) -> SageMakerSpec:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("subnets and security_group_ids go together (a VPC config needs both)")
        return self


class VertexSpec(CloudJobSpec):
    """Where and how Vertex AI runs the job (``training.vertex``, required with ``backend: vertex``).

    Credentials (and the default project) come from the Airflow Google Cloud connection
    (``connection_id``), never from the spec. Machine and accelerator types are checked against the
    aiplatform client's ``AcceleratorType`` enum and the machine families that take them.
    """

    project: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", description="project; default: the connection's"
    )
    region: str = Field(pattern=r"^[a-z]+-[a-z]+\d+$", description="Vertex AI region, e.g. us-central1")
    staging_bucket: str = Field(
        pattern=r"^(gs://)?[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]/?$",
        description="GCS bucket for code, staged inputs, outputs and checkpoints",
    )
    prefix: str = Field("airflow-retrain", description="object prefix under the staging bucket")
    image: str | None = Field(None, description="training image; default: Vertex's prebuilt XGBoost CPU image")
    machine_type: str = "n1-standard-4"
    accelerator_type: str | None = Field(None, description="an aiplatform AcceleratorType, e.g. NVIDIA_TESLA_T4")
    accelerator_count: StrictInt = Field(0, ge=0, le=16)
    replica_count: StrictInt = Field(1, ge=1, le=64, description="replicas training one model (data-parallel)")
    service_account: str | None = Field(None, pattern=r"^\S+@\S+\.iam\.gserviceaccount\.com$")
    network: str | None = Field(None, pattern=r"^projects/[^/]+/global/networks/[^/]+$")
    spot: StrictBool = Field(False, description="Spot VMs (scheduling.strategy SPOT); preempted jobs restart")
    connection_id: str = Field("google_cloud_default", description="Airflow Google Cloud connection")

    @field_validator("staging_bucket")
    @classmethod
    def _gcs_bucket_name(cls, value: str) -> str:
        if problem := gcs_bucket_problem(value.removeprefix("gs://").removesuffix("/")):
            raise ValueError(problem)
        return value


class TrainingSpec(StrictModel):
    backend: str = "local"
    entry_point: str = Field(description="training script, relative to the project root")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    hyperparameters: dict[str, str | StrictBool | StrictInt | float] = Field(default_factory=dict)
    environment: list[str] = Field(
        default_factory=list,
        description="names of worker environment variables the training script may see, on top of the "
        "built-in allow-list (local backend)",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="environment variables set for the training script (no secrets)"
    )
    pool: str | None = Field(
        None, description="Airflow pool for the train task (create it with include_deferred so deferred tasks count)"
    )
    max_cost_usd: FiniteFloat | None = Field(
        None, gt=0, description="refuse to launch when hourly price x instances x max runtime exceeds this"
    )
    sagemaker: SageMakerSpec | None = None
    vertex: VertexSpec | None = None
    spot: StrictBool = Field(
        False,
        description="spot capacity on any remote backend (SageMaker managed spot with checkpoints, Vertex Spot "
        "VMs); the script resumes from its checkpoint dir after an interruption",
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKEND_NAMES:
            raise ValueError(f"unknown training backend {value!r}; known: {', '.join(BACKEND_NAMES)}")
        return value

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _safe_hyperparameters(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic names the type error
        seen: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"key {key!r} is not text")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"value of {key!r} is {item}, not a finite number")
            if not isinstance(item, (str, bool, int, float)):
                raise ValueError(f"value of {key!r} must be text, a number or true/false, not {type(item).__name__}")
            if not IDENTIFIER_RE.match(key):
                raise ValueError(
                    f"key {key!r} is not a valid identifier (letters, digits and _, not starting with a digit, "
                    "at most 128 characters): it becomes --{key} and SM_HP_<KEY>"
                )
            if key in RESERVED_HYPERPARAMETERS:
                raise ValueError(f"key {key!r} is set by the pipeline itself (from dataset/resources); remove it")
            if key.upper() in seen:
                raise ValueError(f"keys {seen[key.upper()]!r} and {key!r} both become SM_HP_{key.upper()}")
            seen[key.upper()] = key
            if isinstance(item, str) and (reason := unsafe_text(item)):
                raise ValueError(f"value of {key!r} {reason}")
            if isinstance(item, str) and ("$(" in item or "`" in item):
                # argv here, but a container's shell entry script (`train $SM_HP_X`) may expand it
                raise ValueError(f"value of {key!r} contains shell command substitution ($( or `)")
        return value

    @field_validator("environment")
    @classmethod
    def _passable_names(cls, value: list[str]) -> list[str]:
        for name in value:
            check_env_name(name)
        return value

    @field_validator("env")
    @classmethod
    def _settable_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, item in value.items():
            check_env_name(name)
            if reason := unsafe_text(item):
                raise ValueError(f"value of {name!r} {reason}")
        return value

