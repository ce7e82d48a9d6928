"""TeardownPolicy: what the ``gpu_teardown`` sweep looks at and what it may do, from one YAML file.

Validated like the pipeline specs, with the spec's own validators (:mod:`airflow_retrain.spec`): unknown
fields and duplicate keys rejected, strict numbers and booleans (``true`` is not 1, ``"yes"`` is not
true), finite numbers only, and the schedule checked as the DAG will use it (a preset, or a 5-field cron
that fires). Errors name the file and the field (``kinds.sagemaker.endpoint.action``). Loaded at DAG-parse
time, so this module imports only pydantic and yaml (through the spec's reader). Durations are seconds or strings such as ``90s``,
``15m``, ``1h``, ``2d``, each bounded (:data:`MAX_DURATION_SECONDS`, :data:`MAX_CLAIM_SETTLE_SECONDS`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from airflow_retrain.config import project_root_for
from airflow_retrain.spec.fields import FiniteFloat, validate_schedule
from airflow_retrain.spec.loader import _nul_bytes, _parse_yaml
from airflow_retrain.spec.loader import format_validation_error as _format_validation_error
from airflow_retrain.spec.models import SpecError
from airflow_retrain.teardown import KIND_ACTIONS

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
#: The longest idle window, grace period or max runtime a policy may give (a year): anything longer is a
#: typo (``.inf``, ``90000d``) that would silently switch the sweep off.
MAX_DURATION_SECONDS = 365 * 86400.0
#: The sweep waits ``claim_settle_seconds`` once per sweep, inside the task's 14-minute execution timeout.
MAX_CLAIM_SETTLE_SECONDS = 60.0


def parse_duration(value: Any) -> float:
    """``900``, ``"900"``, ``"15m"``, ``"1.5h"``, ``"2d"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 900, '15m', '1h' or '2d'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            raise ValueError(f"{str(value)[:20]}... seconds is not a finite duration") from None
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration such as 900, '15m', '1h' or '2d'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _at_most(limit: float, text: str) -> AfterValidator:
    def check(seconds: float) -> float:
        if seconds > limit:
            raise ValueError(f"{seconds:.0f} s is longer than the limit of {text}")
        return seconds

    return AfterValidator(check)


# Parsed to seconds first, then held to the spec's rule for numbers (finite: ``.inf``/``.nan`` refused)
# and to a bound, so no typo switches the sweep off.
Duration = Annotated[FiniteFloat, BeforeValidator(parse_duration), _at_most(MAX_DURATION_SECONDS, "365d")]
SettleDuration = Annotated[
    FiniteFloat, BeforeValidator(parse_duration), _at_most(MAX_CLAIM_SETTLE_SECONDS, "60s")
]


class PolicyError(ValueError):
    """A teardown policy that cannot be used; the message names the file and the field."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"invalid teardown policy {self.path}: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AwsAccountPolicy(_Strict):
    """One AWS account: an Airflow AWS connection and the regions to sweep with it."""

    connection_id: str = Field(min_length=1, description="Airflow connection of type aws")
    regions: list[str] = Field(min_length=1)


#: Google Cloud project ids (6-30 characters: lowercase letters, digits, hyphens; starts with a letter).
GcpProject = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
#: Vertex AI locations such as ``us-central1``, ``europe-west4``.
GcpRegion = Annotated[str, Field(pattern=r"^[a-z]+(-[a-z]+)+[0-9]+$")]


class GcpProjectPolicy(_Strict):
    """Google Cloud projects swept with one Airflow Google Cloud connection, in the given Vertex AI regions.

    :param projects: default: the connection's own project.
    """

    connection_id: str = Field(min_length=1, description="Airflow connection of type google_cloud_platform")
    projects: list[GcpProject] | None = Field(None, min_length=1)
    regions: list[GcpRegion] = Field(min_length=1)

    @field_validator("projects", "regions")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("lists a value twice (each would be swept twice)")
        return value


class LocalPolicy(_Strict):
    """The machine the sweep's worker runs on: local-backend jobs and GPU processes."""

    enabled: StrictBool = True
    jobs_dir: str | None = Field(None, description="local backend job records; default <state dir>/jobs")
    gpu_processes: StrictBool = Field(True, description="look for GPU processes with nvidia-smi where present")
    retention: Duration = Field(
        7 * 86400.0,
        description="an ended local job's folder (record, logs, scratch) is removed this long after it ended",
    )


class KindPolicy(_Strict):
    """What to do with one resource kind.

    :param action: see :data:`airflow_retrain.teardown.KIND_ACTIONS` for the kind's choices.
    :param idle_window: overrides the policy's idle window for this kind.
    :param max_runtime: jobs only: a job running longer than this is a finding even before its TTL
        (default: the job's own maximum runtime).
    """

    enabled: StrictBool = True
    action: str | None = None
    idle_window: Duration | None = Field(None, gt=0)
    max_runtime: Duration | None = Field(None, gt=0)


TagKey = Annotated[str, Field(min_length=1, max_length=128)]


class TagNames(_Strict):
    """Tag keys the sweep reads and writes (defaults match :meth:`RunIdentity.job_tags`).

    ``exempt: null`` says explicitly that nothing is exempt; otherwise ``exempt_values`` must name at
    least one value (an empty list would silently exempt nothing). Values match case-insensitively.
    """

    scope: TagKey = Field("retrain:pipeline", description="a resource carrying this tag was launched by this package")
    pipeline: TagKey = "retrain:pipeline"
    ttl: TagKey = Field("retrain:expires-at", description="epoch seconds after which the resource may go")
    owner: TagKey = "retrain:owner"
    exempt: TagKey | None = Field(
        "retrain:keep", description="tag key that exempts a resource from the sweep; null: nothing is exempt"
    )
    exempt_values: list[str] = Field(default_factory=lambda: ["true", "yes", "1"], min_length=1)
    planned: TagKey = Field("retrain:teardown-planned", description="the mark: <action>@<epoch seconds>")
    claim: TagKey = Field("retrain:teardown-claim", description="the sweep about to act (two sweeps never both act)")

    @field_validator("exempt_values")
    @classmethod
    def _comparable_values(cls, value: list[str]) -> list[str]:
        # is_exempt() compares the stripped, lower-cased tag value: a value that is not already in that
        # form ("True ", "") could never match.
        if any(not v.strip() for v in value):
            raise ValueError("an exemption value cannot be empty (to exempt nothing, set tags.exempt: null)")
        return [v.strip().lower() for v in value]


class TeardownPolicy(_Strict):
    schedule: str | None = Field(
        "*/15 * * * *", description="cron or preset for the gpu_teardown DAG; null: only when triggered"
    )
    dry_run: StrictBool = Field(False, description="only report: no mark, no unmark, no action")
    scope: Literal["tagged", "all"] = Field(
        "tagged", description="tagged: only resources this package launched; all: untagged ones too"
    )
    idle_window: Duration = Field(3600.0, gt=0, description="no use for this long means idle")
    grace_period: Duration = Field(1800.0, ge=0, description="time between the mark and the action")
    claim_settle_seconds: SettleDuration = Field(1.0, ge=0, description="wait after claiming, before re-checking")
    fail_on_errors: StrictBool = Field(
        True, description="fail the task after the sweep when anything could not be done (it still sweeps all)"
    )
    warehouse_connection_id: str = Field("retrain_warehouse", description="where the cost ledger lives")
    tags: TagNames = Field(default_factory=TagNames)
    aws: list[AwsAccountPolicy] = Field(default_factory=list)
    gcp: list[GcpProjectPolicy] = Field(default_factory=list)
    local: LocalPolicy = Field(default_factory=LocalPolicy)
    kinds: dict[str, KindPolicy] = Field(default_factory=dict)

    source_path: str = Field("", exclude=True)

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        # The spec's check: what Airflow's timetable would refuse at parse time, and crons that never fire.
        return None if value is None else validate_schedule(value)

    @model_validator(mode="after")
    def _known_kinds_and_actions(self) -> TeardownPolicy:
        problems = []
        for kind, kind_policy in self.kinds.items():
            if kind not in KIND_ACTIONS:
                problems.append(f"kinds.{kind}: unknown resource kind; known: {', '.join(KIND_ACTIONS)}")
            elif kind_policy.action is not None and kind_policy.action not in KIND_ACTIONS[kind]:
                problems.append(
                    f"kinds.{kind}.action: {kind_policy.action!r} is not an action for {kind}; "
                    f"choose one of {', '.join(KIND_ACTIONS[kind])}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def kind(self, kind: str) -> KindPolicy:
        return self.kinds.get(kind) or KindPolicy()

    def action_for(self, kind: str) -> str:
        return self.kind(kind).action or KIND_ACTIONS[kind][0]

    def idle_window_for(self, kind: str) -> float:
        return self.kind(kind).idle_window or self.idle_window

    def enabled(self, kind: str) -> bool:
        return self.kind(kind).enabled

    def is_exempt(self, tags: dict[str, str]) -> bool:
        if self.tags.exempt is None:
            return False
        value = tags.get(self.tags.exempt)
        return value is not None and value.strip().lower() in self.tags.exempt_values

    def in_scope(self, tags: dict[str, str]) -> bool:
        return self.scope == "all" or self.tags.scope in tags


def default_policy_path() -> Path:
    """``RETRAIN_TEARDOWN_POLICY`` when set, else ``<project root>/include/teardown/policy.yaml``."""
    if env := os.environ.get("RETRAIN_TEARDOWN_POLICY"):
        return Path(env)
    root = Path(os.environ.get("RETRAIN_HOME", Path(__file__).resolve().parents[3]))
    return root / "include" / "teardown" / "policy.yaml"


def load_policy(path: Path | str | None = None) -> TeardownPolicy:
    """Load and validate the policy; raise :class:`PolicyError` naming the file and fields."""
    path = Path(path) if path is not None else default_policy_path()
    try:
        raw = _parse_yaml(path)  # the spec's reader: UTF-8, duplicate keys refused, line numbers
    except SpecError as e:
        raise PolicyError(path, e.problems) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PolicyError(path, ["<top level>: expected a mapping of fields"])
    if nul := _nul_bytes(raw):
        raise PolicyError(path, nul)
    try:
        policy = TeardownPolicy.model_validate({**raw, "source_path": str(path.resolve())})
    except ValidationError as e:
        raise PolicyError(path, _format_validation_error(e)) from None
    if policy.local.jobs_dir and not Path(policy.local.jobs_dir).is_absolute():
        root = project_root_for(path)
        policy = policy.model_copy(update={"local": policy.local.model_copy(update={"jobs_dir": str(root / policy.local.jobs_dir)})})
    return policy
