"""PipelineSpec: one validated YAML file per model under ``include/pipelines/``.

The spec is the only place a pipeline is configured. It is loaded at DAG-parse time, so this module
imports only pydantic and yaml. Validation errors name the file and the field (``training.backend``),
and a broken spec never stops the other specs from loading (:func:`load_specs` returns errors per file).

Paths in a spec (``dbt.project_dir``, ``training.entry_point``) are relative to the project root: the
environment variable ``RETRAIN_HOME`` when set, else Airflow's ``[retrain] home`` option, otherwise the
folder that holds ``include/``.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from airflow_retrain.training import BACKEND_NAMES

_NAME_RE = r"^[a-z][a-z0-9_]{0,62}$"

# Numbers in a spec are real numbers: ``true`` is not 1, ``.nan``/``.inf`` are not prices or margins.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
# Airflow connection and pool ids: what its UI and CLI accept.
_AIRFLOW_ID_RE = r"^[A-Za-z0-9_.-]{1,250}$"
# Hyperparameter keys become ``--key`` arguments and ``SM_HP_<KEY>`` variables.
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
#: Airflow's limit on a DAG tag (``airflow.models.dag.TAG_MAX_LEN``).
TAG_MAX_LENGTH = 100
#: The schedule presets Airflow accepts besides cron expressions and ``null``.
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
#: Hyperparameters the DAG sets itself from the spec (``dataset.*``, ``resources.gpu``).
RESERVED_HYPERPARAMETERS = ("target_column", "id_column", "device")
#: Pool that serialises dbt and the export of every pipeline on the embedded DuckDB warehouse.
EMBEDDED_WAREHOUSE_POOL = "retrain_embedded_warehouse"
# Names the training environment never takes from the worker: Airflow's own (connections, config,
# secrets) and the container contract the backend writes itself.
_FORBIDDEN_ENV_PREFIXES = ("AIRFLOW", "_AIRFLOW", "SM_")


def _unsafe_text(value: str) -> str | None:
    """Why ``value`` cannot travel into a subprocess argument or environment (None if it can)."""
    if "\x00" in value:
        return "contains a NUL byte"
    if _CONTROL_CHARS_RE.search(value):
        return "contains a control character"
    if any(marker in value for marker in _TEMPLATE_MARKERS):
        return "contains a Jinja template marker ({{, {% or {#), which Airflow would render at run time"
    return None


_S3_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
# Prefixes and suffixes S3 reserves (access points, Object Lambda, directory and table buckets, MRAPs).
_S3_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_S3_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3", ".mrap")


def s3_bucket_problem(name: str) -> str | None:
    """Why ``name`` is not a general-purpose S3 bucket name by S3's naming rules (None if it is one)."""
    if not 3 <= len(name) <= 63:
        return f"S3 bucket name {name!r} must be 3 to 63 characters long, not {len(name)}"
    if not _S3_BUCKET_CHARS.match(name):
        return f"S3 bucket name {name!r} may contain only lowercase letters, digits, hyphens (-) and dots (.)"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return f"S3 bucket name {name!r} must begin and end with a letter or digit"
    if ".." in name:
        return f"S3 bucket name {name!r} must not contain two adjacent dots"
    if _IPV4.match(name):
        return f"S3 bucket name {name!r} must not be formatted as an IP address"
    if name.startswith(_S3_RESERVED_PREFIXES):
        return f"S3 bucket name {name!r} must not start with a reserved prefix ({', '.join(_S3_RESERVED_PREFIXES)})"
    if name.endswith(_S3_RESERVED_SUFFIXES):
        return f"S3 bucket name {name!r} must not end with a reserved suffix ({', '.join(_S3_RESERVED_SUFFIXES)})"
    return None


_GCS_BUCKET_CHARS = re.compile(r"^[a-z0-9._-]+$")


def gcs_bucket_problem(name: str) -> str | None:
    """Why ``name`` is not a Cloud Storage bucket name by GCS's naming rules (None if it is one)."""
    longest = 222 if "." in name else 63
    if not 3 <= len(name) <= longest:
        return f"GCS bucket name {name!r} must be 3 to {longest} characters long, not {len(name)}"
    if not _GCS_BUCKET_CHARS.match(name):
        return f"GCS bucket name {name!r} may contain only lowercase letters, digits, -, _ and ."
    if not (name[0].isalnum() and name[-1].isalnum()):
        return f"GCS bucket name {name!r} must begin and end with a letter or digit"
    if any(not 1 <= len(part) <= 63 for part in name.split(".")):
        return f"GCS bucket name {name!r}: each dot-separated part must be 1 to 63 characters"
    if _IPV4.match(name):
        return f"GCS bucket name {name!r} must not be formatted as an IP address"
    if name.startswith("goog") or "google" in name or "g00gle" in name:
        return f"GCS bucket name {name!r} must not begin with 'goog' or contain 'google'"
    return None


# Object key prefixes under a bucket: S3's "safe characters" (also safe in GCS object names), in segments.
_KEY_PREFIX_RE = re.compile(r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/?$")


def _key_prefix_problem(value: str) -> str | None:
    if len(value) > 512:
        return f"at most 512 characters, not {len(value)}"
    if not _KEY_PREFIX_RE.match(value):
        return (
            f"{value!r} is not an object key prefix: segments of letters, digits and !_.*'()- joined by '/', "
            "with no leading '/', no empty segment and no spaces"
        )
    if any(part in (".", "..") for part in value.split("/")):
        return f"{value!r} has a '.' or '..' segment"
    return None


class SpecError(ValueError):
    """A pipeline spec that cannot be used; the message names the file and the field."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"invalid pipeline spec {self.path}: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DbtSpec(_Strict):
    """Which part of the dbt project the pipeline builds before training.

    The selection means what it means to ``dbt build --select/--exclude/--selector`` and is checked
    against the project's cached manifest (:mod:`airflow_retrain.dbt.selection`), never against file names.
    """

    project_dir: str = Field("dbt", description="dbt project folder, relative to the project root")
    select: list[str] = Field(default_factory=list, description="dbt node selection, as for `dbt build --select`")
    exclude: list[str] = Field(default_factory=list)
    selector: str | None = Field(None, description="a YAML selector of the project, as for `dbt build --selector`")
    target: str | None = Field(
        None, description="profile target; default: the connection's type, else the profile's default"
    )
    profiles_dir: str | None = Field(
        None, description="folder of profiles.yml, relative to the project root; default: the dbt project folder"
    )
    timeout_minutes: StrictInt = Field(120, ge=1, le=24 * 60, description="dbt is killed (with its children) after this")

    @model_validator(mode="after")
    def _selects_something(self) -> DbtSpec:
        if not self.select and not self.selector:
            raise ValueError("dbt.select or dbt.selector is required")
        return self

    @field_validator("select", "exclude")
    @classmethod
    def _selectors_are_not_flags(cls, value: list[str]) -> list[str]:
        for i, selector in enumerate(value):
            if not selector.strip():
                raise ValueError(f"item {i} is empty")
            if selector.lstrip().startswith("-"):
                raise ValueError(f"item {i} {selector!r} starts with '-': a selector, not a dbt flag")
            if reason := _unsafe_text(selector):
                raise ValueError(f"item {i} {reason}")
        return value

    @field_validator("target", "project_dir", "selector", "profiles_dir")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.strip() or value.lstrip().startswith("-"):
                raise ValueError(f"{value!r} is not a usable name")
            if reason := _unsafe_text(value):
                raise ValueError(reason)
        return value


class AssetSchedule(_Strict):
    """Data-aware schedule: run when the listed dbt models' Assets are updated (and/or on a cron)."""

    assets: list[str] = Field(default_factory=list, description="dbt model names; default: dataset.feature_table")
    cron: str | None = Field(None, description="also run on this cron (AssetOrTimeSchedule)")


class DatasetSpec(_Strict):
    """How the feature mart becomes a run-scoped training dataset."""

    feature_table: str = Field(description="dbt model that holds one row per example, e.g. churn_features")
    target_column: str = Field(min_length=1)
    id_column: str = Field(min_length=1)
    holdout_fraction: FiniteFloat = Field(0.2, gt=0.0, lt=0.5)
    min_rows: StrictInt = Field(100, ge=1)

    @field_validator("feature_table")
    @classmethod
    def _model_name_only(cls, value: str) -> str:
        if "." in value or '"' in value:
            raise ValueError(
                f"{value!r}: give the dbt model's name (e.g. {value.replace(chr(34), '').split('.')[-1]!r}); "
                "its database and schema come from dbt, so a schema prefix is not allowed"
            )
        if not value.strip():
            raise ValueError("empty model name")
        return value

    @field_validator("target_column", "id_column")
    @classmethod
    def _column_text(cls, value: str) -> str:
        if reason := _unsafe_text(value):
            raise ValueError(reason)
        return value

    @model_validator(mode="after")
    def _target_is_not_the_id(self) -> DatasetSpec:
        if self.target_column == self.id_column:
            raise ValueError(
                f"target_column and id_column are both {self.target_column!r}: the label cannot be the example id"
            )
        return self


class ResourcesSpec(_Strict):
    instance_type: str = "local"
    # bounded: the ledger's instance_count column is a 32-bit INTEGER, and no cloud quota comes near 1000
    instance_count: StrictInt = Field(1, ge=1, le=1000)
    max_runtime_seconds: StrictInt = Field(3600, ge=60, le=7 * 24 * 3600)
    gpu: Literal["auto", "required", "none"] = "auto"
    hourly_price_usd: FiniteFloat | None = Field(
        None, ge=0, le=10_000, description="override the price table, e.g. an internal chargeback rate"
    )


class SageMakerSpec(_Strict):
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

    @field_validator("prefix")
    @classmethod
    def _object_prefix(cls, value: str) -> str:
        if problem := _key_prefix_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str | None) -> str | None:
        return _check_image(value)

    @model_validator(mode="after")
    def _vpc_pair(self) -> SageMakerSpec:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("subnets and security_group_ids go together (a VPC config needs both)")
        return self


class VertexSpec(_Strict):
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

    @field_validator("prefix")
    @classmethod
    def _object_prefix(cls, value: str) -> str:
        if problem := _key_prefix_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str | None) -> str | None:
        return _check_image(value)

    @field_validator("staging_bucket")
    @classmethod
    def _gcs_bucket_name(cls, value: str) -> str:
        if problem := gcs_bucket_problem(value.removeprefix("gs://").removesuffix("/")):
            raise ValueError(problem)
        return value


# A container image reference: registry/path[:tag][@sha256:digest], no spaces or control characters.
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._:/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")


def _check_image(value: str | None) -> str | None:
    if value is not None and (len(value) > 1024 or not _IMAGE_RE.match(value)):
        raise ValueError(
            f"{value!r} is not a container image reference (registry/repository[:tag][@sha256:digest], lowercase "
            "repository, no spaces)"
        )
    return value


class TrainingSpec(_Strict):
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
            if not _IDENTIFIER_RE.match(key):
                raise ValueError(
                    f"key {key!r} is not a valid identifier (letters, digits and _, not starting with a digit, "
                    "at most 128 characters): it becomes --{key} and SM_HP_<KEY>"
                )
            if key in RESERVED_HYPERPARAMETERS:
                raise ValueError(f"key {key!r} is set by the pipeline itself (from dataset/resources); remove it")
            if key.upper() in seen:
                raise ValueError(f"keys {seen[key.upper()]!r} and {key!r} both become SM_HP_{key.upper()}")
            seen[key.upper()] = key
            if isinstance(item, str) and (reason := _unsafe_text(item)):
                raise ValueError(f"value of {key!r} {reason}")
            if isinstance(item, str) and ("$(" in item or "`" in item):
                # argv here, but a container's shell entry script (`train $SM_HP_X`) may expand it
                raise ValueError(f"value of {key!r} contains shell command substitution ($( or `)")
        return value

    @field_validator("environment")
    @classmethod
    def _passable_names(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_env_name(name)
        return value

    @field_validator("env")
    @classmethod
    def _settable_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, item in value.items():
            _check_env_name(name)
            if reason := _unsafe_text(item):
                raise ValueError(f"value of {name!r} {reason}")
        return value


def _check_env_name(name: str) -> None:
    if not _ENV_NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a valid environment variable name")
    if name.upper().startswith(_FORBIDDEN_ENV_PREFIXES):
        raise ValueError(
            f"{name!r}: Airflow's variables (connections, config, secrets) and the SM_* container contract "
            "never reach the training script"
        )


ARTIFACT_SCHEMES = ("file", "s3", "gs", "gcs")


def artifact_root_problems(root: str) -> list[str]:
    """What is wrong with an artifact root URI (empty when it is usable)."""
    parts = urlsplit(root)
    if parts.scheme not in ARTIFACT_SCHEMES:
        return [f"{root!r} must be a URI with one of the schemes {', '.join(s + '://' for s in ARTIFACT_SCHEMES)}"]
    if "@" in parts.netloc:
        return [f"{root!r}: name the connection in connection_id, not in the URI"]
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            return [f"{root!r}: a file:// root needs an absolute path (file:///srv/artifacts)"]
    elif not parts.netloc:
        return [f"{root!r}: no bucket"]
    elif parts.scheme == "s3" and (problem := s3_bucket_problem(parts.netloc)):
        return [f"{root!r}: {problem}"]
    elif parts.scheme in ("gs", "gcs") and (problem := gcs_bucket_problem(parts.netloc)):
        return [f"{root!r}: {problem}"]
    if parts.query or parts.fragment:
        return [f"{root!r}: no query or fragment allowed"]
    return []



class ArtifactsSpec(_Strict):
    """Where the pipeline's runs hand data, models and reports to each other (see ``airflow_retrain.artifacts``)."""

    root: str | None = Field(
        None,
        description="artifact store root URI: file:///abs/path, s3://bucket/prefix or gs://bucket/prefix; "
        "default: RETRAIN_ARTIFACT_ROOT, else file://<state dir>/artifacts",
    )
    connection_id: str | None = Field(
        None, description="Airflow connection for the root; default aws_default (s3), google_cloud_default (gs)"
    )

    @field_validator("root")
    @classmethod
    def _usable_root(cls, value: str | None) -> str | None:
        if value is not None and (problems := artifact_root_problems(value)):
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _connection_needs_root(self) -> ArtifactsSpec:
        if self.connection_id and not self.root:
            raise ValueError("connection_id is set but root is not")
        return self


class Threshold(_Strict):
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min and/or max")
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError("threshold bounds must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class RateBand(_Strict):
    min: FiniteFloat | None = Field(None, ge=0.0, le=1.0)
    max: FiniteFloat | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> RateBand:
        if self.min is None and self.max is None:
            raise ValueError("a rate band needs min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class NullRateSpec(_Strict):
    default: FiniteFloat = Field(0.05, ge=0.0, le=1.0, description="largest null rate of any column")
    columns: dict[str, FiniteFloat] = Field(default_factory=dict, description="column -> largest null rate")

    @field_validator("columns")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for column, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"null rate of {column!r} must be within [0, 1], got {rate}")
        return value


class DriftSpec(_Strict):
    psi_max: FiniteFloat | None = Field(0.2, gt=0.0, description="largest PSI of a feature vs the champion's snapshot")
    ks_max: FiniteFloat | None = Field(
        None, gt=0.0, le=1.0, description="largest Kolmogorov-Smirnov statistic D (not a p-value) of a numeric feature"
    )
    on_missing_snapshot: Literal["pass", "fail"] = Field(
        description="no champion snapshot yet (first run): pass or fail; required, so the first run is explicit"
    )
    columns: list[str] | None = Field(None, description="features to check; default: every feature")

    @model_validator(mode="after")
    def _has_bound(self) -> DriftSpec:
        if self.psi_max is None and self.ks_max is None:
            raise ValueError("a drift gate needs psi_max and/or ks_max")
        return self


class SchemaGateSpec(_Strict):
    match_contract: StrictBool = Field(True, description="columns and types match the feature model's dbt contract")
    match_previous: StrictBool = Field(True, description="columns and types match the last passed run's")


class DataGateSpec(_Strict):
    """``gates.data``: checks on the exported dataset, before training."""

    schema_: SchemaGateSpec = Field(default_factory=SchemaGateSpec, alias="schema")
    min_rows: StrictInt | None = Field(None, ge=1, description="fewest rows; default: dataset.min_rows")
    max_row_change: FiniteFloat | None = Field(
        None, gt=0.0, description="largest relative row-count change vs the last passed run (0.2 = 20 %)"
    )
    max_null_rate: NullRateSpec = Field(default_factory=NullRateSpec)
    label_rate: RateBand | None = None
    drift: DriftSpec | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ChampionGateSpec(_Strict):
    """``gates.champion``: the champion re-scored on the candidate's holdout."""

    metric: str | None = Field(None, description="default: registry.primary_metric")
    min_improvement: FiniteFloat | None = Field(None, ge=0.0, description="default: registry.min_improvement")
    greater_is_better: StrictBool | None = Field(None, description="default: registry's for the primary metric")


class SliceGateSpec(_Strict):
    """``gates.slices``: per-slice metrics, candidate vs champion on the same holdout rows."""

    columns: list[str] = Field(min_length=1, description="feature columns to slice the holdout by")
    metric: str | None = Field(None, description="default: registry.primary_metric")
    max_regression: FiniteFloat = Field(0.02, ge=0.0, description="largest allowed drop of a slice's metric")
    min_rows: StrictInt = Field(30, ge=1, description="smaller slices are recorded as skipped")


class EfficiencyGateSpec(_Strict):
    """``gates.efficiency``: the candidate's size and batch scoring latency."""

    max_model_mb: FiniteFloat | None = Field(None, gt=0.0)
    max_latency_ms: FiniteFloat | None = Field(None, gt=0.0, description="median time to score `rows` rows in one batch")
    rows: StrictInt = Field(1000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _has_bound(self) -> EfficiencyGateSpec:
        if self.max_model_mb is None and self.max_latency_ms is None:
            raise ValueError("an efficiency gate needs max_model_mb and/or max_latency_ms")
        return self


class GatesSpec(_Strict):
    metrics: dict[str, Threshold] = Field(min_length=1, description="metric name -> bounds, all must hold")
    data: DataGateSpec = Field(default_factory=DataGateSpec)
    champion: ChampionGateSpec = Field(default_factory=ChampionGateSpec)
    slices: SliceGateSpec | None = None
    efficiency: EfficiencyGateSpec | None = None


class ApprovalSpec(_Strict):
    """A human approves each promotion in the Airflow UI (Airflow's ApprovalOperator) before it happens."""

    required: StrictBool = False
    timeout_minutes: StrictInt = Field(
        24 * 60, ge=1, le=30 * 24 * 60, description="no answer within this counts as a rejection"
    )


class SageMakerMirrorSpec(_Strict):
    model_package_group: str = Field(
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", description="SageMaker model package group name"
    )
    connection_id: str = Field("aws_default", description="Airflow AWS connection")
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")


class MirrorSpec(_Strict):
    sagemaker: SageMakerMirrorSpec | None = None


class LeaseSpec(_Strict):
    """The promotion lease in the registry (shared by every pipeline and deployment using the model)."""

    wait_seconds: FiniteFloat = Field(300.0, ge=0, le=3600, description="wait this long for another run's promotion")
    settle_seconds: FiniteFloat = Field(0.5, ge=0.05, le=30, description="verify-after-write pause")


class RegistrySpec(_Strict):
    model_name: str = Field(min_length=1, max_length=256, description="MLflow registered model; one per pipeline")
    primary_metric: str
    greater_is_better: StrictBool = True
    min_improvement: FiniteFloat = Field(0.0, ge=0.0, description="how much the candidate must beat the champion by")
    flavor: Literal["xgboost"] = Field("xgboost", description="MLflow flavor the model is logged with")
    experiment: str | None = Field(None, description="MLflow experiment; default: retrain/<pipeline name>")
    connection_id: str = Field("mlflow_default", pattern=_AIRFLOW_ID_RE)
    approval: ApprovalSpec = Field(default_factory=ApprovalSpec)
    mirror: MirrorSpec = Field(default_factory=MirrorSpec)
    lease: LeaseSpec = Field(default_factory=LeaseSpec)

    @field_validator("model_name")
    @classmethod
    def _quotable_name(cls, value: str) -> str:
        if '"' in value and "'" in value:
            raise ValueError("a model name cannot contain both ' and \" (MLflow search filters cannot quote it)")
        if value != value.strip() or any(ord(c) < 32 for c in value):
            raise ValueError("a model name cannot have control characters or leading/trailing spaces")
        # MLflow's own rules (mlflow.utils.validation._validate_model_name), checked here so a spec is refused
        # at load, not at registration after dbt, export and training ran.
        if "/" in value or ":" in value:
            raise ValueError(f"{value!r}: MLflow model names cannot contain '/' or ':'")
        if value == "." or value.startswith(".."):
            raise ValueError(f"{value!r}: MLflow refuses names that resolve to another path")
        return value


class BudgetSpec(_Strict):
    """Spending limits; crossing one warns in the run's teardown log (it never stops a run)."""

    weekly_usd: FiniteFloat = Field(gt=0, description="training spend per ISO week (Monday 00:00 UTC), from the cost ledger")


class PipelineSpec(_Strict):
    name: str = Field(pattern=_NAME_RE, description="pipeline name; the DAG id is <name>_retrain")
    description: str = ""
    owner: str = Field("airflow", min_length=1, max_length=250, description="Airflow owner of every task")
    schedule: str | AssetSchedule | None = "@weekly"
    start_date: datetime = datetime(2026, 1, 1)
    timezone: str = Field("UTC", description="IANA time zone of the schedule and of a naive start_date")
    catchup: StrictBool = False
    retries: StrictInt = Field(1, ge=0, le=10)
    tags: list[str] = Field(default_factory=list)
    warehouse_connection_id: str = Field(
        "retrain_warehouse",
        pattern=_AIRFLOW_ID_RE,
        description="Airflow connection (duckdb or postgres) for dbt and the export; while the default "
        "connection is not defined, the embedded DuckDB warehouse under the state dir is used",
    )
    warehouse_pool: str | None = Field(
        "auto",
        description="Airflow pool for dbt_build and export_dataset; 'auto': the 1-slot "
        f"{EMBEDDED_WAREHOUSE_POOL!r} pool when the warehouse may be the embedded DuckDB (the default "
        "connection), none otherwise; null: no pool",
    )
    dbt: DbtSpec
    dataset: DatasetSpec
    training: TrainingSpec
    gates: GatesSpec
    registry: RegistrySpec
    budget: BudgetSpec | None = None
    artifacts: ArtifactsSpec = Field(default_factory=ArtifactsSpec)

    # Set by the loader, not by the YAML.
    source_path: str = Field("", exclude=True)
    root: str = Field("", exclude=True)

    @field_validator("schedule", mode="before")
    @classmethod
    def _asset_schedule_shorthand(cls, value: Any) -> Any:
        """``schedule: asset`` = retrain when the feature table's dbt Asset is updated."""
        if value == "asset":
            return AssetSchedule()
        return value

    @property
    def dag_id(self) -> str:
        return f"{self.name}_retrain"

    @property
    def pool(self) -> str | None:
        """The pool of the warehouse tasks (dbt, export), resolved from ``warehouse_pool``."""
        if self.warehouse_pool != "auto":
            return self.warehouse_pool
        return EMBEDDED_WAREHOUSE_POOL if self.warehouse_connection_id == "retrain_warehouse" else None

    @field_validator("warehouse_pool")
    @classmethod
    def _pool_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(_AIRFLOW_ID_RE, value):
            raise ValueError(f"{value!r} is not a valid Airflow pool name (letters, digits, _ . -)")
        return value

    @field_validator("start_date", mode="before")
    @classmethod
    def _a_date(cls, value: Any) -> Any:
        # pydantic would read a number as seconds since 1970: a spec means a calendar date.
        if isinstance(value, bool) or not isinstance(value, (str, date)):
            raise ValueError(f"expected a date or date-time (2026-01-01), got {value!r}")
        return value

    @field_validator("start_date")
    @classmethod
    def _plausible_date(cls, value: datetime) -> datetime:
        if not 1970 <= value.year <= 2200:
            raise ValueError(f"{value.isoformat()} is outside 1970..2200")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        import pendulum

        try:
            pendulum.timezone(value)
        except Exception:  # noqa: BLE001 - pendulum raises several types for unknown names
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as 'UTC' or 'Europe/Berlin')") from None
        return value

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | AssetSchedule | None) -> str | AssetSchedule | None:
        if value is None:
            return None
        if isinstance(value, AssetSchedule):  # data-aware; its optional cron fallback is a schedule too
            if value.cron:
                validate_schedule(value.cron)
            return value
        return validate_schedule(value)

    @field_validator("owner", "description")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("contains a NUL byte")
        return value

    @field_validator("tags")
    @classmethod
    def _airflow_tags(cls, value: list[str]) -> list[str]:
        for i, tag in enumerate(value):
            if not tag.strip():
                raise ValueError(f"tag {i} is empty")
            if len(tag) > TAG_MAX_LENGTH:
                raise ValueError(f"tag {i} is {len(tag)} characters long; Airflow allows at most {TAG_MAX_LENGTH}")
        return value

    @model_validator(mode="after")
    def _primary_metric_is_gated(self) -> PipelineSpec:
        if self.registry.primary_metric not in self.gates.metrics:
            raise ValueError(
                f"registry.primary_metric {self.registry.primary_metric!r} must also appear in "
                f"gates.metrics (a champion is never chosen on an ungated metric)"
            )
        return self

    @model_validator(mode="after")
    def _gate_thresholds_agree(self) -> PipelineSpec:
        metric = self.gates.champion.metric or self.registry.primary_metric
        if (
            self.gates.champion.greater_is_better is not None
            and metric == self.registry.primary_metric
            and self.gates.champion.greater_is_better != self.registry.greater_is_better
        ):
            raise ValueError(
                f"gates.champion.greater_is_better contradicts registry.greater_is_better for {metric!r}"
            )
        return self

    @property
    def champion_metric(self) -> str:
        return self.gates.champion.metric or self.registry.primary_metric

    @property
    def champion_min_improvement(self) -> float:
        value = self.gates.champion.min_improvement
        return self.registry.min_improvement if value is None else value

    @property
    def champion_greater_is_better(self) -> bool | None:
        if self.gates.champion.greater_is_better is not None:
            return self.gates.champion.greater_is_better
        return self.registry.greater_is_better if self.champion_metric == self.registry.primary_metric else None

    @property
    def model_gate_names(self) -> list[str]:
        """Every gate a candidate version carries a ``retrain.gate.<name>`` tag for, in order."""
        names = ["data", "metrics", "champion"]
        if self.gates.slices is not None:
            names.append("slices")
        if self.gates.efficiency is not None:
            names.append("efficiency")
        return names

    def path(self, relative: str) -> Path:
        """Resolve a spec-relative path against the project root."""
        return (Path(self.root) / relative).resolve()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def validate_schedule(schedule: str, *, start: datetime | None = None) -> str:
    """Check a spec's schedule as the DAG will: a preset or a 5-field cron expression that fires.

    :raises ValueError: naming what is wrong (syntax, a field out of range, a date that never comes).
    """
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter

    if schedule.startswith("@"):
        if schedule not in SCHEDULE_PRESETS:
            raise ValueError(f"unknown preset {schedule!r}; presets: {', '.join(SCHEDULE_PRESETS)}")
        return schedule
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(
            f"{schedule!r} is not a cron expression of 5 fields (minute hour day-of-month month day-of-week) "
            f"nor a preset ({', '.join(SCHEDULE_PRESETS)})"
        )
    try:
        croniter(schedule, start or datetime(2026, 1, 1), max_years_between_matches=10).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron expression {schedule!r} never fires (no such date within 10 years)") from None
    except (CroniterBadCronError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"invalid cron expression {schedule!r}: {e}") from None
    return schedule


def _airflow_option(key: str) -> str | None:
    """``[retrain] <key>`` of the running Airflow's configuration (``AIRFLOW__RETRAIN__<KEY>`` works too).

    Read only when Airflow's configuration is already imported (every Airflow process), so a plain script
    that loads a spec never pays for importing Airflow.
    """
    configuration = sys.modules.get("airflow.configuration")
    if configuration is None:
        return None
    try:
        value = configuration.conf.get("retrain", key, fallback=None)
    except Exception:  # noqa: BLE001 - a config without the section
        return None
    return value or None


def retrain_home() -> Path | None:
    """The project folder holding ``include/pipelines``, the dbt project and training scripts.

    In order: ``RETRAIN_HOME``; Airflow's ``[retrain] home`` option; the checkout this package was
    installed from in editable mode (the folder above ``plugins/`` when it holds ``include/pipelines``).
    ``None`` when none applies -- an installed wheel needs ``RETRAIN_HOME`` or ``[retrain] home``.
    """
    if env := os.environ.get("RETRAIN_HOME"):
        return Path(env).resolve()
    if option := _airflow_option("home"):
        return Path(option).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "include" / "pipelines").is_dir():
        return checkout
    return None


def project_root_for(spec_path: Path) -> Path:
    if env := os.environ.get("RETRAIN_HOME"):
        return Path(env).resolve()
    if option := _airflow_option("home"):
        return Path(option).resolve()
    spec_path = spec_path.resolve()
    for parent in spec_path.parents:
        if parent.name == "include":
            return parent.parent
    return spec_path.parent


def state_dir(root: Path | str | None = None) -> Path:
    """Where runs keep scratch data, local jobs and the embedded warehouse/registry."""
    if env := os.environ.get("RETRAIN_STATE_DIR"):
        return Path(env).resolve()
    if option := _airflow_option("state_dir"):
        return Path(option).resolve()
    base = Path(root) if root else retrain_home()
    if base is None:  # never the current directory: a worker's cwd is anybody's guess
        raise RuntimeError(
            "airflow-retrain has no state dir: set RETRAIN_STATE_DIR (or Airflow's [retrain] state_dir), or "
            "RETRAIN_HOME (or [retrain] home) to use <home>/.local"
        )
    return (base / ".local").resolve()


def _loc_part(part: Any) -> str:
    """One step of a field path; a key that is not a plain name is quoted, so the field stays readable."""
    text = str(part)
    return text if re.fullmatch(r"[A-Za-z0-9_\-]+", text) else repr(text)


def _format_validation_error(err: ValidationError) -> list[str]:
    problems = []
    for item in err.errors():
        field = ".".join(_loc_part(p) for p in item["loc"]) or "<top level>"
        msg = item["msg"]
        if item["type"] == "missing":
            msg = "required field is missing"
        elif item["type"] == "extra_forbidden":
            msg = "unknown field"
        elif item["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif item["type"] in ("int_type", "float_type") and isinstance(item.get("input"), bool):
            # YAML's true/false are not 1/0: a boolean where a number belongs is a mistake, not a count
            msg = f"{msg}, got {str(item['input']).lower()} (booleans are not numbers)"
        problems.append(f"{field}: {msg}")
    return problems


def dbt_model_names(project_dir: Path) -> set[str]:
    """Model names of a dbt project, read from its files (only while no manifest is cached)."""
    names: set[str] = set()
    models = project_dir / "models"
    for pattern in ("*.sql", "*.py"):
        names.update(p.stem for p in models.rglob(pattern))
    return names


def _check_dbt(spec: PipelineSpec) -> list[str]:
    """The dbt selection against the project's cached manifest, with dbt's selector semantics.

    Without a cached manifest (``make dbt-manifest`` was never run and no build ran yet) only the feature
    table is checked, by file name; the selection is then checked by ``dbt_build``, which fails naming a
    selector that matches nothing.
    """
    from airflow_retrain.dbt.manifest import ManifestError, load_index
    from airflow_retrain.dbt.selection import SelectionError, Selector

    project = spec.path(spec.dbt.project_dir)
    if not (project / "dbt_project.yml").is_file():
        return [f"dbt.project_dir: no dbt_project.yml in {project}"]
    try:
        index = load_index(project, allow_stale=True)
    except ManifestError:
        index = None
    problems = []
    feature = spec.dataset.feature_table.split(".")[-1]
    if index is None:
        if feature not in dbt_model_names(project):
            problems.append(f"dataset.feature_table: unknown dbt model {spec.dataset.feature_table!r} in {project}")
        return problems
    selector = Selector(index)
    for field_name, items in (("select", spec.dbt.select), ("exclude", spec.dbt.exclude)):
        for i, item in enumerate(items):
            for token in item.split():
                try:
                    matched = selector.match(token) if not token.startswith("selector:") else selector.yaml_selector(token[9:])
                except SelectionError as e:
                    problems.append(f"dbt.{field_name}[{i}]: {e}")
                    continue
                if not matched:
                    problems.append(f"dbt.{field_name}[{i}]: dbt selector {token!r} matches no node of {project}")
    if spec.dbt.selector:
        try:
            selector.yaml_selector(spec.dbt.selector)
        except SelectionError as e:
            problems.append(f"dbt.selector: {e}")
    if not problems:
        try:
            chosen = selector.select(spec.dbt.select, spec.dbt.exclude, spec.dbt.selector)
        except SelectionError as e:
            problems.append(f"dbt.select: {e}")
            chosen = set()
        models = {n["name"] for u, n in index.nodes.items() if n["resource_type"] == "model"}
        if feature not in models:
            problems.append(f"dataset.feature_table: unknown dbt model {spec.dataset.feature_table!r} in {project}")
        elif chosen and not any(index.nodes[u]["name"] == feature for u in chosen):
            problems.append(f"dataset.feature_table: {feature!r} is not in the dbt selection, so it would not be built")
    if isinstance(spec.schedule, AssetSchedule):
        models = {n["name"] for n in index.nodes.values() if n["resource_type"] == "model"}
        for i, name in enumerate(spec.schedule.assets):
            if name not in models:
                problems.append(f"schedule.assets[{i}]: unknown dbt model {name!r} in {project}")
    return problems


def _check_training(spec: PipelineSpec) -> list[str]:
    """Backend settings, instance type, price and budget: everything knowable before a job starts."""
    from airflow_retrain.cost import UnknownPriceError, max_job_cost

    training, res = spec.training, spec.training.resources
    problems: list[str] = []
    region = None
    if training.backend == "sagemaker":
        from airflow_retrain.training.sagemaker_catalog import (
            UnknownImageError,
            training_instance_types,
            xgboost_image_uri,
        )

        sm = training.sagemaker
        if sm is None:
            return ["training.sagemaker: required with backend 'sagemaker' (role_arn, bucket, ...)"]
        region = sm.region
        if sm.image is None:
            try:
                xgboost_image_uri(sm.region, sm.framework_version)
            except UnknownImageError as e:
                problems.append(f"training.sagemaker.image: not set and {e}; name an image")
        if res.instance_type not in training_instance_types():
            problems.append(
                f"training.resources.instance_type: {res.instance_type!r} is not a SageMaker training "
                f"instance type (botocore's SageMaker model lists e.g. ml.m5.xlarge, ml.g5.xlarge)"
            )
            return problems
        if res.gpu == "required" and (problem := _sagemaker_gpu_problem(res.instance_type)):
            problems.append(problem)
    elif training.sagemaker is not None:
        problems.append(f"training.sagemaker: set, but training.backend is {training.backend!r}")
    instance_type, instance_count = res.instance_type, res.instance_count
    if training.backend == "vertex":
        from airflow_retrain.training.vertex_catalog import machine_problems, price_key

        vx = training.vertex
        if vx is None:
            return ["training.vertex: required with backend 'vertex' (region, staging_bucket, machine_type, ...)"]
        region = vx.region
        problems += machine_problems(vx.machine_type, vx.accelerator_type, vx.accelerator_count, "training.vertex")
        if problems:
            return problems
        if res.gpu == "required" and not vx.accelerator_type:  # A2/A3/G2 without one failed machine_problems
            problems.append(
                f"training.resources.gpu: 'required', but training.vertex.machine_type {vx.machine_type} has no GPU "
                "and training.vertex.accelerator_type is not set; attach one (e.g. NVIDIA_TESLA_T4) or set gpu: auto"
            )
        # one replica with all its GPUs is the priced instance: 4 x T4 costs (and counts) four T4s
        instance_type = price_key(vx.machine_type, vx.accelerator_type, vx.accelerator_count)
        instance_count = vx.replica_count
    elif training.vertex is not None:
        problems.append(f"training.vertex: set, but training.backend is {training.backend!r}")
    if training.spot and training.backend == "local":
        problems.append("training.spot: the local backend has no spot capacity; use sagemaker or vertex")
    spot = (
        training.spot
        or bool(training.sagemaker and training.sagemaker.spot)
        or bool(training.vertex and training.vertex.spot)
    )
    try:
        worst = max_job_cost(
            training.backend,
            instance_type,
            instance_count,
            res.max_runtime_seconds,
            res.hourly_price_usd,
            region=region,
            spot=spot,
        )
    except UnknownPriceError as e:
        field = "training.vertex.machine_type" if training.backend == "vertex" else "training.resources.instance_type"
        problems.append(f"{field}: {e}")
        return problems
    if training.max_cost_usd is not None and worst.usd > training.max_cost_usd:
        problems.append(
            f"training.max_cost_usd: a job may cost up to ${worst.usd:.2f} ({instance_count} x "
            f"{instance_type} at ${worst.hourly_price_usd}/h for max_runtime_seconds "
            f"{res.max_runtime_seconds}), above the budget of ${training.max_cost_usd:.2f}"
        )
    return problems


def _sagemaker_gpu_problem(instance_type: str) -> str | None:
    """``gpu: required`` on a SageMaker instance type without a GPU (by the catalog's GPU counts)."""
    from airflow_retrain.training.sagemaker_catalog import gpus_per_instance

    if gpus_per_instance(instance_type) == 0:  # None: a GPU family whose count the catalog lacks
        return (
            f"training.resources.gpu: 'required', but training.resources.instance_type {instance_type} has no "
            "GPU; choose a GPU instance type (e.g. ml.g5.xlarge) or set gpu: auto"
        )
    return None


def dbt_contract_columns(project_dir: Path, model: str) -> dict[str, str | None] | None:
    """Column -> ``data_type`` of a dbt model, read from its YAML (never by running dbt); ``None`` when
    the model has no YAML entry with columns."""
    models = project_dir / "models"
    if not models.is_dir():
        return None
    for path in sorted([*models.rglob("*.yml"), *models.rglob("*.yaml")]):
        try:
            text = path.read_text()
        except OSError:
            continue
        if model not in text:  # parse only the files that can describe the model (parse time matters)
            continue
        try:
            doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except yaml.YAMLError:
            continue
        for entry in doc.get("models") or []:
            if isinstance(entry, dict) and entry.get("name") == model and entry.get("columns"):
                return {c["name"]: c.get("data_type") for c in entry["columns"] if isinstance(c, dict) and "name" in c}
    return None


_METRICS_LINE = re.compile(r"^METRICS\s*(?::[^=]*)?=", re.MULTILINE)


def declared_metrics(entry_point: Path) -> list[str] | None:
    """The metric names a training script declares in a module-level ``METRICS = [...]`` literal (read
    with :mod:`ast`, never imported); ``None`` when it declares none."""
    import ast

    try:
        text = entry_point.read_text()
    except (OSError, ValueError):
        return None
    match = _METRICS_LINE.search(text)
    if match is None:
        return None
    # Parse just the statement (the whole script costs tens of ms at DAG-parse time): grow it line by
    # line until it is complete.
    lines = text[match.start() :].splitlines()
    for end in range(1, min(len(lines), 200) + 1):
        try:
            node = ast.parse("\n".join(lines[:end])).body[0]
        except SyntaxError:
            continue
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, AttributeError):
            return None
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        return None
    return None


def _check_gates(spec: PipelineSpec) -> list[str]:
    """Gate fields checked against the dbt contract and the training script's declared metrics."""
    from airflow_retrain.gates.model import SCORABLE_METRICS

    problems = []
    gates = spec.gates
    contract = dbt_contract_columns(spec.path(spec.dbt.project_dir), spec.dataset.feature_table.split(".")[-1])
    if gates.data.schema_.match_contract and not contract:
        problems.append(
            f"gates.data.schema.match_contract: dbt model {spec.dataset.feature_table!r} declares no columns "
            "in its YAML; declare them (a contract) or set match_contract: false"
        )
    if contract:
        columns = set(contract)
        named = [(f"gates.data.max_null_rate.columns.{c}", c) for c in gates.data.max_null_rate.columns]
        if gates.data.drift and gates.data.drift.columns:
            named += [(f"gates.data.drift.columns[{i}]", c) for i, c in enumerate(gates.data.drift.columns)]
        if gates.slices:
            named += [(f"gates.slices.columns[{i}]", c) for i, c in enumerate(gates.slices.columns)]
        for field_name, column in named:
            if column not in columns:
                problems.append(
                    f"{field_name}: unknown column {column!r} (not in the dbt contract of {spec.dataset.feature_table})"
                )
    if gates.slices:
        for i, column in enumerate(gates.slices.columns):
            if column in (spec.dataset.target_column, spec.dataset.id_column):
                problems.append(f"gates.slices.columns[{i}]: {column!r} is the label or id column, not a feature")
    declared = declared_metrics(spec.path(spec.training.entry_point))
    metric_fields = [(f"gates.metrics.{m}", m) for m in gates.metrics]
    metric_fields.append(("registry.primary_metric", spec.registry.primary_metric))
    rescored = [("gates.champion.metric", spec.champion_metric)]
    if gates.slices:
        rescored.append(("gates.slices.metric", gates.slices.metric or spec.registry.primary_metric))
    if declared is not None:
        for field_name, metric in [*metric_fields, *rescored]:
            if metric not in declared:
                problems.append(
                    f"{field_name}: metric {metric!r} is never produced by {spec.training.entry_point} "
                    f"(it declares METRICS = {declared})"
                )
    for field_name, metric in rescored:
        if metric not in SCORABLE_METRICS:
            problems.append(
                f"{field_name}: metric {metric!r} cannot be re-scored by the model gates; "
                f"known: {', '.join(SCORABLE_METRICS)}"
            )
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not "last one wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)  # resolve `<<` merge keys first: overriding a merged key is allowed
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"unhashable key {key!r}", key_node.start_mark
                ) from None
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r} (first at line {first})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(path: Path) -> Any:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise SpecError(path, [f"cannot read: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise SpecError(path, [f"<file>: not UTF-8 text (byte {e.start})"]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(path, [f"not valid YAML{where}: {getattr(e, 'problem', None) or e}"]) from None
    except RecursionError:
        raise SpecError(path, ["not valid YAML: nested too deeply"]) from None


def _check_inside_project(spec: PipelineSpec, field: str, relative: str) -> str | None:
    """The problem with a spec path that is absolute or resolves (after symlinks) outside the root."""
    root = Path(spec.root).resolve()
    if Path(relative).is_absolute():
        return f"{field}: {relative!r} is an absolute path; give a path relative to the project root {root}"
    resolved = spec.path(relative)
    if not resolved.is_relative_to(root):
        return f"{field}: {relative!r} resolves to {resolved}, outside the project root {root}"
    return None


def _nul_bytes(node: Any, path: str = "") -> list[str]:
    """Fields whose text holds a NUL byte: Postgres (Airflow's metadata DB) cannot store one anywhere."""
    found = []
    if isinstance(node, str):
        if "\x00" in node:
            found.append(f"{path or '<top level>'}: contains a NUL byte")
    elif isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{_loc_part(key)}" if path else _loc_part(key)
            if isinstance(key, str) and "\x00" in key:
                found.append(f"{where}: the key contains a NUL byte")
            found += _nul_bytes(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _nul_bytes(value, f"{path}.{i}")
    return found


def load_spec(path: Path | str) -> PipelineSpec:
    """Load and validate one spec file; raise :class:`SpecError` naming the file and fields."""
    path = Path(path)
    raw = _parse_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(path, ["<top level>: expected a mapping of fields"])
    if bad := [k for k in raw if not isinstance(k, str)]:
        raise SpecError(path, [f"<top level>: field names must be text, got {bad[0]!r}"])
    if nul := _nul_bytes(raw):
        raise SpecError(path, nul)
    root = project_root_for(path)
    try:
        spec = PipelineSpec.model_validate({**raw, "source_path": str(path.resolve()), "root": str(root)})
    except ValidationError as e:
        raise SpecError(path, _format_validation_error(e)) from None
    outside = [
        problem
        for field, relative in (
            ("dbt.project_dir", spec.dbt.project_dir),
            ("dbt.profiles_dir", spec.dbt.profiles_dir),
            ("training.entry_point", spec.training.entry_point),
        )
        if relative is not None
        if (problem := _check_inside_project(spec, field, relative))
    ]
    if outside:
        raise SpecError(path, outside)
    problems = _check_dbt(spec) + _check_training(spec)
    entry = spec.path(spec.training.entry_point)
    if not entry.is_file():
        problems.append(f"training.entry_point: no such file {entry}")
    elif not problems:
        problems += _check_gates(spec)
    if problems:
        raise SpecError(path, problems)
    return spec


def spec_files(directory: Path | str) -> list[Path]:
    """The spec files of a folder: ``*.yaml``/``*.yml`` in any letter case, hidden (editor) files aside."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )


@dataclass(frozen=True)
class LoadedSpecs:
    specs: list[PipelineSpec]
    errors: dict[str, SpecError]


def load_specs(directory: Path | str) -> LoadedSpecs:
    """Load every ``*.yaml``/``*.yml`` spec in a folder; a broken file is reported, never fatal."""
    specs: list[PipelineSpec] = []
    errors: dict[str, SpecError] = {}
    seen: dict[str, str] = {}
    # A registered model belongs to one spec: two would move one champion alias from two DAGs (and two
    # rollback DAGs). Keyed by the MLflow connection too: one name on two registries is two models.
    models: dict[tuple[str, str], str] = {}
    for path in spec_files(directory):
        try:
            spec = load_spec(path)
        except SpecError as e:
            errors[str(path)] = e
            continue
        except Exception as e:  # noqa: BLE001 - one file's surprise must not hide the other pipelines
            errors[str(path)] = SpecError(path, [f"<file>: could not be validated: {type(e).__name__}: {e}"])
            continue
        if spec.name in seen:
            errors[str(path)] = SpecError(path, [f"name: {spec.name!r} is already used by {seen[spec.name]}"])
            continue
        model = (spec.registry.connection_id, spec.registry.model_name)
        if model in models:
            errors[str(path)] = SpecError(
                path,
                [
                    f"registry.model_name: {spec.registry.model_name!r} (connection {model[0]!r}) is already the "
                    f"registered model of {models[model]}; a registered model belongs to one pipeline, so that two "
                    "DAGs never move one champion -- give this pipeline its own model_name"
                ],
            )
            continue
        seen[spec.name] = str(path)
        models[model] = str(path)
        specs.append(spec)
    return LoadedSpecs(specs, errors)
