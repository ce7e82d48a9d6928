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


class RateBand(_Strict):
    min: float | None = Field(None, ge=0.0, le=1.0)
    max: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> RateBand:
        if self.min is None and self.max is None:
            raise ValueError("a rate band needs min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class NullRateSpec(_Strict):
    default: float = Field(0.05, ge=0.0, le=1.0, description="largest null rate of any column")
    columns: dict[str, float] = Field(default_factory=dict, description="column -> largest null rate")

    @field_validator("columns")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for column, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"null rate of {column!r} must be within [0, 1], got {rate}")
        return value


class DriftSpec(_Strict):
    psi_max: float | None = Field(0.2, gt=0.0, description="largest PSI of a feature vs the champion's snapshot")
    ks_max: float | None = Field(
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
    match_contract: bool = Field(True, description="columns and types match the feature model's dbt contract")
    match_previous: bool = Field(True, description="columns and types match the last passed run's")


class DataGateSpec(_Strict):
    """``gates.data``: checks on the exported dataset, before training."""

    schema_: SchemaGateSpec = Field(default_factory=SchemaGateSpec, alias="schema")
    min_rows: int | None = Field(None, ge=1, description="fewest rows; default: dataset.min_rows")
    max_row_change: float | None = Field(
        None, gt=0.0, description="largest relative row-count change vs the last passed run (0.2 = 20 %)"
    )
    max_null_rate: NullRateSpec = Field(default_factory=NullRateSpec)
    label_rate: RateBand | None = None
    drift: DriftSpec | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ChampionGateSpec(_Strict):
    """``gates.champion``: the champion re-scored on the candidate's holdout."""

    metric: str | None = Field(None, description="default: registry.primary_metric")
    min_improvement: float | None = Field(None, ge=0.0, description="default: registry.min_improvement")
    greater_is_better: bool | None = Field(None, description="default: registry's for the primary metric")


class SliceGateSpec(_Strict):
    """``gates.slices``: per-slice metrics, candidate vs champion on the same holdout rows."""

    columns: list[str] = Field(min_length=1, description="feature columns to slice the holdout by")
    metric: str | None = Field(None, description="default: registry.primary_metric")
    max_regression: float = Field(0.02, ge=0.0, description="largest allowed drop of a slice's metric")
    min_rows: int = Field(30, ge=1, description="smaller slices are recorded as skipped")


class EfficiencyGateSpec(_Strict):
    """``gates.efficiency``: the candidate's size and batch scoring latency."""

    max_model_mb: float | None = Field(None, gt=0.0)
    max_latency_ms: float | None = Field(None, gt=0.0, description="median time to score `rows` rows in one batch")
    rows: int = Field(1000, ge=1, le=1_000_000)

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


class RegistrySpec(_Strict):
    model_name: str = Field(min_length=1)
    primary_metric: str
    greater_is_better: bool = True
    min_improvement: float = Field(0.0, ge=0.0, description="how much the candidate must beat the champion by")
    flavor: Literal["xgboost"] = Field("xgboost", description="MLflow flavor the model is logged with")
    experiment: str | None = Field(None, description="MLflow experiment; default: retrain/<pipeline name>")
    connection_id: str = "mlflow_default"


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
    elif not problems:
        problems += _check_gates(spec)
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
