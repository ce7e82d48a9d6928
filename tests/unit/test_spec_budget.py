"""The spec's optional weekly budget, and the teardown task that receives it from the DAG factory."""

from __future__ import annotations

import pytest
import yaml

from airflow_retrain.dag_factory import build_dag
from airflow_retrain.spec import SpecError, load_spec


def churn_with(root, tmp_path, **extra):
    data = yaml.safe_load((root / "include" / "pipelines" / "churn.yaml").read_text())
    data.update(extra)
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_budget_is_optional_and_reaches_the_teardown_task(root, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_HOME", str(root))
    assert load_spec(churn_with(root, tmp_path)).budget is None
    spec = load_spec(churn_with(root, tmp_path, budget={"weekly_usd": 25}))
    assert spec.budget.weekly_usd == 25
    teardown = build_dag(spec).get_task("teardown")
    assert teardown.weekly_budget_usd == 25
    assert teardown.warehouse_conn_id == spec.warehouse_connection_id


@pytest.mark.parametrize(
    ("budget", "message"),
    [({"weekly_usd": 0}, "budget.weekly_usd: Input should be greater than 0"),
     ({"weekly": 5}, "budget.weekly: unknown field"),
     ({"weekly_usd": "lots"}, "budget.weekly_usd: Input should be a valid number")],
)
def test_bad_budget_names_the_field(root, tmp_path, budget, message):
    with pytest.raises(SpecError, match=message):
        load_spec(churn_with(root, tmp_path, budget=budget))
