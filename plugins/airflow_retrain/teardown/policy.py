"""TeardownPolicy: what the ``gpu_teardown`` sweep looks at and what it may do, from one YAML file.

Validated like the pipeline specs (pydantic, unknown fields rejected); errors name the file and the
field (``kinds.sagemaker.endpoint.action``). Loaded at DAG-parse time, so this module imports only
pydantic and yaml. Durations are seconds or strings such as ``90s``, ``15m``, ``1h``, ``2d``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from airflow_retrain.config import project_root_for
from airflow_retrain.spec.loader import format_validation_error as _format_validation_error
from airflow_retrain.teardown import KIND_ACTIONS

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """``900``, ``"900"``, ``"15m"``, ``"1.5h"``, ``"2d"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 900, '15m', '1h' or '2d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration such as 900, '15m', '1h' or '2d'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


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


class LocalPolicy(_Strict):
    """The machine the sweep's worker runs on: local-backend jobs and GPU processes."""

    enabled: bool = True
    jobs_dir: str | None = Field(None, description="local backend job records; default <state dir>/jobs")
    gpu_processes: bool = Field(True, description="look for GPU processes with nvidia-smi where present")
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

    enabled: bool = True
    action: str | None = None
    idle_window: Duration | None = None
    max_runtime: Duration | None = None


class TagNames(_Strict):
    """Tag keys the sweep reads and writes (defaults match :meth:`RunIdentity.job_tags`)."""

    scope: str = Field("retrain:pipeline", description="a resource carrying this tag was launched by this package")
    pipeline: str = "retrain:pipeline"
    ttl: str = Field("retrain:expires-at", description="epoch seconds after which the resource may go")
    owner: str = "retrain:owner"
    exempt: str = Field("retrain:keep", description="tag key that exempts a resource from the sweep")
    exempt_values: list[str] = Field(default_factory=lambda: ["true", "yes", "1"])
    planned: str = Field("retrain:teardown-planned", description="the mark: <action>@<epoch seconds>")
    claim: str = Field("retrain:teardown-claim", description="the sweep about to act (two sweeps never both act)")


class TeardownPolicy(_Strict):
    schedule: str | None = Field("*/15 * * * *", description="cron or preset for the gpu_teardown DAG")
    dry_run: bool = Field(False, description="only report: no mark, no unmark, no action")
    scope: Literal["tagged", "all"] = Field(
        "tagged", description="tagged: only resources this package launched; all: untagged ones too"
    )
    idle_window: Duration = Field(3600.0, gt=0, description="no use for this long means idle")
    grace_period: Duration = Field(1800.0, ge=0, description="time between the mark and the action")
    claim_settle_seconds: Duration = Field(1.0, ge=0, description="wait after claiming, before re-checking")
    fail_on_errors: bool = Field(
        True, description="fail the task after the sweep when anything could not be done (it still sweeps all)"
    )
    warehouse_connection_id: str = Field("retrain_warehouse", description="where the cost ledger lives")
    tags: TagNames = Field(default_factory=TagNames)
    aws: list[AwsAccountPolicy] = Field(default_factory=list)
    local: LocalPolicy = Field(default_factory=LocalPolicy)
    kinds: dict[str, KindPolicy] = Field(default_factory=dict)

    source_path: str = Field("", exclude=True)

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
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise PolicyError(path, [f"cannot read: {e.strerror}"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PolicyError(path, [f"not valid YAML{where}: {getattr(e, 'problem', e)}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PolicyError(path, ["<top level>: expected a mapping of fields"])
    try:
        policy = TeardownPolicy.model_validate({**raw, "source_path": str(path.resolve())})
    except ValidationError as e:
        raise PolicyError(path, _format_validation_error(e)) from None
    if policy.local.jobs_dir and not Path(policy.local.jobs_dir).is_absolute():
        root = project_root_for(path)
        policy = policy.model_copy(update={"local": policy.local.model_copy(update={"jobs_dir": str(root / policy.local.jobs_dir)})})
    return policy
