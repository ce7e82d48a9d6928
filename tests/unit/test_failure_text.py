"""A non-gate failure's error text: recorded by the failing task, carried by the run report into the run's
outcome (run note, dashboard), one line, bounded and redacted."""

from __future__ import annotations

import uuid

import pytest
from helpers import stop_running_jobs

from airflow_retrain.failure import ERROR_XCOM_KEY, MAX_ERROR_CHARS, error_text, record_failure
from airflow_retrain.operators.report import RunReportOperator
from airflow_retrain.operators.training import TrainingJobFailed, TrainModelOperator
from airflow_retrain.report import format_report, run_outcome
from airflow_retrain.training.local import LocalTrainingBackend

DAG_ID = "unit_failtext"
STAGES = ["dbt_build", "gate_dbt", "export_dataset", "gate_data", "train", "register", "gate_model", "promote",
          "teardown"]

# The training script of the first test: a data error, as a real script would raise it.
TRAIN = """
import os
rows = ["1.5", "abc"]
values = [float(r) for r in rows]
"""


class RunTI:
    """The slice of a task instance the operators use, keyed by (task, key) as Airflow's XCom is."""

    def __init__(self, states: dict[str, str] | None = None, pushed: dict[tuple[str, str], object] | None = None):
        self.try_number = 1
        self.xcoms: dict[str, object] = {}
        self.states = states or {}
        self.pushed = dict(pushed or {})

    def xcom_push(self, key, value):
        self.xcoms[key] = value

    def xcom_pull(self, task_ids=None, key="return_value", default=None, **_):
        return self.pushed.get((task_ids, key), default)

    def get_task_states(self, dag_id, task_ids, run_ids):
        return {run_ids[0]: {t: s for t, s in self.states.items() if t in task_ids}}


def _fail_through_callbacks(op, context, error: BaseException) -> None:
    """What Airflow's task runner does after the last try failed: each ``on_failure_callback`` with the error."""
    for callback in op.on_failure_callback:
        callback({**context, "exception": error})


def _report(tmp_path, ti: RunTI) -> dict:
    context = {"dag": type("D", (), {"dag_id": DAG_ID})(), "run_id": "manual__1", "task": object(), "ti": ti}
    op = RunReportOperator(task_id="report", pipeline="churn", stage_task_ids=STAGES,
                           artifact_root=(tmp_path / "store").as_uri(), airflow_api_conn_id="retrain_no_such_conn")
    return op.execute(context)


def test_a_training_script_error_is_the_runs_outcome(tmp_path, entry_point, channel, make_context):
    jobs = tmp_path / "jobs"
    train = TrainModelOperator(task_id="train", pipeline="churn", entry_point=entry_point,
                               channels={"train": str(channel)}, backend_config={"jobs_dir": str(jobs)},
                               poll_interval=0.1, artifact_root=(tmp_path / "store").as_uri())
    context = make_context(DAG_ID, "manual__1")
    try:
        with pytest.raises(TrainingJobFailed) as failed:
            train.execute(context)
    finally:
        stop_running_jobs(LocalTrainingBackend(jobs_dir=jobs))
    _fail_through_callbacks(train, context, failed.value)
    recorded = context["ti"].xcoms[ERROR_XCOM_KEY]
    assert recorded.startswith("training job churn-") and "Failed:" in recorded
    assert "could not convert string to float" in recorded and "\n" not in recorded

    ti = RunTI(states={"prepare_run": "success", "dbt_build": "success", "train": "failed",
                       "register": "upstream_failed", "teardown": "success"},
               pushed={("train", ERROR_XCOM_KEY): recorded})
    result = _report(tmp_path, ti)
    assert result["outcome"] == f"failed at train: {recorded} (no candidate; champion unchanged)"
    assert ti.xcoms["run_report"]["errors"] == {"train": recorded}
    assert f"  training       failed: {recorded}" in format_report(ti.xcoms["run_report"]).splitlines()


def test_a_dbt_failure_names_the_model():
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_retrain.hooks.dbt import DbtHook, DbtNodesFailed, DbtRunResult

    node = {"unique_id": "model.shop.stg_orders", "resource_type": "model", "name": "stg_orders", "status": "error",
            "message": "Runtime Error in model stg_orders (models/staging/stg_orders.sql)\n"
                       "  Binder Error: Referenced column \"amount\" not found in FROM clause!"}
    with pytest.raises(DbtNodesFailed) as raised:
        DbtHook._raise_for("build", DbtRunResult(command=["dbt", "build"], returncode=1, elapsed_seconds=2.0,
                                                 nodes=[node]), [])
    # dbt_build re-raises a failure no retry can fix as AirflowFailException(str(e)).
    text = error_text(AirflowFailException(str(raised.value)))
    assert text.startswith("dbt build failed: model stg_orders error: Runtime Error in model stg_orders")
    assert 'Binder Error: Referenced column "amount" not found' in text  # the message's second line too
    # gate_dbt runs after a failed dbt_build (all_done) and fails on the same nodes: dbt_build is the cause.
    failed_check = {"name": "model.shop.stg_orders", "observed": None, "passed": False}
    report = {"task_states": {"dbt_build": "failed", "gate_dbt": "failed", "export_dataset": "upstream_failed"},
              "errors": {"dbt_build": text, "gate_dbt": "dbt evidence failed"},
              "gate_verdicts": {"gate_dbt": [{"gate": "dbt", "passed": False, "checks": [failed_check]}]}}
    assert run_outcome(report) == f"failed at dbt_build: {text} (no candidate; champion unchanged)"


def test_urls_with_credentials_passwords_and_masked_secrets_are_redacted():
    from airflow.sdk.log import mask_secret

    conn_password = f"conn-pass-{uuid.uuid4().hex}"  # what fetching a connection registers with the masker
    mask_secret(conn_password)
    error = ConnectionError(
        "MLflow at https://alice:s3cr3t@mlflow.example.com/api?token=t0k3n&x=1 refused: "
        f"login bob/{conn_password} rejected; password=hunter2 user=bob; api_key: AKIAXYZ "
        "Authorization: Bearer abcdefghijklmnop"
    )
    text = error_text(error)
    for secret in ("s3cr3t", "t0k3n", conn_password, "hunter2", "AKIAXYZ", "abcdefghijklmnop"):
        assert secret not in text
    assert text.startswith("ConnectionError: MLflow at https://mlflow.example.com/api?x=1 refused")
    assert "user=bob" in text  # only the secrets go


def test_an_over_long_multi_line_message_is_cut_to_one_line():
    error = RuntimeError("first line " + "x" * 1000 + "\nsecond line\n")
    text = error_text(error)
    assert len(text) == MAX_ERROR_CHARS and text.endswith("…") and "\n" not in text
    assert text.startswith("RuntimeError: first line xxx") and "second line" not in text
    # A foreign traceback-like message: its first meaningful line, not the header.
    assert error_text(ValueError("Traceback (most recent call last):\n\n  boom")) == "ValueError: boom"


def test_failure_callback_is_added_to_every_retrain_operator_and_keeps_the_users():
    calls = []
    op = RunReportOperator(task_id="report", pipeline="churn", stage_task_ids=STAGES,
                           on_failure_callback=calls.append)
    assert op.on_failure_callback == [record_failure, calls.append]
    ti = RunTI()
    record_failure({"ti": ti})  # failed from outside the task (marked failed, worker lost): nothing to say
    assert ti.xcoms == {}
    record_failure({"ti": ti, "exception": KeyError("model")})
    assert ti.xcoms == {ERROR_XCOM_KEY: "KeyError: 'model'"}


def test_a_gate_task_failing_before_its_verdict_fails_as_any_task(tmp_path):
    error = "MlflowException: API request to http://mlflow:5000/api/2.0/mlflow/runs/get failed"
    ti = RunTI(states={"train": "success", "register": "success", "gate_model": "failed", "promote": "upstream_failed"},
               pushed={("register", "return_value"): {"model_name": "churn", "version": "2", "run_id": "r"},
                       ("gate_model", ERROR_XCOM_KEY): error})
    assert _report(tmp_path, ti)["outcome"] == f"failed at gate_model: {error} (v2; champion unchanged)"
    # With its verdicts pushed, a failed gate is a gate decision, named by its failed checks.
    check = {"name": "roc_auc", "observed": 0.71, "passed": False}
    ti.pushed[("gate_model", "verdicts")] = [{"gate": "metrics", "passed": False, "checks": [check],
                                             "message": "metric gate failed: roc_auc 0.71 < min 0.75"}]
    assert _report(tmp_path, ti)["outcome"] == "gate failed: model: roc_auc 0.7100 (v2; champion unchanged)"
