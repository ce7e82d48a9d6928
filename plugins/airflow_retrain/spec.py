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

from airflow_retrain.artifacts import root_problems
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

    @field_validator("target", "project_dir")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.strip() or value.lstrip().startswith("-"):
                raise ValueError(f"{value!r} is not a usable name")
            if reason := _unsafe_text(value):
                raise ValueError(reason)
        return value


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
    instance_count: StrictInt = Field(1, ge=1)
    max_runtime_seconds: StrictInt = Field(3600, ge=60, le=7 * 24 * 3600)
    gpu: Literal["auto", "required", "none"] = "auto"
    hourly_price_usd: FiniteFloat | None = Field(
        None, ge=0, description="override the price table, e.g. an internal chargeback rate"
    )


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
        if value is not None and (problems := root_problems(value)):
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


class GatesSpec(_Strict):
    metrics: dict[str, Threshold] = Field(min_length=1, description="metric name -> bounds, all must hold")


class RegistrySpec(_Strict):
    model_name: str = Field(min_length=1)
    primary_metric: str
    greater_is_better: StrictBool = True
    min_improvement: FiniteFloat = Field(0.0, ge=0.0, description="how much the candidate must beat the champion by")
    flavor: Literal["xgboost"] = Field("xgboost", description="MLflow flavor the model is logged with")
    experiment: str | None = Field(None, description="MLflow experiment; default: retrain/<pipeline name>")
    connection_id: str = Field("mlflow_default", pattern=_AIRFLOW_ID_RE)


class PipelineSpec(_Strict):
    name: str = Field(pattern=_NAME_RE, description="pipeline name; the DAG id is <name>_retrain")
    description: str = ""
    owner: str = Field("airflow", min_length=1, max_length=250, description="Airflow owner of every task")
    schedule: str | None = "@weekly"
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
    artifacts: ArtifactsSpec = Field(default_factory=ArtifactsSpec)

    # Set by the loader, not by the YAML.
    source_path: str = Field("", exclude=True)
    root: str = Field("", exclude=True)

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
    def _valid_schedule(cls, value: str | None) -> str | None:
        if value is None:
            return None
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
        for field, relative in (("dbt.project_dir", spec.dbt.project_dir), ("training.entry_point", spec.training.entry_point))
        if (problem := _check_inside_project(spec, field, relative))
    ]
    if outside:
        raise SpecError(path, outside)
    problems = _check_dbt(spec)
    entry = spec.path(spec.training.entry_point)
    if not entry.is_file():
        problems.append(f"training.entry_point: no such file {entry}")
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
        seen[spec.name] = str(path)
        specs.append(spec)
    return LoadedSpecs(specs, errors)
