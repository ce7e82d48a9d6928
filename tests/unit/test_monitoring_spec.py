"""The spec's optional ``monitoring:`` block (issue 18): validated on load, each error naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airflow_retrain.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[2]
CHURN = ROOT / "include" / "pipelines" / "churn.yaml"


def churn(**monitoring) -> dict:
    data = yaml.safe_load(CHURN.read_text())
    data["monitoring"] = {**data["monitoring"], **monitoring}
    return data


def load(tmp_path: Path, data: dict):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def rejected(tmp_path: Path, data: dict, field: str, message: str) -> str:
    with pytest.raises(SpecError) as e:
        load(tmp_path, data)
    text = str(e.value)
    assert f"{field}:" in text or f"{field}." in text, text
    assert message in text, text
    return text


def test_a_spec_without_monitoring_behaves_as_before(tmp_path):
    data = yaml.safe_load(CHURN.read_text())
    del data["monitoring"]
    spec = load(tmp_path, data)
    assert spec.monitoring is None


def test_the_churn_spec_monitors_its_scoring_model(tmp_path):
    spec = load(tmp_path, churn())
    assert spec.monitoring.scoring_model == "churn_scoring"
    assert spec.score_dag_id == "score_churn"
    assert spec.monitoring.labels.table == "raw.churn_outcomes"


def test_unknown_scoring_model_is_named(tmp_path):
    text = rejected(tmp_path, churn(scoring_model="churn_nowhere"), "monitoring.scoring_model",
                    "unknown dbt model 'churn_nowhere'")
    assert str(tmp_path) in text  # the error names the spec file


@pytest.mark.slow
def test_scoring_model_missing_the_champions_columns_names_them(tmp_path, dbt_manifest):
    """Columns come from the cached manifest (dbt_build or `make dbt-manifest` caches it)."""
    text = rejected(tmp_path, churn(scoring_model="stg_telco_customers"), "monitoring.scoring_model", "lacks column(s)")
    assert "contract_one_year" in text and "internet_dsl" in text and "churned" not in text.split("lacks")[1]


@pytest.mark.parametrize(
    ("monitoring", "field", "message"),
    [
        ({"schedule": "every day"}, "monitoring.schedule", "not a cron expression"),
        ({"cooldown_hours": -1}, "monitoring.cooldown_hours", "greater than or equal to 0"),
        ({"thresholds": {"psi_max": None, "ks_max": None}}, "monitoring.thresholds", "psi_max and/or ks_max"),
        ({"thresholds": {"drifted_share": 1.5}}, "monitoring.thresholds.drifted_share", "less than 1"),
        ({"thresholds": {"min_rows": 0}}, "monitoring.thresholds.min_rows", "greater than or equal to 1"),
        ({"thresholds": {"metric_drop_max": float("nan")}}, "monitoring.thresholds.metric_drop_max", "finite"),
        ({"labels": {"event_time_column": "t"}}, "monitoring.labels", "exactly one of model"),
        ({"labels": {"model": "churn_features", "table": "raw.x", "event_time_column": "t"}}, "monitoring.labels",
         "exactly one of model"),
        ({"labels": {"table": "raw.x; drop table y", "event_time_column": "t"}}, "monitoring.labels.table",
         "is not a table name"),
        ({"scoring_model": "marts.churn_scoring"}, "monitoring.scoring_model", "give the dbt model's name"),
        ({"surprise": 1}, "monitoring.surprise", "unknown field"),
    ],
)
def test_bad_monitoring_fields_are_named(tmp_path, monitoring, field, message):
    text = rejected(tmp_path, churn(**monitoring), field, message)
    assert str(tmp_path) in text  # the error names the spec file


@pytest.mark.slow
def test_label_model_with_wrong_types_is_named(tmp_path, dbt_manifest):
    # churn_features has customer_id (varchar) and churned (integer) but no event-time column, and its
    # customer_id is not a timestamp.
    labels = {"model": "churn_features", "event_time_column": "customer_id"}
    rejected(tmp_path, churn(labels=labels), "monitoring.labels.event_time_column", "expected datetime")
    labels = {"model": "churn_features", "label_column": "customer_id", "event_time_column": "nowhere"}
    text = rejected(tmp_path, churn(labels=labels), "monitoring.labels.label_column", "expected int or float or bool")
    assert "monitoring.labels.event_time_column: column 'nowhere' is not in dbt model" in text
    rejected(tmp_path, churn(labels={"model": "churn_nowhere", "event_time_column": "t"}), "monitoring.labels.model",
             "unknown dbt model")
