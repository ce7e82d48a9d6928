"""The churn DAG (``dag.test()``) against an MLflow server that requires a password given only in the
connection URI: the password reaches the server and nowhere else (logs, XCom, reports); then, for a pipeline
of its own on the same server (``churn_rb``), two runs and ``rollback_churn_rb`` (``dag.test()`` with
params), with the promotion history read from MLflow alone. Each test starts its own models from nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlflow_server import AuthProxy, InProcessMlflowServer  # noqa: E402

# Runs here retrain the same inputs as an earlier champion of the session: force them to train.
FORCE = {"force": True}

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
USER, PASSWORD = "retrain", "Planted-URI-Pa55:word@x"
RB = "churn_rb"  # the rollback test's pipeline and model: never touched by the other test


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    server = InProcessMlflowServer(tmp_path_factory.mktemp("mlflow-e2e"))
    server.start()
    proxy = AuthProxy(server.port, USER, PASSWORD)
    yield proxy
    proxy.close()
    server.stop()


@pytest.fixture(scope="module")
def bag(tmp_path_factory, airflow_db, warehouse, proxy):
    from airflow.dag_processing.dagbag import DagBag

    specs = tmp_path_factory.mktemp("specs-e2e")
    spec = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())
    spec["registry"]["lease"] = {"settle_seconds": 0.1}
    (specs / "churn.yaml").write_text(yaml.safe_dump(spec))
    rollback = dict(spec, name=RB, registry=dict(spec["registry"], model_name=RB))
    (specs / f"{RB}.yaml").write_text(yaml.safe_dump(rollback))
    uri = f"mlflow://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{proxy.port}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETRAIN_SPECS_DIR", str(specs))
        mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", uri)
        bag = DagBag(dag_folder=str(ROOT / "dags"))
        assert bag.import_errors == {}
        yield bag


def _xcoms(dr) -> list:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == dr.dag_id, XComModel.run_id == dr.run_id).all()
        return [(r.task_id, r.key, r.value) for r in rows]


def test_planted_uri_password_reaches_the_server_and_nothing_else(bag, proxy, capfd, caplog, state_dir):
    from airflow_retrain.hooks.mlflow import MlflowHook

    proxy.requests.clear()
    dr = bag.dags["churn_retrain"].test(run_conf=FORCE)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success", states
    assert proxy.requests and all(auth for _, _, auth in proxy.requests)  # every request authenticated
    out, err = capfd.readouterr()
    logs = [p.read_text(errors="replace") for p in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log")]
    reports = [p.read_text() for p in (state_dir / "reports" / "churn_retrain").glob("*.json")]
    everything = "\n".join([out, err, caplog.text, json.dumps(_xcoms(dr), default=str), *logs, *reports])
    assert "Registered churn version 1" in everything  # the logs were captured
    for form in (PASSWORD, quote(PASSWORD, safe=""), "Planted-URI"):
        assert form not in everything, form
    assert os.environ.get("MLFLOW_TRACKING_PASSWORD") is None and os.environ.get("MLFLOW_TRACKING_USERNAME") is None
    # MLflow's own "Created version"/"already exists" lines are not printed as errors any more.
    assert "Created version" not in err and "already exists. Creating a new version" not in err
    hook = MlflowHook()
    champion = hook.get_version_by_alias("churn", "champion")
    assert str(champion.version) == "1" and champion.tags["retrain.gate_outcome"] == "passed"
    assert champion.tags["retrain.code_version"] and champion.tags["retrain.data.fingerprint"]


def test_second_run_then_rollback_from_the_history(bag):
    from airflow_retrain.hooks.mlflow import MlflowHook
    from airflow_retrain.operators.registry_promote import PromoteModelOperator

    first = bag.dags[f"{RB}_retrain"].test()  # promotes v1
    assert first.state == "success"
    dr = bag.dags[f"{RB}_retrain"].test(run_conf=FORCE)  # same inputs, forced to train; v2 does not beat it: kept
    assert dr.state == "success"
    hook = MlflowHook()
    assert str(hook.get_version_by_alias(RB, "champion").version) == "1"
    # A better candidate (a copy of v2 whose stored metric is higher) becomes champion, then is rolled back.
    v2 = hook.get_version(RB, "2")
    run = hook.client.get_run(v2.run_id)
    better = hook.client.create_run(run.info.experiment_id)
    hook.client.log_metric(better.info.run_id, "roc_auc", run.data.metrics["roc_auc"] + 0.05)
    v3 = hook.client.create_model_version(RB, f"{better.info.artifact_uri}/model", run_id=better.info.run_id,
                                          tags={"retrain.gate.metrics": "passed"})
    ctx = {"dag": bag.dags[f"{RB}_retrain"], "run_id": "manual__demo_v3", "task": type("T", (), {"owner": "t"})(),
           "ti": type("TI", (), {"xcom_push": lambda *a, **k: None})()}
    PromoteModelOperator(task_id="promote", pipeline=RB, candidate={"model_name": RB, "version": v3.version},
                         primary_metric="roc_auc", lease_settle_seconds=0.1).execute(ctx)
    assert str(hook.get_version_by_alias(RB, "champion").version) == str(v3.version)
    rb = bag.dags[f"rollback_{RB}"].test(run_conf={"reason": "complaints after the v3 release"})
    assert rb.state == "success"
    assert str(hook.get_version_by_alias(RB, "champion").version) == "1"
    history = hook.promotion_history(RB)
    print(f"\nPromotion history of {RB} (from MLflow alone):")
    for e in history:
        print(json.dumps({k: e.get(k) for k in ("seq", "at", "action", "alias", "from", "to", "by", "reason")}))
    last = history[-1]
    assert (last["action"], last["from"], last["to"]) == ("rollback", str(v3.version), "1")
    assert last["reason"] == "complaints after the v3 release" and last["by"].startswith(f"rollback_{RB}/")
    actions = [(e["action"], e.get("alias")) for e in history]
    assert actions[:2] == [("challenger", "challenger"), ("promote", "champion")]
    assert ("kept", "champion") in actions  # the second run's decision
