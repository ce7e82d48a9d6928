"""PipelineSpec: one validated YAML file per model under ``include/pipelines/``.

The spec is the only place a pipeline is configured. It is loaded at DAG-parse time, so its models import
only pydantic (and pendulum/croniter when a schedule or time zone is checked). This module holds the pure
models and their validators; :mod:`.loader` reads the YAML and :mod:`.checks` checks a valid spec against
the dbt project, the cloud catalogs and the training script.

Paths in a spec (``dbt.project_dir``, ``training.entry_point``) are relative to the project root
(:func:`airflow_retrain.config.project_root_for`).
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from airflow_retrain.config import EMBEDDED_WAREHOUSE_POOL
from airflow_retrain.spec.fields import (
    AIRFLOW_ID_RE,
    NAME_RE,
    TAG_MAX_LENGTH,
    FiniteFloat,
    StrictModel,
    artifact_root_problems,
    unsafe_text,
    validate_schedule,
)
from airflow_retrain.spec.monitoring import MonitoringSpec
from airflow_retrain.spec.training import TrainingSpec


class SpecError(ValueError):
    """A pipeline spec that cannot be used; the message names the file and the field."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"invalid pipeline spec {self.path}: " + "; ".join(problems))



class DbtSpec(StrictModel):
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
            if reason := unsafe_text(selector):
                raise ValueError(f"item {i} {reason}")
        return value

    @field_validator("target", "project_dir", "selector", "profiles_dir")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.strip() or value.lstrip().startswith("-"):
                raise ValueError(f"{value!r} is not a usable name")
            if reason := unsafe_text(value):
                raise ValueError(reason)
        return value


class AssetSchedule(StrictModel):
    """Data-aware schedule: run when the listed dbt models' Assets are updated (and/or on a cron)."""

    assets: list[str] = Field(default_factory=list, description="dbt model names; default: dataset.feature_table")
    cron: str | None = Field(None, description="also run on this cron (AssetOrTimeSchedule)")


class DatasetSpec(StrictModel):
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
        if reason := unsafe_text(value):
            raise ValueError(reason)
        return value

    @model_validator(mode="after")
    def _target_is_not_the_id(self) -> DatasetSpec:
        if self.target_column == self.id_column:
            raise ValueError(
                f"target_column and id_column are both {self.target_column!r}: the label cannot be the example id"
            )
        return self



class ArtifactsSpec(StrictModel):
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


class Threshold(StrictModel):
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


class RateBand(StrictModel):
    min: FiniteFloat | None = Field(None, ge=0.0, le=1.0)
    max: FiniteFloat | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> RateBand:
        if self.min is None and self.max is None:
            raise ValueError("a rate band needs min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class NullRateSpec(StrictModel):
    """Null rates: absolute limits only where the spec states them; by default a rise over the champion's
    training snapshot (a first run, with no champion, has no null-rate limit unless one is stated)."""

    default: FiniteFloat | None = Field(
        None, ge=0.0, le=1.0, description="largest null rate of any column; default: no absolute limit"
    )
    columns: dict[str, FiniteFloat] = Field(default_factory=dict, description="column -> largest null rate")
    max_increase: FiniteFloat | None = Field(
        0.05, ge=0.0, le=1.0,
        description="largest rise of a column's null rate over the champion's training snapshot (0.05 = 5 points)",
    )  # fmt: skip

    @field_validator("columns")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for column, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"null rate of {column!r} must be within [0, 1], got {rate}")
        return value


class DriftSpec(StrictModel):
    psi_max: FiniteFloat | None = Field(0.2, gt=0.0, description="largest PSI of a feature vs the champion's snapshot")
    ks_max: FiniteFloat | None = Field(
        None, gt=0.0, le=1.0, description="largest Kolmogorov-Smirnov statistic D (not a p-value) of a numeric feature"
    )
    on_missing_snapshot: Literal["pass", "fail"] = Field(
        description="no champion snapshot yet (first run): pass or fail; required, so the first run is explicit"
    )
    columns: list[str] | None = Field(None, description="features to check; default: every feature")
    on_drift_trigger: Literal["warn", "fail"] = Field(
        "warn", description="a retrain the drift monitor requested: warn (drift over the bound is recorded, the "
        "gate passes: the data moved, which is why it retrains) or fail (held to the bound like any run)",
    )

    @model_validator(mode="after")
    def _has_bound(self) -> DriftSpec:
        if self.psi_max is None and self.ks_max is None:
            raise ValueError("a drift gate needs psi_max and/or ks_max")
        return self


class SchemaGateSpec(StrictModel):
    match_contract: StrictBool = Field(
        True, description="columns and types match the feature model's enforced dbt contract (skipped without one)"
    )
    match_previous: StrictBool = Field(True, description="columns and types match the last passed run's")
    match_champion: StrictBool = Field(True, description="columns and types match the champion's training snapshot")


class DataGateSpec(StrictModel):
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


class ChampionGateSpec(StrictModel):
    """``gates.champion``: the champion re-scored on the candidate's holdout."""

    metric: str | None = Field(None, description="default: registry.primary_metric")
    min_improvement: FiniteFloat | None = Field(None, ge=0.0, description="default: registry.min_improvement")
    greater_is_better: StrictBool | None = Field(None, description="default: registry's for the primary metric")


class SliceGateSpec(StrictModel):
    """``gates.slices``: per-slice metrics, candidate vs champion on the same holdout rows."""

    columns: list[str] = Field(min_length=1, description="feature columns to slice the holdout by")
    metric: str | None = Field(None, description="default: registry.primary_metric")
    max_regression: FiniteFloat = Field(0.02, ge=0.0, description="largest allowed drop of a slice's metric")
    min_rows: StrictInt = Field(30, ge=1, description="smaller slices are recorded as skipped")


class EfficiencyGateSpec(StrictModel):
    """``gates.efficiency``: the candidate's size and batch scoring latency."""

    max_model_mb: FiniteFloat | None = Field(None, gt=0.0)
    max_latency_ms: FiniteFloat | None = Field(None, gt=0.0, description="median time to score `rows` rows in one batch")
    rows: StrictInt = Field(1000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _has_bound(self) -> EfficiencyGateSpec:
        if self.max_model_mb is None and self.max_latency_ms is None:
            raise ValueError("an efficiency gate needs max_model_mb and/or max_latency_ms")
        return self


class GatesSpec(StrictModel):
    metrics: dict[str, Threshold] = Field(min_length=1, description="metric name -> bounds, all must hold")
    data: DataGateSpec = Field(default_factory=DataGateSpec)
    champion: ChampionGateSpec = Field(default_factory=ChampionGateSpec)
    slices: SliceGateSpec | None = None
    efficiency: EfficiencyGateSpec | None = None


class ApprovalSpec(StrictModel):
    """A human approves each promotion in the Airflow UI (Airflow's ApprovalOperator) before it happens."""

    required: StrictBool = False
    timeout_minutes: StrictInt = Field(
        24 * 60, ge=1, le=30 * 24 * 60, description="no answer within this counts as a rejection"
    )


class SageMakerMirrorSpec(StrictModel):
    model_package_group: str = Field(
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", description="SageMaker model package group name"
    )
    connection_id: str = Field("aws_default", description="Airflow AWS connection")
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")


class MirrorSpec(StrictModel):
    sagemaker: SageMakerMirrorSpec | None = None


class LeaseSpec(StrictModel):
    """The promotion lease in the registry (shared by every pipeline and deployment using the model)."""

    wait_seconds: FiniteFloat = Field(300.0, ge=0, le=3600, description="wait this long for another run's promotion")
    settle_seconds: FiniteFloat = Field(0.5, ge=0.05, le=30, description="verify-after-write pause")


class RegistrySpec(StrictModel):
    model_name: str = Field(min_length=1, max_length=256, description="MLflow registered model; one per pipeline")
    primary_metric: str
    greater_is_better: StrictBool = True
    min_improvement: FiniteFloat = Field(0.0, ge=0.0, description="how much the candidate must beat the champion by")
    flavor: Literal["xgboost"] = Field("xgboost", description="MLflow flavor the model is logged with")
    experiment: str | None = Field(None, description="MLflow experiment; default: retrain/<pipeline name>")
    connection_id: str = Field("mlflow_default", pattern=AIRFLOW_ID_RE)
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


class BudgetSpec(StrictModel):
    """Spending limits; crossing one warns in the run's teardown log (it never stops a run)."""

    weekly_usd: FiniteFloat = Field(gt=0, description="training spend per ISO week (Monday 00:00 UTC), from the cost ledger")


NOTIFY_EVENTS = ("failure", "promotion", "kept", "gate_failure", "budget_exceeded")


class EmailNotifySpec(StrictModel):
    """E-mail through Airflow's SMTP provider (``SmtpNotifier``); server and credentials from the connection."""

    to: list[str] = Field(min_length=1, description="recipients")
    connection_id: str = Field("smtp_default", min_length=1, description="an smtp connection (host, port, login, password)")
    from_email: str | None = Field(None, description="sender; default: the connection's from_email extra")

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if "@" not in a or a.strip() != a]
        if bad:
            raise ValueError(f"not an e-mail address: {', '.join(bad)}")
        return value


class SlackNotifySpec(StrictModel):
    """A Slack message through Airflow's Slack provider (``SlackNotifier``); the token lives in the connection."""

    channel: str = Field(min_length=2, description="e.g. #ml-oncall")
    connection_id: str = Field("slack_api_default", min_length=1, description="a slack connection (its password: the bot token)")


class NotifySpec(StrictModel):
    """Who hears about a run's outcome, and for which outcomes (default: all of them)."""

    on: list[Literal["failure", "promotion", "kept", "gate_failure", "budget_exceeded"]] = Field(
        default_factory=lambda: list(NOTIFY_EVENTS), min_length=1, description="outcomes that send a message")
    email: EmailNotifySpec | None = None
    slack: SlackNotifySpec | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> NotifySpec:
        if self.email is None and self.slack is None:
            raise ValueError("notify needs `email` or `slack` (or both)")
        return self


class PipelineSpec(StrictModel):
    name: str = Field(pattern=NAME_RE, description="pipeline name; the DAG id is <name>_retrain")
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
        pattern=AIRFLOW_ID_RE,
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
    notify: NotifySpec | None = None
    artifacts: ArtifactsSpec = Field(default_factory=ArtifactsSpec)
    monitoring: MonitoringSpec | None = Field(None, description="score with the champion, retrain on drift")

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
    def score_dag_id(self) -> str:
        """The scoring DAG of ``monitoring:`` (see :mod:`airflow_retrain.monitoring.dag`)."""
        return f"score_{self.name}"

    @property
    def pool(self) -> str | None:
        """The pool of the warehouse tasks (dbt, export), resolved from ``warehouse_pool``."""
        if self.warehouse_pool != "auto":
            return self.warehouse_pool
        return EMBEDDED_WAREHOUSE_POOL if self.warehouse_connection_id == "retrain_warehouse" else None

    @field_validator("warehouse_pool")
    @classmethod
    def _pool_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(AIRFLOW_ID_RE, value):
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

