"""The dbt stage without running dbt: manifest cache, rendering, node completion, verdicts, profiles, env."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import datetime

import pytest

from airflow_retrain.dbt.manifest import (
    ManifestMissingError,
    ManifestStaleError,
    load_index,
    project_fingerprint,
)
from airflow_retrain.dbt.profiles import DbtProfileError, child_env, profile_from_connection, resolve_target
from airflow_retrain.dbt.results import (
    DONE_MARKER,
    run_status_root,
    start_attempt,
    strip_ansi,
    summarize,
    verdict_from_results,
    write_done,
    write_json_atomic,
    write_node_status,
)
from airflow_retrain.hooks.warehouse import WarehouseParams
from airflow_retrain.triggers.dbt import DbtNodeTrigger, node_outcome


def _result(uid, status, message="", failures=0, rtype=None):
    rtype = rtype or uid.split(".")[0]
    return {"unique_id": uid, "resource_type": rtype, "name": uid.split(".")[2], "status": status,
            "message": message, "failures": failures, "execution_time": 0.5, "relation_name": None}  # fmt: skip


# -- manifest cache -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_manifest_cache_is_keyed_by_the_project_files(shop_project, tmp_path):
    project = tmp_path / "shop"
    shutil.copytree(shop_project, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    with pytest.raises(ManifestMissingError, match=f"no dbt manifest cached for project {project}.*make dbt-manifest"):
        load_index(project)
    from airflow_retrain.dbt.__main__ import cache_manifest

    before = project_fingerprint(project)
    (project / "target").mkdir(exist_ok=True)
    (project / "target" / "junk.json").write_text("{}")  # build output does not count
    assert project_fingerprint(project) == before
    cache_manifest(str(project))
    assert load_index(project).fingerprint == before
    (project / "models" / "marts" / "orders.sql").write_text("select 1 as order_id\n")
    with pytest.raises(ManifestStaleError, match="stale"):
        load_index(project)
    stale = load_index(project, allow_stale=True)
    assert stale.stale and stale.fingerprint == before


# -- rendering ------------------------------------------------------------------------------------------
def _render(project, **kwargs):
    from airflow.sdk import DAG

    from airflow_retrain.dbt.render import build_dbt_stage
    from airflow_retrain.dbt.selection import cache_selection

    try:  # what dbt_build leaves for the next parse: dbt's selection on the cached manifest
        index = load_index(project, allow_stale=True)
        cache_selection(project, index.fingerprint, kwargs.get("select"), kwargs.get("exclude"), None)
    except ManifestMissingError:
        pass

    with DAG("render_test", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        producer, group, plan = build_dbt_stage(
            project_dir=str(project), select=kwargs.pop("select", None), pipeline="t", warehouse_conn_id=None, **kwargs
        )
    return dag, producer, group, plan


def test_render_one_node_per_model_seed_snapshot_with_tests(shop_project):
    dag, producer, group, plan = _render(shop_project, stream=True)
    nodes = {t.removeprefix("dbt."): dag.get_task(t) for t in dag.task_ids if t.startswith("dbt.")}
    assert set(nodes) == {
        "raw_customers", "raw_orders", "raw_payments", "stg_customers", "stg_orders", "stg_payments",
        "orders", "customers", "events_daily", "orders_snapshot", "source_ext__events",
    }  # fmt: skip  (the ephemeral int_order_payments is compiled into orders, never run)
    assert len(nodes["stg_orders"].test_ids) == 3  # unique, not_null, accepted_values
    relationships = [t for t in nodes["orders"].test_ids if "relationships" in t]
    assert relationships and relationships[0] in nodes["customers"].test_ids  # attached to both parents
    assert len(nodes["source_ext__events"].test_ids) == 2  # tests on a source
    assert all(n.start_from_trigger and n.retries == 0 for n in nodes.values())
    trigger_kwargs = nodes["orders"].start_trigger_args.trigger_kwargs
    assert trigger_kwargs["status_clear_number"] == "{{ dag_run.clear_number or 0 }}"  # rendered by the triggerer
    assert trigger_kwargs["status_run_id"] == "{{ run_id }}" and trigger_kwargs["artifact_root"] is None
    assert {a.uri for a in producer.outlets} == {"x-dbt://shop/customers", "x-dbt://shop/events_daily", "x-dbt://shop/orders"}
    assert plan.sources == ["source.shop.ext.events"]


def test_render_selection_and_fallback_without_manifest(shop_project, tmp_path):
    dag, producer, group, _ = _render(shop_project, select=["+customers"], exclude=["raw_payments"])
    assert "dbt.customers" in dag.task_ids and "dbt.raw_payments" not in dag.task_ids
    assert "dbt.events_daily" not in dag.task_ids
    empty = tmp_path / "unparsed"
    shutil.copytree(shop_project, empty, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    (empty / "models" / "new_model.sql").write_text("select 1 as x\n")
    dag, producer, group, plan = _render(empty)
    assert group is None and dag.task_ids == ["dbt_build"]
    assert "no dbt manifest cached" in producer.doc_md and "one dbt_build task" in producer.doc_md


@pytest.mark.slow
def test_render_from_stale_manifest_says_so(shop_project, tmp_path):
    from airflow_retrain.dbt.__main__ import cache_manifest

    project = tmp_path / "shop"
    shutil.copytree(shop_project, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    cache_manifest(str(project))
    (project / "models" / "marts" / "extra.sql").write_text("select 1 as x\n")
    _, producer, group, plan = _render(project)
    assert group is not None and "stale manifest" in plan.note and "stale manifest" in producer.doc_md


# -- node completion --------------------------------------------------------------------------------------
def test_node_outcome_success_failure_skip(tmp_path):
    model, test = "model.p.m", "test.p.not_null_m_id.1"
    assert node_outcome(model, [test], tmp_path) is None  # nothing yet
    write_node_status(tmp_path, _result(model, "success"))
    assert node_outcome(model, [test], tmp_path) is None  # its test is still running
    write_node_status(tmp_path, _result(test, "fail", "Got 3 results, configured to fail if != 0", 3))
    outcome = node_outcome(model, [test], tmp_path)
    assert outcome["state"] == "failed" and "not_null_m_id" in outcome["message"] and "Got 3 results" in outcome["message"]
    write_node_status(tmp_path, _result("model.p.child", "skipped"))
    assert node_outcome("model.p.child", [], tmp_path)["state"] == "skipped"
    write_json_atomic(tmp_path / DONE_MARKER, {"state": "failed", "message": "dbt build: the project does not compile"})
    assert node_outcome("model.p.never", [], tmp_path) is None  # not final: dbt_build may still retry
    gone = node_outcome("model.p.never", [], tmp_path, final=True)
    assert gone["state"] == "failed" and "does not compile" in gone["message"]


def _trigger(uid: str, root, **kwargs) -> DbtNodeTrigger:
    return DbtNodeTrigger(uid, [], "dag", "manual__1", 0, artifact_root=f"file://{root}", poll_interval=0.01, **kwargs)


def test_trigger_serializes_and_ends_the_task(tmp_path):
    from airflow.triggers.base import TaskFailedEvent, TaskSuccessEvent

    trigger = _trigger("model.p.m", tmp_path, docs_url="http://docs/#!/model/model.p.m")
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_retrain.triggers.dbt.DbtNodeTrigger" and kwargs["artifact_root"] == f"file://{tmp_path}"
    assert DbtNodeTrigger(**kwargs).serialize() == (classpath, kwargs)
    prefix = start_attempt(run_status_root("dag", "manual__1", f"file://{tmp_path}"), 0, 1)
    assert str(prefix).startswith(f"file://{tmp_path}/dag/") and str(prefix).endswith("/dbt/status/0-1")

    async def first_event(t):
        async for event in t.run():
            return event

    async def finish_later():
        await asyncio.sleep(0.05)
        write_node_status(prefix, _result("model.p.m", "success"))

    async def both():
        _, event = await asyncio.gather(finish_later(), first_event(trigger))
        return event

    event = asyncio.run(both())
    assert isinstance(event, TaskSuccessEvent) and event.xcoms["dbt_docs_url"].endswith("model.p.m")
    write_node_status(prefix, _result("model.p.bad", "error", "Catalog Error: Table with name x does not exist!"))
    event = asyncio.run(first_event(_trigger("model.p.bad", tmp_path)))
    assert isinstance(event, TaskFailedEvent) and "Catalog Error" in event.xcoms["return_value"]["message"]


# -- evidence -------------------------------------------------------------------------------------------
def test_verdict_blocks_on_errors_and_stale_sources_and_records_warnings():
    results = [
        _result("model.p.m", "success"),
        _result("test.p.unique_m_id.1", "pass"),
        _result("test.p.accepted_m.2", "warn", "Got 2 results", 2),
        _result("test.p.source_not_null_raw_c_id.3", "error", "Catalog Error: Table with name c does not exist!"),
    ]
    verdict = verdict_from_results(results)
    assert not verdict.passed
    assert "source_not_null_raw_c_id" in verdict.message and "Catalog Error: Table with name c does not exist!" in verdict.message
    data = verdict.to_dict()
    assert data["gate"] == "dbt" and data["passed"] is False and len(data["checks"]) == 3
    ok = verdict_from_results(results[:3])
    assert ok.passed and "1 warned" in ok.message and "accepted_m" in ok.message
    freshness = {"results": [
        {"unique_id": "source.p.raw.c", "status": "error", "max_loaded_at_time_ago_in_s": 40 * 86400,
         "criteria": {"error_after": {"count": 30, "period": "day"}}},
        {"unique_id": "source.p.raw.d", "status": "warn", "max_loaded_at_time_ago_in_s": 8 * 86400,
         "criteria": {"error_after": {"count": 30, "period": "day"}}},
    ]}  # fmt: skip
    stale = verdict_from_results(results[:3], freshness)
    assert not stale.passed and "raw.c freshness error: last loaded 960.0 h ago (error after 720 h)" in stale.message
    assert "raw.d" not in stale.message.split("failed")[1].split(";")[0]


def test_summary_counts_seeds_and_snapshots_and_strips_ansi():
    results = [_result("seed.p.s", "success"), _result("snapshot.p.snap", "success"), _result("model.p.m", "success")]
    summary = summarize(results, 1.0)
    assert (summary["seeds_loaded"], summary["snapshots_built"], summary["models_built"]) == (1, 1, 1)
    assert strip_ansi("\x1b[32mPASS\x1b[0m and \x1b[1;31mERROR\x1b[0m") == "PASS and ERROR"


# -- profiles and environment ----------------------------------------------------------------------------
def test_own_profile_reports_the_real_target(shop_project):
    resolved = resolve_target(shop_project, shop_project, None, {})
    assert (resolved.profile, resolved.target) == ("shop", "dev")
    assert resolved.describe() == f"duckdb:{shop_project / 'shop.duckdb'} (profile shop, target dev)"
    assert resolve_target(shop_project, shop_project, "ci", {}).location.endswith("shop_ci.duckdb")
    with pytest.raises(DbtProfileError, match=r"target 'prod' is not an output of profile 'shop'.*outputs: dev, ci"):
        resolve_target(shop_project, shop_project, "prod", {})


def test_unknown_profile_is_named(shop_project, tmp_path):
    (tmp_path / "profiles.yml").write_text("other:\n  target: x\n  outputs: {x: {type: duckdb}}\n")
    with pytest.raises(DbtProfileError, match=r"profile 'shop' .* is not in .*profiles.yml; profiles: other"):
        resolve_target(shop_project, tmp_path, None, {})


def test_postgres_profile_from_connection_keeps_the_password_out_of_the_file():
    params = WarehouseParams(kind="postgres", host="db", port=5433, user="u", password="s3cr3t!", dbname="wh", schema="analytics")
    text, env = profile_from_connection("shop", params)
    assert "s3cr3t!" not in text and "env_var(\"DBT_ENV_SECRET_RETRAIN_PASSWORD\"" in text
    assert env == {"DBT_ENV_SECRET_RETRAIN_PASSWORD": "s3cr3t!"}
    assert "host: db" in text and "port: 5433" in text and "dbname: wh" in text


def test_child_env_is_an_allow_list(monkeypatch):
    planted = {
        "AIRFLOW_CONN_WAREHOUSE": "postgres://u:pw@h/db", "MLFLOW_TRACKING_PASSWORD": "mlpw",
        "AWS_SECRET_ACCESS_KEY": "aws", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json", "PGPASSWORD": "pg",
    }  # fmt: skip
    for k, v in planted.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ANALYST_FLAG", "1")
    env = child_env({"RETRAIN_DUCKDB_PATH": "/x.duckdb"}, passthrough=["ANALYST_FLAG"])
    assert not set(planted) & set(env)
    assert env["RETRAIN_DUCKDB_PATH"] == "/x.duckdb" and env["ANALYST_FLAG"] == "1" and "PATH" in env


@pytest.mark.slow
def test_index_is_small_json(shop_project):
    from airflow_retrain.dbt.manifest import cache_dir

    index_file = cache_dir(shop_project, project_fingerprint(shop_project)) / "index.json"
    data = json.loads(index_file.read_text())
    assert set(data) >= {"nodes", "parent_map", "child_map", "selectors"}
    assert index_file.stat().st_size < (index_file.parent / "manifest.json").stat().st_size / 3


def test_streaming_nodes_start_beside_the_producer(shop_project):
    dag, producer, group, plan = _render(shop_project, stream=True)
    node = dag.get_task("dbt.customers")
    assert node.start_from_trigger and node.upstream_task_ids == set() and plan.stream
    dag, producer, group, plan = _render(shop_project, stream=False)
    node = dag.get_task("dbt.customers")
    assert not node.start_from_trigger and node.upstream_task_ids == {"dbt_build"} and node.trigger_rule == "all_done"


def test_many_node_triggers_share_one_poller(tmp_path):
    from airflow_retrain.triggers.dbt import _StatusWatcher

    ids = [f"model.p.m{i}" for i in range(200)]
    root = run_status_root("dag", "manual__1", f"file://{tmp_path}")
    prefix = start_attempt(root, 0, 1)

    async def run_all():
        async def one(uid):
            async for event in _trigger(uid, tmp_path).run():
                return event

        async def finish():
            await asyncio.sleep(0.05)
            for uid in ids[:150]:
                write_node_status(prefix, _result(uid, "success"))
            await asyncio.sleep(0.05)
            write_done(prefix, "failed", "dbt exited")

        results = await asyncio.gather(finish(), *(one(u) for u in ids))
        return results[1:]

    events = asyncio.run(run_all())
    states = [e.task_instance_state for e in events]
    assert states[:150] == ["success"] * 150 and set(states[150:]) == {"failed"}
    watcher = _StatusWatcher._by_key[f"{root}|dag|manual__1|dbt_build"]
    assert watcher.waiters == [] and watcher.task.done()


@pytest.mark.slow
def test_trigger_polls_an_s3_artifact_store(tmp_path, monkeypatch):
    """On ``s3://`` (moto over HTTP, through an Airflow connection) the triggers list the run's prefix, bypassing
    the object store's listing cache, and read the statuses dbt_build wrote there."""
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    from airflow_retrain.dbt.results import list_status_names

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("AIRFLOW_CONN_DBT_S3_TEST", json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"region_name": "us-east-1", "endpoint_url": endpoint},
        }))  # fmt: skip
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="dbt-status")  # fmt: skip
        root = "s3://dbt-status/teams/ml"
        prefix = start_attempt(run_status_root("dag", "manual__1", root, "dbt_s3_test"), 2, 1)
        assert str(prefix).endswith("/dbt/status/2-1") and list_status_names(prefix) == frozenset()
        write_node_status(prefix, _result("model.p.a", "success"))
        assert list_status_names(prefix) == {"model.p.a.json"}
        trigger = DbtNodeTrigger("model.p.b", [], "dag", "manual__1", 2, root, "dbt_s3_test", poll_interval=0.05)

        async def run_and_finish():
            async def first():
                async for event in trigger.run():
                    return event

            async def finish():
                await asyncio.sleep(0.3)  # the trigger has listed the prefix (and fsspec cached it) by now
                write_node_status(prefix, _result("model.p.b", "error", "Catalog Error: no table"))

            return (await asyncio.gather(first(), finish()))[0]

        event = asyncio.run(asyncio.wait_for(run_and_finish(), 30))
        assert event.task_instance_state == "failed" and "Catalog Error" in event.xcoms["return_value"]["message"]
    finally:
        server.stop()
