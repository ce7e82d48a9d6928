"""The spec's dbt block: selection with dbt's semantics against the cached manifest; Asset schedules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airflow_retrain.spec import AssetSchedule, SpecError, load_spec

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("dbt_manifest")


def churn(tmp_path, **changes) -> Path:
    data = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())
    for key, value in changes.items():
        if key.startswith("dbt_"):
            data["dbt"][key[4:]] = value
        else:
            data[key] = value
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "select",
    [["marts.churn_features"], ["churn_*"], ["models/marts"], ["retrain"], ["tag:churn"], ["+churn_features"],
     ["stg_telco_customers+"], ["source:raw+"], ["config.materialized:table"], ["@stg_telco_customers"]],
)  # fmt: skip
def test_selectors_dbt_accepts_are_accepted(tmp_path, select):
    assert load_spec(churn(tmp_path, dbt_select=select)).dbt.select == select


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dbt_select": ["selector:nightly_churn"]}, r"dbt\.select\[0\]: selector:nightly_churn: no such YAML selector"),
        ({"dbt_select": [], "dbt_selector": "nightly"}, r"dbt\.selector: selector:nightly: no such YAML selector"),
        ({"dbt_select": ["+churn_featurez"]}, r"dbt\.select\[0\]: dbt selector '\+churn_featurez' matches no node"),
        ({"dbt_select": ["state:modified"]}, r"needs dbt's run state"),
        ({"dbt_select": ["stg_telco_customers"]}, r"dataset\.feature_table: 'churn_features' is not in the dbt selection"),
        ({"dbt_select": ["+churn_features"], "dbt_exclude": ["nope"]}, r"dbt\.exclude\[0\]: dbt selector 'nope' matches no node"),
        ({"dbt_select": []}, r"dbt: dbt\.select or dbt\.selector is required"),
        ({"schedule": {"assets": ["no_such_mart"]}}, r"schedule\.assets\[0\]: unknown dbt model 'no_such_mart'"),
    ],
)
def test_bad_dbt_blocks_name_the_field(tmp_path, changes, message):
    with pytest.raises(SpecError, match=message):
        load_spec(churn(tmp_path, **changes))


def test_asset_schedules(tmp_path):
    from airflow.sdk import Asset, AssetOrTimeSchedule

    from airflow_retrain.dag_factory import build_dag

    spec = load_spec(churn(tmp_path, schedule="asset"))
    assert spec.schedule == AssetSchedule()
    dag = build_dag(spec)
    assert dag.timetable.asset_condition == Asset("x-dbt://retrain/churn_features")
    both = load_spec(churn(tmp_path, schedule={"assets": ["churn_features"], "cron": "0 6 * * 1"}))
    assert isinstance(build_dag(both).timetable, AssetOrTimeSchedule)
    producer = dag.get_task("dbt_build")
    assert [a.uri for a in producer.outlets] == ["x-dbt://retrain/churn_features"]
    assert load_spec(churn(tmp_path)).schedule == "@weekly"  # strings stay strings
