"""Human approval (approve / reject / timeout), the SageMaker mirror on moto, and the model signature."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pandas as pd
import pytest

from airflow_retrain.hooks.mlflow import MlflowHook
from airflow_retrain.operators.registry_approval import PromotionApprovalOperator
from airflow_retrain.operators.registry_mirror import MirrorToSageMakerOperator
from airflow_retrain.operators.registry_promote import PromoteModelOperator
from airflow_retrain.operators.registry_register import RegisterModelOperator

CONN = "mlflow_extras"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    extra = {"artifact_root": (tmp / "artifacts").as_uri()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{CONN.upper()}",
                  json.dumps({"conn_type": "mlflow", "host": f"sqlite:///{tmp / 'mlflow.db'}", "extra": extra}))
        yield MlflowHook(CONN)


@pytest.fixture
def name(request) -> str:
    return "m_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")


def candidate(hook: MlflowHook, name: str, auc: float, gate: str = "passed") -> dict:
    run = hook.client.create_run(hook.ensure_experiment("extras"))
    hook.client.log_metric(run.info.run_id, "roc_auc", auc)
    hook.ensure_registered_model(name)
    mv = hook.client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                          tags={"retrain.gate.metrics": gate})
    return {"model_name": name, "version": str(mv.version), "run_id": run.info.run_id}


def promote(cand, make_context, run_id, **kwargs):
    from airflow.sdk.exceptions import AirflowSkipException

    ctx = make_context("p_retrain", run_id)
    try:
        return PromoteModelOperator(task_id="promote", pipeline="p", candidate=cand, primary_metric="roc_auc",
                                    mlflow_conn_id=CONN, lease_settle_seconds=0.05, **kwargs).execute(ctx)
    except AirflowSkipException:  # champion kept: the decision is in XCom all the same
        return ctx["ti"].xcoms["return_value"]


def decided_over_champion(registry, name, make_context, auc: float) -> tuple[dict, dict]:
    """v1 (roc_auc 0.80) promoted to champion in run r1, then v2 (``auc``) decided on in run r2 with
    ``mode="decide"`` (which writes nothing): v2 and the decision."""
    promote(candidate(registry, name, 0.80), make_context, "r1")
    v2 = candidate(registry, name, auc)
    return v2, promote(v2, make_context, "r2", mode="decide")


def approval_event(choice: str, *, reason: str = "", timedout: bool = False) -> dict:
    """The payload Airflow resumes ``execute_complete`` with (``HITLDetail.as_resume_event_payload``)."""
    return {"chosen_options": [choice], "params_input": {"reason": reason},
            "responded_at": dt.datetime.now(dt.UTC), "timedout": timedout,
            "responded_by_user": None if timedout else {"id": "7", "name": "oncall"}}


def test_approval_shows_the_evidence_and_approve_moves_champion(registry, name, make_context):
    v2, decision = decided_over_champion(registry, name, make_context, 0.86)
    assert decision["promote"] and registry.get_version_by_alias(name, "champion").version == 1  # decide writes nothing
    body = decision["body_md"]
    assert "| candidate | v2 | 0.8600 |" in body and "| champion | v1 | 0.8000 |" in body and "| `metrics` | passed |" in body
    op = PromotionApprovalOperator(task_id="approve_promotion", decision=decision)
    assert op.defaults == ["Reject"]  # no answer before the timeout = reject
    answer = op.execute_complete({}, approval_event("Approve", reason="looks right"))
    assert answer == {"approved": True, "asked": True, "by": "oncall", "timed_out": False, "reason": "looks right",
                      "candidate_version": "2", "champion_before": "1"}
    result = promote(v2, make_context, "r2", approval=answer)
    assert result["promoted"] and str(registry.get_version_by_alias(name, "champion").version) == "2"
    assert registry.promotion_history(name)[-1]["approved_by"] == "oncall"


@pytest.mark.parametrize(("event", "why"), [
    (approval_event("Reject", reason="holdout too small"), "holdout too small"),
    (approval_event("Reject", timedout=True), "approval timed out"),  # the timeout sweep applies the default
    ({"error": "The Human-in-the-loop response timeout has passed without a response.", "error_type": "timeout"},
     "approval timed out"),
])
def test_reject_or_timeout_keeps_champion_and_records_why(registry, name, make_context, event, why):
    v2, decision = decided_over_champion(registry, name, make_context, 0.90)
    answer = PromotionApprovalOperator(task_id="approve_promotion", decision=decision).execute_complete({}, event)
    assert answer["approved"] is False
    result = promote(v2, make_context, "r2", approval=answer)
    assert result["decision"] == "rejected" and not result["promoted"]
    assert str(registry.get_version_by_alias(name, "champion").version) == "1"
    last = registry.promotion_history(name)[-1]
    assert last["action"] == "rejected" and why in last["reason"] and last["to"] == "1"


def test_an_approval_given_against_another_champion_is_stale(registry, name, make_context):
    v2, decision = decided_over_champion(registry, name, make_context, 0.90)
    answer = PromotionApprovalOperator(task_id="approve_promotion", decision=decision).execute_complete(
        {}, approval_event("Approve", reason="ok"))
    v3 = candidate(registry, name, 0.85)
    promote(v3, make_context, "r3")  # another pipeline promotes meanwhile
    result = promote(v2, make_context, "r2", approval=answer)
    assert result["decision"] == "rejected" and "approval is stale" in result["reason"]
    assert str(registry.get_version_by_alias(name, "champion").version) == "3"


def test_nothing_to_approve_asks_nobody(registry, name, make_context):
    v2, decision = decided_over_champion(registry, name, make_context, 0.70)
    answer = PromotionApprovalOperator(task_id="approve_promotion", decision=decision).execute(
        {"task_instance": None})
    assert answer["asked"] is False and answer["approved"] is False
    assert promote(v2, make_context, "r2", approval=answer)["decision"] == "kept_champion"


def test_stale_champion_comparison_is_refused(registry, name, make_context):
    from airflow.sdk.exceptions import AirflowFailException

    v1 = candidate(registry, name, 0.80)
    promote(v1, make_context, "r1")
    v2 = candidate(registry, name, 0.90)
    verdict = {"gate": "champion", "passed": True, "message": "beats",
               "details": {"decision": "beats", "champion_version": "7", "candidate_value": 0.9, "champion_value": 0.8,
                           "delta": 0.1, "metric": "roc_auc", "holdout_rows": 100}}
    with pytest.raises(AirflowFailException, match="comparison is stale"):
        promote(v2, make_context, "r2", comparison=verdict)
    verdict["details"]["champion_version"] = "1"
    result = promote(v2, make_context, "r2", comparison=verdict)
    assert result["promoted"] and result["evidence"].startswith("champion gate: re-scored on the same holdout")


@pytest.fixture(scope="module")
def moto_sagemaker(tmp_path_factory):
    import sys
    from pathlib import Path

    from moto.server import ThreadedMotoServer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mlflow_server import free_port

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    conn = {"conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": f"http://127.0.0.1:{server._port}", "region_name": "us-east-1"}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_AWS_FAKE", json.dumps(conn))
        yield server
    server.stop()


def test_mirror_registers_the_approved_version_in_sagemaker(registry, name, make_context, moto_sagemaker):
    v1 = candidate(registry, name, 0.80)
    decision = promote(v1, make_context, "r1")

    def mirror(dec):
        return MirrorToSageMakerOperator(task_id="mirror_sagemaker", pipeline="p", decision=dec,
                                         model_package_group="churn-models", aws_conn_id="aws_fake",
                                         mlflow_conn_id=CONN).execute(make_context("p_retrain", "r1"))

    first = mirror(decision)
    assert first["mirrored"] and not first["reused"]
    assert mirror(decision)["reused"]  # a retry does not create a second package
    import boto3

    sm = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=moto_sagemaker.get_host_and_port_url()
                      if hasattr(moto_sagemaker, "get_host_and_port_url") else
                      f"http://127.0.0.1:{moto_sagemaker._port}", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    sm.describe_model_package_group(ModelPackageGroupName="churn-models")
    pkg = sm.describe_model_package(ModelPackageName=first["model_package_arn"])
    assert pkg["ModelApprovalStatus"] == "Approved"
    assert pkg["CustomerMetadataProperties"]["mlflow.version"] == v1["version"]
    assert pkg["CustomerMetadataProperties"]["mlflow.run_id"] == v1["run_id"]
    v2 = candidate(registry, name, 0.70)
    kept = promote(v2, make_context, "r2")
    assert mirror(kept) == {"mirrored": False, "reason": "not promoted: kept_champion"}


@pytest.mark.slow
def test_integer_features_with_late_nulls_score_the_whole_feature_table(registry, name, make_context, tmp_path):
    """Nulls only past the first rows: a signature inferred from 50 sample rows declares a required integer
    and the model cannot score its own table; the Parquet schema + null counts declare an optional double."""
    import mlflow
    import xgboost
    from mlflow.models import infer_signature

    rng = np.random.default_rng(3)
    n = 400
    table = pd.DataFrame({
        "customer_id": [f"C{i}" for i in range(n)],
        "tenure": rng.integers(0, 70, n),
        "is_fiber": pd.array(rng.integers(0, 2, n), dtype="Int32"),  # a DuckDB INTEGER column, as exported
        "charges": rng.normal(60, 20, n),
        "churned": rng.integers(0, 2, n),
    })
    table.loc[table.index[300:310], "is_fiber"] = pd.NA  # nulls only late in the table
    for channel, part in (("train", table.iloc[:320]), ("test", table.iloc[320:])):
        (tmp_path / channel).mkdir()
        part.to_parquet(tmp_path / channel / "part-0000.parquet", index=False)
    features = table.drop(columns=["customer_id", "churned"])
    model = xgboost.XGBClassifier(n_estimators=3, max_depth=2).fit(features.astype("float64"), table["churned"])
    (tmp_path / "model").mkdir()
    model.save_model(tmp_path / "model" / "model.json")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("{}")

    result = RegisterModelOperator(
        task_id="register", pipeline="p", model_name=name, experiment="extras", mlflow_conn_id=CONN,
        lease_settle_seconds=0.05,
        training={"job_name": "j", "backend": "local", "metrics": {"roc_auc": 0.7}, "info": {},
                  "model_uri": f"file://{tmp_path / 'model'}", "output_uri": f"file://{tmp_path / 'out'}", "compute_seconds": 1.0,
                  "cost": {"usd": 0.0}},
        dataset={"relation": "r", "channels": {"train": f"file://{tmp_path / 'train'}", "test": f"file://{tmp_path / 'test'}"},
                 "rows": {"train": 320, "test": 80}, "id_column": "customer_id", "target_column": "churned",
                 "fingerprint": "f"},
    ).execute(make_context("p_retrain", "sig"))
    local = registry.download_model(name, result["version"], tmp_path / "dl")
    loaded = mlflow.pyfunc.load_model(local)
    inputs = {c.name: (c.type.name, c.required) for c in loaded.metadata.get_input_schema().inputs}
    assert inputs == {"tenure": ("long", True), "is_fiber": ("double", False), "charges": ("double", True)}
    everything = pd.read_parquet([tmp_path / "train" / "part-0000.parquet", tmp_path / "test" / "part-0000.parquet"])
    scores = loaded.predict(everything.drop(columns=["customer_id", "churned"]))
    assert len(scores) == n
    # What the first version did: the signature of 50 sample rows cannot score the same table.
    naive = infer_signature(features.head(50))
    assert naive.inputs.to_dict()[1]["type"] in ("integer", "long")
    from mlflow.models.utils import _enforce_schema

    with pytest.raises(Exception, match=r"(?i)integer|NA|missing|convert"):
        _enforce_schema(everything.drop(columns=["customer_id", "churned"]), naive.inputs)


def test_mirror_finds_its_package_past_the_first_page_of_100(registry, name, make_context, moto_sagemaker):
    """A group with over 100 packages: a retry still finds the package it mirrored (one page held 100)."""
    import boto3

    group = f"{name}-group"[:60]
    sm = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{moto_sagemaker._port}",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    sm.create_model_package_group(ModelPackageGroupName=group)

    def fill(count: int, start: int) -> None:
        for i in range(start, start + count):
            sm.create_model_package(ModelPackageGroupName=group, ModelPackageDescription=f"older package {i}",
                                    ModelApprovalStatus="Approved")

    decision = promote(candidate(registry, name, 0.80), make_context, "r1")

    def mirror():
        return MirrorToSageMakerOperator(task_id="mirror_sagemaker", pipeline="p", decision=decision,
                                         model_package_group=group, aws_conn_id="aws_fake",
                                         mlflow_conn_id=CONN).execute(make_context("p_retrain", "r1"))

    fill(110, 0)  # the mirrored package sits at 111 of 221, past the first page in either sort order
    first = mirror()
    fill(110, 110)
    again = mirror()
    assert not first["reused"] and again == {**first, "reused": True}
    pages = sm.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group)
    summaries = [s for page in pages for s in page["ModelPackageSummaryList"]]
    mirrored = [s for s in summaries if s.get("ModelPackageDescription", "").startswith(f"MLflow models:/{name}/")]
    assert len(summaries) == 221 and [s["ModelPackageArn"] for s in mirrored] == [first["model_package_arn"]]
