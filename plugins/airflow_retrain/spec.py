"""PipelineSpec: one validated YAML file per model under ``include/pipelines/``.

The spec is the only place a pipeline is configured. It is loaded at DAG-parse time, so this module
imports only pydantic and yaml. Validation errors name the file and the field (``training.backend``),
and a broken spec never stops the other specs from loading (:func:`load_specs` returns errors per file).

Paths in a spec (``dbt.project_dir``, ``training.entry_point``) are relative to the project root: the
environment variable ``RETRAIN_HOME`` when set, otherwise the folder that holds ``include/``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airflow_retrain.training import BACKEND_NAMES

_NAME_RE = r"^[a-z][a-z0-9_]{0,62}$"


class SpecError(ValueError):
    """A pipeline spec that cannot be used; the message names the file and the field."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"invalid pipeline spec {self.path}: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DbtSpec(_Strict):
    """Which part of the dbt project the pipeline builds before training."""

    project_dir: str = Field("dbt", description="dbt project folder, relative to the project root")
    select: list[str] = Field(min_length=1, description="dbt node selection, as for `dbt build --select`")
    exclude: list[str] = Field(default_factory=list)
    target: str | None = Field(
        None, description="profile target; default: the connection's type, else the profile's default"
    )


class DatasetSpec(_Strict):
    """How the feature mart becomes a run-scoped training dataset."""

    feature_table: str = Field(description="dbt model that holds one row per example, e.g. churn_features")
    target_column: str
    id_column: str
    holdout_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    min_rows: int = Field(100, ge=1)


class ResourcesSpec(_Strict):
    instance_type: str = "local"
    instance_count: int = Field(1, ge=1)
    max_runtime_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)
    gpu: Literal["auto", "required", "none"] = "auto"
    hourly_price_usd: float | None = Field(
        None, ge=0, description="override the price table, e.g. an internal chargeback rate"
    )


class TrainingSpec(_Strict):
    backend: str = "local"
    entry_point: str = Field(description="training script, relative to the project root")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    hyperparameters: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKEND_NAMES:
            raise ValueError(f"unknown training backend {value!r}; known: {', '.join(BACKEND_NAMES)}")
        return value


class Threshold(_Strict):
    min: float | None = None
    max: float | None = None

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


class GatesSpec(_Strict):
    metrics: dict[str, Threshold] = Field(min_length=1, description="metric name -> bounds, all must hold")


class ApprovalSpec(_Strict):
    """A human approves each promotion in the Airflow UI (Airflow's ApprovalOperator) before it happens."""

    required: bool = False
    timeout_minutes: int = Field(
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

    wait_seconds: float = Field(300.0, ge=0, le=3600, description="wait this long for another run's promotion")
    settle_seconds: float = Field(0.5, ge=0.05, le=30, description="verify-after-write pause")


class RegistrySpec(_Strict):
    model_name: str = Field(min_length=1)
    primary_metric: str
    greater_is_better: bool = True
    min_improvement: float = Field(0.0, ge=0.0, description="how much the candidate must beat the champion by")
    flavor: Literal["xgboost"] = Field("xgboost", description="MLflow flavor the model is logged with")
    experiment: str | None = Field(None, description="MLflow experiment; default: retrain/<pipeline name>")
    connection_id: str = "mlflow_default"
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
        return value


class PipelineSpec(_Strict):
    name: str = Field(pattern=_NAME_RE, description="pipeline name; the DAG id is <name>_retrain")
    description: str = ""
    owner: str = "airflow"
    schedule: str | None = "@weekly"
    start_date: datetime = datetime(2026, 1, 1)
    catchup: bool = False
    retries: int = Field(1, ge=0, le=10)
    tags: list[str] = Field(default_factory=list)
    warehouse_connection_id: str = Field(
        "retrain_warehouse",
        description="Airflow connection (duckdb or postgres) for dbt and the export; while the default "
        "connection is not defined, the embedded DuckDB warehouse under the state dir is used",
    )
    dbt: DbtSpec
    dataset: DatasetSpec
    training: TrainingSpec
    gates: GatesSpec
    registry: RegistrySpec

    # Set by the loader, not by the YAML.
    source_path: str = Field("", exclude=True)
    root: str = Field("", exclude=True)

    @property
    def dag_id(self) -> str:
        return f"{self.name}_retrain"

    @model_validator(mode="after")
    def _primary_metric_is_gated(self) -> PipelineSpec:
        if self.registry.primary_metric not in self.gates.metrics:
            raise ValueError(
                f"registry.primary_metric {self.registry.primary_metric!r} must also appear in "
                f"gates.metrics (a champion is never chosen on an ungated metric)"
            )
        return self

    def path(self, relative: str) -> Path:
        """Resolve a spec-relative path against the project root."""
        return (Path(self.root) / relative).resolve()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def project_root_for(spec_path: Path) -> Path:
    if env := os.environ.get("RETRAIN_HOME"):
        return Path(env).resolve()
    spec_path = spec_path.resolve()
    for parent in spec_path.parents:
        if parent.name == "include":
            return parent.parent
    return spec_path.parent


def state_dir(root: Path | str | None = None) -> Path:
    """Where runs keep scratch data, local jobs and the embedded warehouse/registry."""
    if env := os.environ.get("RETRAIN_STATE_DIR"):
        return Path(env).resolve()
    base = Path(root) if root else Path(os.environ.get("RETRAIN_HOME", Path.cwd()))
    return (base / ".local").resolve()


def _format_validation_error(err: ValidationError) -> list[str]:
    problems = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "<top level>"
        msg = item["msg"]
        if item["type"] == "missing":
            msg = "required field is missing"
        elif item["type"] == "extra_forbidden":
            msg = "unknown field"
        elif item["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        problems.append(f"{field}: {msg}")
    return problems


_GRAPH_OPS = re.compile(r"^(\d*\+)?(?P<name>[^+@]+?)(\+\d*)?$")


def dbt_model_names(project_dir: Path) -> set[str]:
    """Model names of a dbt project, read from its files (never by running dbt at parse time)."""
    names: set[str] = set()
    models = project_dir / "models"
    for pattern in ("*.sql", "*.py"):
        names.update(p.stem for p in models.rglob(pattern))
    return names


def _check_dbt(spec: PipelineSpec) -> list[str]:
    project = spec.path(spec.dbt.project_dir)
    if not (project / "dbt_project.yml").is_file():
        return [f"dbt.project_dir: no dbt_project.yml in {project}"]
    models = dbt_model_names(project)
    problems = []
    for i, selector in enumerate(spec.dbt.select):
        for part in selector.replace(",", " ").split():
            if ":" in part:  # method selectors (tag:, path:, source:) are dbt's to resolve
                continue
            m = _GRAPH_OPS.match(part.lstrip("@"))
            name = m.group("name") if m else part
            if name not in models:
                problems.append(f"dbt.select[{i}]: unknown dbt model {name!r} in {project}")
    if spec.dataset.feature_table.split(".")[-1] not in models:
        problems.append(f"dataset.feature_table: unknown dbt model {spec.dataset.feature_table!r} in {project}")
    return problems


def load_spec(path: Path | str) -> PipelineSpec:
    """Load and validate one spec file; raise :class:`SpecError` naming the file and fields."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SpecError(path, [f"cannot read: {e.strerror}"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(path, [f"not valid YAML{where}: {getattr(e, 'problem', e)}"]) from None
    if not isinstance(raw, dict):
        raise SpecError(path, ["<top level>: expected a mapping of fields"])
    root = project_root_for(path)
    try:
        spec = PipelineSpec.model_validate({**raw, "source_path": str(path.resolve()), "root": str(root)})
    except ValidationError as e:
        raise SpecError(path, _format_validation_error(e)) from None
    problems = _check_dbt(spec)
    entry = spec.path(spec.training.entry_point)
    if not entry.is_file():
        problems.append(f"training.entry_point: no such file {entry}")
    if problems:
        raise SpecError(path, problems)
    return spec


@dataclass(frozen=True)
class LoadedSpecs:
    specs: list[PipelineSpec]
    errors: dict[str, SpecError]


def load_specs(directory: Path | str) -> LoadedSpecs:
    """Load every ``*.yaml``/``*.yml`` spec in a folder; a broken file is reported, never fatal."""
    specs: list[PipelineSpec] = []
    errors: dict[str, SpecError] = {}
    seen: dict[str, str] = {}
    for path in sorted(Path(directory).glob("*.y*ml")):
        try:
            spec = load_spec(path)
        except SpecError as e:
            errors[str(path)] = e
            continue
        if spec.name in seen:
            errors[str(path)] = SpecError(path, [f"name: {spec.name!r} is already used by {seen[spec.name]}"])
            continue
        seen[spec.name] = str(path)
        specs.append(spec)
    return LoadedSpecs(specs, errors)
