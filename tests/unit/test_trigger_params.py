"""The trigger form's Params on every retraining DAG: typed overrides, dry_run, reason; checked twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain.dag_factory import build_dag, trigger_params
from airflow_retrain.operators.teardown import PrepareRunOperator
from airflow_retrain.operators.training import TrainModelOperator
from airflow_retrain.spec import load_spec

CHURN = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "churn.yaml"


@pytest.fixture(scope="module")
def spec():
    return load_spec(CHURN)


def test_every_retrain_dag_offers_the_params_in_its_trigger_form(spec):
    dag = build_dag(spec)
    assert set(dag.params) == {"hyperparameters", "dry_run", "reason", "force", "dbt_select"}
    schema = dag.params.get_param("hyperparameters").schema
    assert schema["additionalProperties"] is False
    assert schema["properties"]["max_depth"] == {"type": "integer"}
    assert schema["properties"]["learning_rate"] == {"type": "number"}
    assert dag.params.get_param("dry_run").value is False
    dag.params.validate()  # the defaults are valid: a scheduled run needs no form


@pytest.mark.parametrize(("value", "message"), [
    ({"max_depth": 2.5}, "not of type 'integer'"),
    ({"max_dpeth": 3}, "Additional properties are not allowed ('max_dpeth' was unexpected)"),
])
def test_the_form_schema_rejects_a_bad_override(spec, value, message):
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    param = trigger_params(spec)["hyperparameters"]
    with pytest.raises(ParamValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Param(value, **{k: v for k, v in param.schema.items()}).resolve()


def test_run_start_rejects_a_bad_param_by_name(spec, make_context, tmp_path):
    schemas = {k: p.schema for k, p in trigger_params(spec).items()}
    op = PrepareRunOperator(task_id="prepare_run", pipeline="churn", param_schemas=schemas,
                            artifact_root=tmp_path.as_uri())
    ctx = make_context("churn_retrain", "r1")
    ctx["params"] = {"hyperparameters": {"max_depth": "deep"}, "dry_run": False, "reason": ""}
    with pytest.raises(AirflowFailException, match=r"^Param 'hyperparameters'\['max_depth'\]: 'deep' is not of type 'integer'"):
        op.execute(ctx)
    ctx["params"] = {"hyperparameters": {"max_depth": 3}, "dry_run": "yes", "reason": ""}
    with pytest.raises(AirflowFailException, match=r"^Param 'dry_run': 'yes' is not of type 'boolean'"):
        op.execute(ctx)
    ctx["params"] = {"hyperparameters": {"max_depth": 3}, "dry_run": True, "reason": "try"}
    assert op.execute(ctx)["run_key"]


def test_overrides_reach_the_training_job_over_the_spec_values(make_context):
    op = TrainModelOperator(task_id="train", pipeline="churn", entry_point="train.py", channels={},
                            hyperparameters={"max_depth": 4, "seed": 42}, hyperparameters_param="hyperparameters")
    ctx = make_context("churn_retrain", "r1")
    ctx["params"] = {"hyperparameters": {"max_depth": 2}}
    assert {**op.hyperparameters, **op._overrides(ctx)} == {"max_depth": 2, "seed": 42}
