"""dbt node tasks never wait without a bound: dbt_build's state, clearings, retries, dag.test(), rebuilding a node."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException

from airflow_retrain.dbt.results import (
    read_current,
    read_node_status,
    run_status_root,
    start_attempt,
    write_done,
    write_node_status,
)
from airflow_retrain.triggers import dbt as triggers
from airflow_retrain.triggers.dbt import UNKNOWN, DbtNodeTrigger, decide

NODES = {"model.p.m": ["test.p.not_null_m_id.1"]}


def _result(uid, status, message=""):
    return {"unique_id": uid, "resource_type": uid.split(".")[0], "name": uid.split(".")[2], "status": status,
            "message": message, "failures": 0, "execution_time": 0.5, "relation_name": None}  # fmt: skip


@pytest.fixture
def root(tmp_path):
    return run_status_root("dag", "manual__1", f"file://{tmp_path}")


def _finish(attempt, status="success"):
    write_node_status(attempt, _result("model.p.m", status))
    write_node_status(attempt, _result("test.p.not_null_m_id.1", "pass"))


def test_dbt_build_ending_before_dbt_ran_fails_the_nodes_naming_it(root):
    assert decide(NODES, root, 0, None, "dbt_build") is None  # not scheduled yet: wait
    assert decide(NODES, root, 0, "queued", "dbt_build") is None
    outcome = decide(NODES, root, 0, "upstream_failed", "dbt_build")
    assert (
        outcome["state"] == "failed"
        and "dbt_build ended upstream_failed before dbt ran" in outcome["message"]
    )


def test_dbt_build_killed_mid_run_fails_the_nodes_it_never_reported(root):
    attempt = start_attempt(root, 0, 1)
    assert decide(NODES, root, 0, "running", "dbt_build") is None
    outcome = decide(NODES, root, 0, "failed", "dbt_build")  # no done marker: the worker died
    assert (
        outcome["state"] == "failed"
        and "dbt_build ended failed without reporting model.p.m" in outcome["message"]
    )
    _finish(attempt)  # what it did report stands
    assert decide(NODES, root, 0, "failed", "dbt_build")["state"] == "success"


def test_a_retryable_failure_waits_for_the_retry(root):
    first = start_attempt(root, 0, 1)
    write_done(first, "failed", "dbt build ran past its timeout")
    assert decide(NODES, root, 0, "up_for_retry", "dbt_build") is None  # not final: the retry will report
    assert decide(NODES, root, 0, "running", "dbt_build") is None  # the retry started, not yet current
    second = start_attempt(root, 0, 2)
    _finish(second)
    assert decide(NODES, root, 0, "running", "dbt_build")["state"] == "success"


def test_without_a_known_state_the_done_marker_is_final(root):
    attempt = start_attempt(root, 0, 1)
    write_done(attempt, "failed", "dbt build: the project does not compile")
    outcome = decide(NODES, root, 0, UNKNOWN, "dbt_build")
    assert outcome["state"] == "failed" and "does not compile" in outcome["message"]


def test_node_cleared_while_dbt_build_runs_takes_the_running_builds_result(root):
    attempt = start_attempt(
        root, 0, 1
    )  # dbt_build of clearing 0 is running; the node was cleared (clearing 1)
    assert decide(NODES, root, 1, "running", "dbt_build") is None
    _finish(attempt)
    assert decide(NODES, root, 1, "running", "dbt_build")["state"] == "success"


def test_node_cleared_with_dbt_build_waits_for_the_new_build(root):
    _finish(start_attempt(root, 0, 1))
    assert (
        decide(NODES, root, 1, None, "dbt_build") is None
    )  # dbt_build cleared too: the old result is not it
    assert decide(NODES, root, 1, "queued", "dbt_build") is None
    start_attempt(root, 1, 1)
    assert decide(NODES, root, 1, "running", "dbt_build") is None


def test_node_cleared_after_dbt_build_finished_rebuilds(root):
    _finish(start_attempt(root, 0, 1), status="error")
    assert decide(NODES, root, 0, "failed", "dbt_build")["state"] == "failed"  # the run itself
    assert decide(NODES, root, 1, "failed", "dbt_build")["state"] == "rebuild"  # cleared afterwards
    assert decide(NODES, root, 1, "upstream_failed", "dbt_build")["state"] == "failed"


def test_the_trigger_ends_when_dbt_build_fails_upstream(root, monkeypatch):
    """The trigger looks up dbt_build's state (Task SDK) and ends its task instead of waiting for its timeout."""
    monkeypatch.setattr(triggers, "lookup_producer_state", lambda *a: "upstream_failed")
    trigger = DbtNodeTrigger("model.p.m", NODES["model.p.m"], "dag", "manual__1", 0, str(root).rsplit("/dag/", 1)[0],
                             poll_interval=0.01)  # fmt: skip

    async def first():
        async for event in trigger.run():
            return event

    event = asyncio.run(first())
    assert event.task_instance_state == "failed"
    assert "dbt_build ended upstream_failed" in event.xcoms["return_value"]["message"]


def _node(root_uri: str, **kwargs):
    from airflow_retrain.operators.dbt import DbtNodeOperator

    kwargs.setdefault("unique_id", "model.p.m")
    kwargs.setdefault("test_ids", NODES["model.p.m"])
    return DbtNodeOperator(task_id="m", status_dag_id="dag", status_run_id="manual__1", status_clear_number=0,
                           artifact_root=root_uri, **kwargs)  # fmt: skip


def test_on_a_worker_a_node_reschedules_never_defers_and_is_bounded(tmp_path, make_context, monkeypatch):
    """``dag.test()`` runs a node task on its loop: deferring there would run the trigger in line and never
    reach dbt_build. It reschedules instead, and fails once its first check is older than its timeout (as
    Airflow's sensors in reschedule mode) -- never because the run's own start or logical date is old."""
    monkeypatch.setattr(triggers, "lookup_producer_state", lambda *a: "scheduled")
    node = _node(f"file://{tmp_path}", timeout=timedelta(minutes=30))
    ctx = make_context(run_id="manual__1")
    # A run that started long ago (a backfill, `dags test -e 2026-03-01`): the first check still waits.
    ctx["dag_run"] = type("DR", (), {"start_date": datetime.now(UTC) - timedelta(days=30), "clear_number": 0})()
    first_check = {"at": None}
    monkeypatch.setattr(ctx["ti"], "get_first_reschedule_date", lambda _ctx: first_check["at"], raising=False)
    with pytest.raises(AirflowRescheduleException):
        node.execute(ctx)
    first_check["at"] = datetime.now(UTC) - timedelta(minutes=10)
    with pytest.raises(AirflowRescheduleException):
        node.execute(ctx)
    first_check["at"] = datetime.now(UTC) - timedelta(hours=1)
    with pytest.raises(
        AirflowFailException, match=r"dbt_build did not report model.p.m within 0:30:00 of this task's first check .*scheduled"
    ):
        node.execute(ctx)


@pytest.fixture
def shop(shop_project, tmp_path) -> Path:
    project = tmp_path / "shop"
    shutil.copytree(shop_project, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    return project


def test_clearing_a_failed_node_rebuilds_just_it_and_a_failed_test_is_named(
    shop, tmp_path, make_context, monkeypatch
):
    """The run's dbt_build failed on a test of customers; the data is fixed; clearing the ``customers`` task runs
    ``dbt build --select customers`` (with its tests), not the project. A test that still fails is a data
    failure: the task fails without retry, naming the test and its cause."""
    from airflow_retrain.dbt.manifest import load_index
    from airflow_retrain.dbt.render import selection_of
    from airflow_retrain.operators.dbt import DbtBuildOperator

    store = f"file://{tmp_path / 'store'}"
    ctx = make_context(run_id="manual__1", dag_id="dag")
    build = DbtBuildOperator(task_id="dbt_build", pipeline="unit", project_dir=str(shop), warehouse_conn_id=None,
                             artifact_root=store)  # fmt: skip
    build.execute(ctx)
    root = run_status_root("dag", "manual__1", store)
    attempt = root / read_current(root)["attempt"]
    orders = read_node_status(attempt, "model.shop.orders")
    write_node_status(
        attempt, _result("model.shop.customers", "error", "Catalog Error")
    )  # as if it had failed
    index = load_index(shop)
    tests = sorted(
        u
        for u, n in index.nodes.items()
        if n["resource_type"] == "test" and "model.shop.customers" in n["depends_on"]
    )
    kwargs = {
        "pipeline": "unit",
        "project_dir": str(shop),
        "target": None,
        "warehouse_conn_id": None,
        "profiles_dir": None,
    }
    node = _node(store, unique_id="model.shop.customers", test_ids=tests,
                 rebuild_select=selection_of("model.shop.customers", tests, index), build_kwargs=kwargs)  # fmt: skip
    node.status_clear_number = 1  # the user cleared this task after the run
    monkeypatch.setattr(triggers, "lookup_producer_state", lambda *a: "failed")
    again = make_context(run_id="manual__1", dag_id="dag", try_number=2)
    done = node.execute(again)
    assert (
        done["state"] == "success"
        and read_node_status(attempt, "model.shop.customers")["status"] == "success"
    )
    assert {r["unique_id"] for r in done["results"]} == {"model.shop.customers", *tests}
    assert read_node_status(attempt, "model.shop.orders") == orders  # nothing else was rebuilt
    import duckdb

    with duckdb.connect(str(shop / "shop.duckdb")) as con:  # break the data the test checks
        con.execute("update raw_customers set id = null where id = 1")
    with pytest.raises(AirflowFailException, match=r"test .*customer_id.* fail"):
        node.execute(make_context(run_id="manual__1", dag_id="dag", try_number=3))


DAG_FILE = """
from datetime import datetime
from airflow.sdk import DAG
from airflow_retrain.dbt.render import build_dbt_stage

with DAG("dbt_only", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    build_dbt_stage(project_dir={project!r}, select=["+customers"], pipeline="unit", warehouse_conn_id=None,
                    artifact_root={store!r})
"""


@pytest.mark.usefixtures("airflow_db")
def test_dag_test_runs_the_dbt_stage_with_no_switch(shop, tmp_path, monkeypatch):
    """``dag.test()`` (what ``airflow dags test`` runs) with node tasks that start in the triggerer in a real
    deployment: they used to defer, dag.test ran their trigger in line, and dbt_build never ran (a hang)."""
    from airflow.dag_processing.dagbag import DagBag

    from airflow_retrain.dbt.__main__ import cache_manifest

    # the group renders from this copy's manifest and dbt's own selection on it
    cache_manifest(str(shop), selections=[(["+customers"], None, None)])
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "dbt_only.py").write_text(
        DAG_FILE.format(project=str(shop), store=f"file://{tmp_path / 'store'}")
    )
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    monkeypatch.setenv(
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
        json.dumps([{"name": "dbt-only", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                     "kwargs": {"path": str(dags)}}]),
    )  # fmt: skip
    dag = DagBag(dag_folder=str(dags)).dags["dbt_only"]
    nodes = [t for t in dag.task_ids if t.startswith("dbt.")]
    assert "dbt.customers" in nodes and all(dag.get_task(t).start_from_trigger for t in nodes)
    run = dag.test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states["dbt.customers"] == states["dbt.stg_customers"] == "success"
