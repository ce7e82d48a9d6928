"""The dbt stage's tasks running real dbt on tests/fixtures/dbt_shop: results, evidence, and each bad input."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from airflow.sdk.exceptions import AirflowFailException
from helpers import alive, bound, wait_for

from airflow_retrain.dbt.manifest import load_index, partial_parse_file
from airflow_retrain.dbt.results import read_current, read_done, read_node_status, run_status_root
from airflow_retrain.hooks.dbt import DbtCommandError, DbtHook, DbtTimeoutError
from airflow_retrain.operators.dbt import DbtBuildOperator, DbtEvidenceGateOperator

ROOT = Path(__file__).resolve().parents[2]
REAL_DBT = str(Path(sys.executable).with_name("dbt"))


@pytest.fixture
def shop(shop_project, tmp_path) -> Path:
    project = tmp_path / "shop"
    shutil.copytree(shop_project, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    return project


def build_op(project, **kwargs) -> DbtBuildOperator:
    kwargs.setdefault("warehouse_conn_id", None)
    return DbtBuildOperator(task_id="dbt_build", pipeline="unit", project_dir=str(project), **kwargs)


def status_dir(ctx, artifact_root=None):
    root = run_status_root(ctx["dag"].dag_id, ctx["run_id"], artifact_root)
    return root / read_current(root)["attempt"]


@pytest.mark.slow
def test_build_reports_every_node_counts_seeds_and_real_target(shop, make_context):
    ctx = make_context(run_id="manual__ok")
    summary = build_op(shop).execute(ctx)
    assert (summary["seeds_loaded"], summary["snapshots_built"], summary["models_built"]) == (3, 1, 6)
    assert summary["tests_passed"] == summary["tests_total"] == 14
    assert summary["warehouse"] == f"duckdb:{shop / 'shop.duckdb'} (profile shop, target dev)"
    assert summary["relations"]["customers"] == '"shop"."main"."customers"'
    assert ctx["ti"].xcoms["verdict"]["passed"] is True and ctx["ti"].xcoms["relations"] == summary["relations"]
    sdir = status_dir(ctx)
    assert read_node_status(sdir, "model.shop.customers")["status"] == "success"
    assert read_node_status(sdir, "snapshot.shop.orders_snapshot")["status"] == "success"
    assert read_done(sdir)["state"] == "success"
    assert load_index(shop).project_name == "shop"  # the build cached the manifest for the next parse
    assert partial_parse_file(shop, "dev").is_file()  # and kept dbt's partial parsing for the next run


@pytest.mark.slow
def test_failing_test_names_node_and_cause_and_independent_branches_finish(shop, make_context):
    seed = shop / "seeds" / "raw_customers.csv"
    seed.write_text(seed.read_text() + "1,Again,Z.\n")  # a duplicate customer id
    ctx = make_context(run_id="manual__dup")
    with pytest.raises(AirflowFailException) as e:
        build_op(shop).execute(ctx)
    message = str(e.value)
    assert "unique_stg_customers_customer_id fail" in message and "\x1b[" not in message
    verdict = ctx["ti"].xcoms["verdict"]
    assert verdict["passed"] is False and "unique_stg_customers_customer_id" in verdict["message"]
    sdir = status_dir(ctx)
    assert read_node_status(sdir, "model.shop.events_daily")["status"] == "success"  # another branch
    assert read_node_status(sdir, "model.shop.customers")["status"] == "skipped"  # downstream of the failure
    assert read_done(sdir)["state"] == "failed"


@pytest.mark.slow
def test_missing_raw_table_names_the_database_error(make_context, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_EMPTY", f'{{"conn_type": "duckdb", "host": "{tmp_path / "empty.duckdb"}"}}')
    op = DbtBuildOperator(
        task_id="dbt_build", pipeline="unit", project_dir=str(ROOT / "dbt"), select=["+churn_features"],
        warehouse_conn_id="unit_empty",
    )  # fmt: skip
    with pytest.raises(AirflowFailException) as e:
        op.execute(make_context(run_id="manual__empty"))
    assert "source_not_null_raw_telco_customers_customer_id error" in str(e.value)
    assert 'Catalog Error: Table with name "raw.telco_customers" does not exist' in str(e.value)


@pytest.mark.slow
def test_compile_error_fails_without_retry_naming_the_file(shop, make_context):
    (shop / "models" / "marts" / "orders.sql").write_text("select * from {{ ref('no_such_model') }}\n")
    with pytest.raises(AirflowFailException, match=r"does not compile.*orders.*no_such_model") as e:
        build_op(shop).execute(make_context(run_id="manual__compile"))
    assert "models/marts/orders.sql" in str(e.value) and "\x1b[" not in str(e.value)


@pytest.mark.slow
def test_selection_matching_nothing_fails_naming_the_selector(shop, make_context):
    with pytest.raises(AirflowFailException, match=r"selection 'no_such_thing' matches no node") as e:
        build_op(shop, select=["no_such_thing"]).execute(make_context(run_id="manual__nothing"))
    # the build cached its manifest and dbt's selection on it: the error names the manifest dbt checked
    assert "dbt selector 'no_such_thing' matches no node (checked by dbt ls on manifest " in str(e.value)
    assert "manifest.json (fingerprint " in str(e.value)


def test_unknown_target_is_named(shop, make_context):
    ctx = make_context(run_id="manual__target")
    with pytest.raises(AirflowFailException, match=r"target 'prod' is not an output of profile 'shop'"):
        build_op(shop, target="prod").execute(ctx)
    assert read_done(status_dir(ctx))["state"] == "failed"  # the node tasks end too


@pytest.mark.slow
def test_node_tasks_read_statuses_from_a_non_default_artifact_root(shop, make_context, tmp_path):
    """dbt_build hands per-node status to the node tasks through the run's artifact store, not a shared disk."""
    from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSkipException

    from airflow_retrain.operators.dbt import DbtNodeOperator

    root = f"file://{tmp_path / 'store'}"
    ctx = make_context(run_id="manual__store")
    build_op(shop, select=["+customers"], artifact_root=root).execute(ctx)
    sdir = status_dir(ctx, root)
    assert str(sdir).startswith(f"{root}/{ctx['dag'].dag_id}/") and str(sdir).endswith("/dbt/status/0-1")
    assert read_node_status(sdir, "model.shop.customers")["status"] == "success"
    assert not run_status_root(ctx["dag"].dag_id, ctx["run_id"]).exists()  # nothing on the default store

    def node(uid: str, **kwargs) -> DbtNodeOperator:
        return DbtNodeOperator(
            task_id=uid.rsplit(".", 1)[-1], unique_id=uid, test_ids=[], stream=False, status_dag_id=ctx["dag"].dag_id,
            status_run_id=ctx["run_id"], status_clear_number=0, **kwargs,
        )  # fmt: skip

    done = node("model.shop.customers", artifact_root=root).execute(make_context(run_id="manual__store"))
    assert done["state"] == "success" and done["results"][0]["unique_id"] == "model.shop.customers"
    with pytest.raises(AirflowSkipException, match="events_daily was not built"):  # outside the selection
        node("model.shop.events_daily", artifact_root=root).execute(make_context(run_id="manual__store"))
    with pytest.raises(AirflowRescheduleException):  # another store holds nothing for this run: it checks again
        node("model.shop.customers").execute(make_context(run_id="manual__store"))


def _fake_dbt(tmp_path, body: str) -> str:
    exe = tmp_path / "dbt"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_hanging_dbt_is_killed_with_its_children_at_the_timeout(tmp_path):
    pids = tmp_path / "pids"
    exe = _fake_dbt(tmp_path, f"sleep 300 &\necho $$ $! > {pids}\nwait\n")
    hook = DbtHook(tmp_path, dbt_executable=exe)
    start = time.monotonic()
    with pytest.raises(DbtTimeoutError, match="ran past its timeout of 2 s and was killed"):
        hook.run("build", target_path=tmp_path / "t", timeout=2)
    assert time.monotonic() - start < 30
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda pid=pid: not alive(pid), timeout=10)


def test_on_kill_stops_dbt_and_its_children(shop, make_context, tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    monkeypatch.setenv("RETRAIN_DBT_EXECUTABLE", _fake_dbt(tmp_path, f"sleep 300 &\necho $$ $! > {pids}\nwait\n"))
    op = build_op(shop)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(make_context(run_id="manual__kill"))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(pids.exists, timeout=60)
    op.on_kill()
    worker.join(timeout=bound(30))
    assert len(errors) == 1 and isinstance(errors[0], DbtCommandError) and "was stopped (the task was killed)" in str(errors[0])
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda pid=pid: not alive(pid), timeout=10)


@pytest.mark.slow
def test_dbt_process_environment_holds_only_what_the_profile_needs(make_context, tmp_path, monkeypatch, warehouse):
    """Read the real dbt process's environment (/proc/<pid>/environ) with secrets planted in the worker's."""
    planted = {
        "AIRFLOW_CONN_SOME_API": "http://user:conn-secret@api", "MLFLOW_TRACKING_PASSWORD": "ml-secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret", "AZURE_CLIENT_SECRET": "az-secret", "OPENAI_API_KEY": "sk-secret",
        "GITHUB_TOKEN": "gh-secret", "PGPASSWORD": "pg-secret",
    }  # fmt: skip
    for key, value in planted.items():
        monkeypatch.setenv(key, value)
    environ = tmp_path / "environ"
    monkeypatch.setenv("RETRAIN_DBT_EXECUTABLE", _fake_dbt(tmp_path, f"cat /proc/$$/environ > {environ}\nexec {REAL_DBT} \"$@\"\n"))
    op = DbtBuildOperator(
        task_id="dbt_build", pipeline="unit", project_dir=str(ROOT / "dbt"), select=["stg_telco_customers"],
        warehouse_conn_id=None,
    )  # fmt: skip
    op.execute(make_context(run_id="manual__env"))
    env = dict(item.split("=", 1) for item in environ.read_text().split("\0") if "=" in item)
    assert not set(planted) & set(env), set(planted) & set(env)
    assert not any(v in environ.read_text() for v in planted.values())
    assert env["RETRAIN_DUCKDB_PATH"] == str(warehouse) and env["RETRAIN_DBT_TARGET"] == "duckdb"
    assert set(env) <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                        "SHELL", "SSL_CERT_FILE", "SSL_CERT_DIR", "VIRTUAL_ENV", "RETRAIN_DBT_TARGET",
                        "RETRAIN_DUCKDB_PATH", "DBT_SEND_ANONYMOUS_USAGE_STATS", "DO_NOT_TRACK", "PWD", "SHLVL", "_"}


@pytest.mark.slow
def test_evidence_gate_blocks_on_a_stale_source(shop, make_context):
    with duckdb.connect(str(shop / "shop.duckdb")) as con:  # the loader last ran two days ago
        con.execute("create schema ext")
        con.execute("create table ext.events as select range as id, 'e' as kind, now() - interval 2 day as loaded_at from range(5)")
    ctx = make_context(run_id="manual__fresh")
    build_op(shop, select=["source:ext+"]).execute(ctx)
    gate = DbtEvidenceGateOperator(
        task_id="gate_dbt", pipeline="unit", build_verdict=ctx["ti"].xcoms["verdict"], project_dir=str(shop),
        sources=["source:ext.events"], warehouse_conn_id=None,
    )  # fmt: skip
    with pytest.raises(AirflowFailException, match=r"dbt evidence failed .*ext\.events freshness error: last loaded 48\.\d h ago \(error after 24 h\)"):
        gate.execute(make_context(run_id="manual__fresh"))
    with duckdb.connect(str(shop / "shop.duckdb")) as con:
        con.execute("update ext.events set loaded_at = now() - interval 13 hour")
    verdict = gate.execute(make_context(run_id="manual__fresh"))
    assert verdict["passed"] is True and "1 warned" in verdict["message"]
    assert {c["name"] for c in verdict["checks"]} >= {"freshness:source.shop.ext.events"}


@pytest.mark.slow
def test_project_without_profiles_gets_one_generated_from_the_connection(shop, make_context, tmp_path, monkeypatch):
    (shop / "profiles.yml").unlink()
    db = tmp_path / "from_conn.duckdb"
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_WH", f'{{"conn_type": "duckdb", "host": "{db}"}}')
    summary = build_op(shop, warehouse_conn_id="shop_wh", select=["+stg_customers"]).execute(make_context(run_id="manual__gen"))
    assert summary["warehouse"] == f"duckdb:{db} (profile shop, target duckdb)" and db.exists()
    assert os.environ.get("DBT_ENV_SECRET_RETRAIN_PASSWORD") is None


@pytest.mark.slow
def test_evidence_gate_records_a_failed_build(shop, make_context):
    failed = {"gate": "dbt", "passed": False, "message": "m", "checks": [
        {"name": "test.shop.unique_x.1", "observed": 2.0, "min": None, "max": 0.0, "passed": False,
         "reason": "test unique_x fail (2 failing rows): Got 2 results, configured to fail if != 0"}]}  # fmt: skip
    gate = DbtEvidenceGateOperator(
        task_id="gate_dbt", pipeline="unit", project_dir=str(shop), warehouse_conn_id=None,
        mlflow_conn_id="mlflow_default", experiment="retrain/unit-dbt-evidence",
    )  # fmt: skip
    assert gate.trigger_rule == "all_done"  # runs after a failed dbt_build, to record why
    ctx = make_context(run_id="manual__gate", pulled={"dbt_build": failed})
    with pytest.raises(AirflowFailException, match=r"unique_x fail \(2 failing rows\): Got 2 results"):
        gate.execute(ctx)
    # pushed before failing, as the other gates do: the run's outcome names the failed checks
    assert [c["name"] for c in ctx["ti"].xcoms["verdicts"][0]["checks"]] == ["test.shop.unique_x.1"]
    from airflow_retrain.hooks.mlflow import MlflowHook

    client = MlflowHook("mlflow_default").client  # the verdict is on an MLflow run of the pipeline
    exp = client.get_experiment_by_name("retrain/unit-dbt-evidence")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["retrain.gate.dbt"] == "failed" and "unique_x fail" in run.data.tags["retrain.gate.dbt.message"]
    with pytest.raises(AirflowFailException, match=r"dbt_build produced no dbt results"):
        gate.execute(make_context(run_id="manual__gate2"))
