"""The spec's optional ``monitoring:`` block: score with the champion, watch drift and realised performance.

Pure pydantic (like :mod:`.training`); :mod:`.checks` checks the block against the dbt project (the
scoring model's and the label source's columns) and :mod:`airflow_retrain.monitoring` runs it. A spec
without the block behaves as before: no ``score_<name>`` DAG, and the retrain DAG runs on its schedule only.
"""

from __future__ import annotations

import re

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from airflow_retrain.spec.fields import FiniteFloat, StrictModel, unsafe_text, validate_schedule


def _model_name(value: str) -> str:
    if not value.strip():
        raise ValueError("empty model name")
    if "." in value or '"' in value:
        raise ValueError(f"{value!r}: give the dbt model's name; its database and schema come from dbt")
    if reason := unsafe_text(value):
        raise ValueError(reason)
    return value


_RELATION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")


class LabelSourceSpec(StrictModel):
    """Outcomes by id, for realised performance once they arrive: a dbt model (built by the scoring DAG)
    or a warehouse table (``schema.table``) that another process fills; until it exists or holds outcomes
    for scored ids, no realised metric is recorded (and the run says so)."""

    model: str | None = Field(None, description="dbt model holding one outcome per id")
    table: str | None = Field(None, description="warehouse table (schema.table) holding one outcome per id")
    id_column: str | None = Field(None, description="default: dataset.id_column")
    label_column: str | None = Field(None, description="the 0/1 outcome; default: dataset.target_column")
    event_time_column: str = Field(description="when the outcome was observed (a timestamp or date column)")

    @field_validator("model")
    @classmethod
    def _dbt_model(cls, value: str | None) -> str | None:
        return None if value is None else _model_name(value)

    @field_validator("table")
    @classmethod
    def _relation(cls, value: str | None) -> str | None:
        if value is not None and not _RELATION_RE.match(value):
            raise ValueError(f"{value!r} is not a table name (letters, digits, _; schema.table)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> LabelSourceSpec:
        if (self.model is None) == (self.table is None):
            raise ValueError("give exactly one of model (a dbt model) or table (schema.table)")
        return self

    @field_validator("id_column", "label_column", "event_time_column")
    @classmethod
    def _column_text(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.strip():
                raise ValueError("empty column name")
            if reason := unsafe_text(value):
                raise ValueError(reason)
        return value


class MonitoringThresholds(StrictModel):
    """When the data has moved enough to retrain. Drift is measured against the champion's training snapshot."""

    psi_max: FiniteFloat | None = Field(0.2, gt=0.0, description="largest PSI of a feature")
    ks_max: FiniteFloat | None = Field(
        None, gt=0.0, le=1.0, description="largest Kolmogorov-Smirnov statistic D of a numeric feature"
    )
    drifted_share: FiniteFloat = Field(
        0.0, ge=0.0, lt=1.0,
        description="retrain when more than this share of the features drift; 0: any drifted feature",
    )
    prediction_psi_max: FiniteFloat | None = Field(
        0.2, gt=0.0, description="largest PSI of the scores against the champion's holdout scores"
    )
    metric_drop_max: FiniteFloat | None = Field(
        None, ge=0.0, description="largest drop of the realised primary metric below the champion's holdout value"
    )
    min_rows: StrictInt = Field(100, ge=1, description="fewer scored rows (or labelled rows) decide nothing")
    min_labelled_rows: StrictInt = Field(100, ge=1, description="fewest labelled rows for a realised metric")

    @model_validator(mode="after")
    def _has_feature_bound(self) -> MonitoringThresholds:
        if self.psi_max is None and self.ks_max is None:
            raise ValueError("feature drift needs psi_max and/or ks_max")
        return self


class MonitoringSpec(StrictModel):
    """``monitoring:``: the ``score_<name>`` DAG and when drift triggers the retrain DAG."""

    scoring_model: str = Field(description="dbt model of the population to score: the feature table's features + id")
    schedule: str = Field("@daily", description="schedule of score_<name>")
    labels: LabelSourceSpec | None = None
    thresholds: MonitoringThresholds = Field(default_factory=MonitoringThresholds)
    cooldown_hours: FiniteFloat = Field(
        24.0, ge=0.0, le=24 * 90, description="after a drift-triggered retrain, wait this long before the next"
    )
    trigger_retrain: StrictBool = Field(True, description="false: record drift only, never trigger the retrain DAG")

    @field_validator("scoring_model")
    @classmethod
    def _dbt_model(cls, value: str) -> str:
        return _model_name(value)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if value is None or not str(value).strip():
            raise ValueError("a schedule is required (a cron expression or a preset such as @daily)")
        return validate_schedule(value)
