"""The cockpit's Params: ``force`` (retrain though nothing changed since the champion) and ``dbt_select`` (this
run's dbt selection); the skip of an unchanged retrain they override, against a real local job and MLflow."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_retrain.dag_factory import build_dag, trigger_params
from airflow_retrain.operators.dbt import DbtBuildOperator
from airflow_retrain.operators.registry_register import RegisterModelOperator
from airflow_retrain.operators.teardown import PrepareRunOperator
from airflow_retrain.operators.training import TrainModelOperator
from airflow_retrain.registry.inputs import unchanged_since_champion
from airflow_retrain.report import format_report, run_outcome
from airflow_retrain.runs import RunIdentity
from airflow_retrain.spec import load_spec
from airflow_retrain.training.local import LocalTrainingBackend

ROOT = Path(__file__).resolve().parents[2]
CHURN = ROOT / "include" / "pipelines" / "churn.yaml"
CONN = "mlflow_force_unit"
DAG_ID = "unit_force"

# Fits a tiny XGBoost model on the train channel: the real shape of a training job's outputs.
TRAIN = """
import json, os, pathlib
import pandas as pd, xgboost
hps = json.loads(os.environ["SM_HPS"])
df = pd.read_parquet(pathlib.Path(os.environ["SM_CHANNEL_TRAIN"]))
x, y = df.drop(columns=["customer_id", "churned"]), df["churned"]
model = xgboost.XGBClassifier(n_estimators=3, max_depth=int(hps.get("max_depth", 2))).fit(x, y)
model.save_model(pathlib.Path(os.environ["SM_MODEL_DIR"], "model.json"))
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json").write_text(json.dumps({"metrics": {"roc_auc": 0.9}}))
"""


@pytest.fixture(scope="module")
def spec():
    return load_spec(CHURN)


# --- the form's schema, and again at run start ----------------------------------------------------


def test_the_form_offers_force_and_dbt_select_with_safe_defaults(spec):
    dag = build_dag(spec)
    assert {"force", "dbt_select"} <= set(dag.params)
    assert dag.params["force"] is False and dag.params["dbt_select"] is None
    dag.params.validate()  # a scheduled run needs no form
    train, dbt_build = dag.get_task("train"), dag.get_task("dbt_build")
    assert train.skip_unchanged["force_param"] == "force" and train.skip_unchanged["model_name"] == spec.registry.model_name
    assert "data_fingerprint" in train.template_fields  # the export's fingerprint, at run time
    assert dbt_build.select_param == "dbt_select" and dbt_build.select == list(spec.dbt.select)  # not parse time


@pytest.mark.parametrize("value", ["+churn_features tag:nightly", "path:models/marts,config.materialized:table",
                                   "source:raw.telco_customers+", "@stg_customers 1+churn_features+2", "fqn:*"])
def test_the_form_accepts_dbt_selector_syntax(spec, value):
    from airflow.sdk import Param

    assert Param(value, **trigger_params(spec)["dbt_select"].schema).resolve() == value  # raises when refused


@pytest.mark.parametrize("value", ["--profiles-dir /etc", "churn_features --vars {x:1}", "a;rm -rf /", "",
                                   "$(id)", "x" * 501, 3])
def test_the_form_refuses_a_bad_dbt_selection(spec, value):
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        Param(value, **trigger_params(spec)["dbt_select"].schema).resolve()


@pytest.mark.parametrize(("name", "value", "message"), [
    ("dbt_select", "--target prod", r"^Param 'dbt_select': '--target prod' does not match "),
    ("dbt_select", "x" * 501, r"^Param 'dbt_select': 'x+' is too long"),
    ("force", "yes", r"^Param 'force': 'yes' is not of type 'boolean'"),
])
def test_run_start_refuses_a_bad_value_naming_the_param(spec, make_context, tmp_path, name, value, message):
    schemas = {k: p.schema for k, p in trigger_params(spec).items()}
    op = PrepareRunOperator(task_id="prepare_run", pipeline="churn", param_schemas=schemas,
                            artifact_root=tmp_path.as_uri())
    ctx = make_context("churn_retrain", "r1")
    ctx["params"] = {"hyperparameters": {}, "dry_run": False, "reason": None, "force": False, "dbt_select": None,
                     name: value}
    with pytest.raises(AirflowFailException, match=message):
        op.execute(ctx)


# --- skip an unchanged retrain; force, changed data, no champion train ----------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A SQLite MLflow registry behind an Airflow connection, for the module (each test its own runs)."""
    tmp = tmp_path_factory.mktemp("registry")
    extra = {"artifact_root": (tmp / "artifacts").as_uri()}
    conn = json.dumps({"conn_type": "mlflow", "host": f"sqlite:///{tmp / 'mlflow.db'}", "extra": extra})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{CONN.upper()}", conn)
        from mlflow import MlflowClient

        yield MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", registry_uri=f"sqlite:///{tmp / 'mlflow.db'}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> dict[str, Path]:
    """The training code's folder (only the script) and the exported train/test channels."""
    import numpy as np
    import pandas as pd

    base = tmp_path_factory.mktemp("force")
    code = base / "code"
    code.mkdir()
    (code / "train.py").write_text(textwrap.dedent(TRAIN))
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"tenure": rng.integers(0, 70, 200), "charges": rng.normal(60, 20, 200)})
    frame = x.assign(customer_id=[f"C{i}" for i in range(200)], churned=(x["tenure"] < 12).astype(int))
    for channel in ("train", "test"):
        (base / channel).mkdir()
        frame.to_parquet(base / channel / "part-0.parquet")
    return {"base": base, "code": code}


def train_op(workdir, model_name, data="fp-1", **kwargs) -> TrainModelOperator:
    return TrainModelOperator(
        task_id="train", pipeline="churn", entry_point=str(workdir["code"] / "train.py"),
        channels={"train": str(workdir["base"] / "train")}, hyperparameters={"max_depth": 2},
        backend_config={"jobs_dir": str(workdir["base"] / "jobs")}, poll_interval=0.1,
        artifact_root=(workdir["base"] / "store").as_uri(), hyperparameters_param="hyperparameters",
        data_fingerprint=data, skip_unchanged={"model_name": model_name, "mlflow_conn_id": CONN, "force_param": "force",
                                               "config": {"holdout_fraction": 0.2}},
        **kwargs,
    )


class _TI:
    def __init__(self):
        self.try_number, self.xcoms = 1, {}

    def xcom_push(self, key, value):
        self.xcoms[key] = value


class _Named:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def context(run_id: str, params: dict | None = None) -> dict:
    """A task context as the operators read it (the module-scoped champion cannot use ``make_context``)."""
    return {"dag": _Named(dag_id=DAG_ID), "run_id": run_id, "task": _Named(owner="tests"), "ti": _TI(),
            "params": {"hyperparameters": {}, "force": False, **(params or {})}}


def run_train(workdir, model_name, run_id, params=None, **kwargs) -> dict:
    return train_op(workdir, model_name, **kwargs).execute(context(run_id, params))


def jobs_of(workdir, run_id) -> list:
    run = RunIdentity(pipeline="churn", dag_id=DAG_ID, run_id=run_id, owner="tests")
    return LocalTrainingBackend(jobs_dir=workdir["base"] / "jobs").find_jobs(run.run_tags())


def decision(model_name: str, inputs: dict) -> tuple[str | None, str]:
    from airflow_retrain.hooks.mlflow import MlflowHook

    return unchanged_since_champion(MlflowHook(CONN), model_name, inputs, "force")


@pytest.fixture(scope="module")
def champion(registry, workdir):
    """``churn_force@champion`` = v1, trained by a real local job on fp-1 and registered by ``register``."""
    name = "churn_force"
    trained = run_train(workdir, name, "manual__champion")
    base = workdir["base"]
    dataset = {"relation": "features", "channels": {c: (base / c).as_uri() for c in ("train", "test")},
               "rows": {"train": 200, "test": 200}, "id_column": "customer_id", "target_column": "churned",
               "fingerprint": "fp-1"}
    version = RegisterModelOperator(task_id="register", pipeline="churn", model_name=name, training=trained,
                                    dataset=dataset, experiment="retrain/force", mlflow_conn_id=CONN,
                                    ).execute(context("manual__champion"))
    registry.set_registered_model_alias(name, "champion", version["version"])
    return {"name": name, "version": version["version"], "inputs": trained["inputs"]}


@pytest.mark.slow
def test_register_records_the_training_inputs_on_the_version(registry, champion):
    tags = registry.get_model_version(champion["name"], champion["version"]).tags
    inputs = champion["inputs"]
    assert tags["retrain.inputs.fingerprint"] == inputs["fingerprint"]
    assert tags["retrain.data.fingerprint"] == inputs["data"] == "fp-1"
    assert {tags[f"retrain.inputs.{p}"] for p in ("code", "hyperparameters", "config")} == {
        inputs["code"], inputs["hyperparameters"], inputs["config"]}


@pytest.mark.slow
def test_unchanged_inputs_skip_training_with_the_reason(workdir, champion):
    ctx = context("manual__same")
    with pytest.raises(AirflowSkipException) as skip:
        train_op(workdir, champion["name"]).execute(ctx)
    reason = str(skip.value)
    assert re.fullmatch(
        rf"inputs unchanged since champion v{champion['version']} \(data fingerprint fp-1, code \w+, "
        r"hyperparameters \w+, config \w+\): nothing to train; trigger with force=true to retrain anyway", reason)
    assert ctx["ti"].xcoms == {"skip_reason": reason}  # for the run report
    assert jobs_of(workdir, "manual__same") == []  # no job submitted
    # the reason reaches the run's outcome (run note, dashboard) and its report
    report = {"params": {}, "task_states": {"train": "skipped", "register": "skipped", "promote": "skipped",
                                            "teardown": "success"}, "stages": {}, "skipped": {"train": reason}}
    assert run_outcome(report) == f"skipped training: {reason}"
    assert f"training       skipped: {reason}" in format_report(report)


@pytest.mark.slow
def test_force_trains_on_unchanged_inputs(workdir, champion):
    result = run_train(workdir, champion["name"], "manual__forced", params={"force": True})
    assert result["state"] == "Completed" and len(jobs_of(workdir, "manual__forced")) == 1
    assert result["inputs"] == champion["inputs"]  # recorded again on the version it registers


@pytest.mark.slow
@pytest.mark.parametrize(("change", "what"), [
    ({"data": "fp-2"}, "data"),
    ({"params": {"hyperparameters": {"max_depth": 3}}}, "hyperparameters"),
])
def test_changed_inputs_train(workdir, champion, change, what):
    run_id = f"manual__changed_{what}"
    result = run_train(workdir, champion["name"], run_id, **change)
    assert result["state"] == "Completed" and len(jobs_of(workdir, run_id)) == 1
    assert decision(champion["name"], result["inputs"]) == (
        None, f"{what} changed since champion v{champion['version']}: training")


@pytest.mark.slow
def test_changed_code_or_config_is_named(champion, workdir, tmp_path):
    from airflow_retrain.registry.inputs import training_inputs

    code = tmp_path / "code"
    shutil.copytree(workdir["code"], code)
    (code / "features.py").write_text("BINS = 3\n")  # a helper module beside the script ships with it
    inputs = training_inputs(data="fp-1", entry_point=code / "train.py", hyperparameters={}, config={})
    assert decision(champion["name"], inputs) == (
        None, f"code, hyperparameters, config changed since champion v{champion['version']}: training")


@pytest.mark.slow
def test_no_champion_always_trains(registry, workdir):
    result = run_train(workdir, "churn_no_champion", "manual__first")
    assert result["state"] == "Completed" and len(jobs_of(workdir, "manual__first")) == 1
    assert decision("churn_no_champion", result["inputs"]) == (None, "churn_no_champion has no champion yet: training")


# --- dbt_select reaches dbt_build -------------------------------------------------------------------


@pytest.fixture
def shop(shop_project, tmp_path) -> Path:
    project = tmp_path / "shop"
    shutil.copytree(shop_project, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    return project


def dbt_op(project) -> DbtBuildOperator:
    return DbtBuildOperator(task_id="dbt_build", pipeline="unit", project_dir=str(project), warehouse_conn_id=None,
                            select=["customers+"], select_param="dbt_select")


@pytest.mark.slow
def test_dbt_select_overrides_the_spec_selection_at_run_time(shop, make_context):
    ctx = make_context(run_id="manual__override")
    ctx["params"] = {"dbt_select": "+stg_customers"}
    summary = dbt_op(shop).execute(ctx)
    assert (summary["seeds_loaded"], summary["models_built"]) == (1, 1)  # not the spec's customers+
    assert set(summary["relations"]) == {"raw_customers", "stg_customers"}


@pytest.mark.slow
@pytest.mark.parametrize("selection", ["no_such_model", "stg_customers,stg_orders"])
def test_a_dbt_select_matching_nothing_fails_naming_the_param(shop, make_context, selection):
    ctx = make_context(run_id="manual__empty")
    ctx["params"] = {"dbt_select": selection}
    with pytest.raises(AirflowFailException, match=rf"^Param 'dbt_select' = '{selection}' selects no dbt node: "):
        dbt_op(shop).execute(ctx)
