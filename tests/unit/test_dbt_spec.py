"""The spec's dbt block: dbt's own selection, cached on a fresh manifest, decides; Asset schedules."""

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


def selected_by_dbt(select=None, exclude=None, selector=None):
    """What dbt_build does after its build: dbt ls on the fresh manifest, cached for the next parse."""
    from airflow_retrain.dbt.manifest import load_index
    from airflow_retrain.dbt.selection import cache_selection

    return cache_selection(ROOT / "dbt", load_index(ROOT / "dbt").fingerprint, select, exclude, selector)


@pytest.mark.parametrize("select", [["churn_*"], ["tag:churn"], ["source:raw+"], ["config.materialized:table"]])
def test_selectors_dbt_accepts_are_accepted(tmp_path, select):
    assert selected_by_dbt(select).problem() is None
    assert load_spec(churn(tmp_path, dbt_select=select)).dbt.select == select


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dbt_select": ["selector:nightly_churn"]}, r"dbt\.select: dbt rejects the selection: .*'selector' is not a valid method"),
        ({"dbt_select": [], "dbt_selector": "nightly"}, r"dbt\.selector: dbt rejects the selection: .*Could not find selector named nightly"),
        ({"dbt_select": ["+churn_featurez"]}, r"dbt\.select\[0\]: dbt selector '\+churn_featurez' matches no node \(checked by dbt ls on manifest .*manifest\.json \(fingerprint [0-9a-f]{20}\)"),
        ({"dbt_select": ["stg_telco_customers"]}, r"dataset\.feature_table: 'churn_features' is not in the dbt selection"),
        ({"dbt_select": ["+churn_features"], "dbt_exclude": ["nope"]}, r"dbt\.exclude\[0\]: dbt selector 'nope' matches no node"),
    ],
)  # fmt: skip
def test_bad_selections_are_refused_once_dbt_confirmed_them_on_a_fresh_manifest(tmp_path, changes, message):
    selected_by_dbt(changes.get("dbt_select") or None, changes.get("dbt_exclude"), changes.get("dbt_selector"))
    with pytest.raises(SpecError, match=message):
        load_spec(churn(tmp_path, **changes))


def test_a_selection_dbt_has_not_checked_yet_is_not_refused(tmp_path):
    """Until dbt_build (or make dbt-manifest) ran dbt ls on a fresh manifest, the spec loads; dbt decides."""
    assert load_spec(churn(tmp_path, dbt_select=["+churn_features", "unchecked_yet"])).dbt.select[1] == "unchecked_yet"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
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
    # the dbt Asset, or the scoring DAG's drift Asset (churn.yaml has a `monitoring:` block)
    from airflow_retrain.monitoring.drift import drift_asset_uri

    assert spec.monitoring is not None
    assert dag.timetable.asset_condition == Asset("x-dbt://retrain/churn_features") | Asset(drift_asset_uri("churn"))
    both = load_spec(churn(tmp_path, schedule={"assets": ["churn_features"], "cron": "0 6 * * 1"}))
    assert isinstance(build_dag(both).timetable, AssetOrTimeSchedule)
    producer = dag.get_task("dbt_build")
    assert [a.uri for a in producer.outlets] == ["x-dbt://retrain/churn_features"]
    assert load_spec(churn(tmp_path)).schedule == "@weekly"  # strings stay strings
