"""The warehouse connection resolved to a SQL hook: RetrainDuckDBHook for DuckDB files, PostgresHook for Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest
from airflow.exceptions import AirflowNotFoundException
from airflow.providers.postgres.hooks.postgres import PostgresHook

from airflow_retrain.hooks.duckdb import RetrainDuckDBHook
from airflow_retrain.hooks.warehouse import WarehouseHook, get_warehouse_hook, sql_hook_for
from airflow_retrain.teardown.ledger import CostLedger, LedgerEntry


def _duck_conn(monkeypatch, name: str, conn_type: str, path) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps({"conn_type": conn_type, "host": str(path)}))
    return name


@pytest.mark.parametrize("conn_type", ["retrain_duckdb", "duckdb"])
def test_duckdb_connections_resolve_to_the_duckdb_hook(tmp_path, monkeypatch, conn_type):
    conn_id = _duck_conn(monkeypatch, "wh_duck", conn_type, tmp_path / "w.duckdb")
    hook = get_warehouse_hook(conn_id)
    assert type(hook) is RetrainDuckDBHook
    assert hook.database_path == str(tmp_path / "w.duckdb")
    assert WarehouseHook(conn_id).params.kind == "duckdb"
    assert WarehouseHook(conn_id).describe() == f"duckdb:{tmp_path / 'w.duckdb'}"


def test_postgres_connection_resolves_to_postgres_hook_without_dbts_schema_in_the_driver_args(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WH_PG",
        json.dumps({"conn_type": "postgres", "host": "db", "port": 5433, "login": "u", "password": "s3cret",
                    "schema": "warehouse", "extra": {"schema": "analytics", "sslmode": "disable"}}),
    )
    hook = get_warehouse_hook("wh_pg")
    assert type(hook) is PostgresHook
    # libpq rejects unknown connection options: dbt's schema stays ours, the driver's options pass through.
    assert hook.connection.extra_dejson == {"sslmode": "disable"}
    assert (hook.connection.host, hook.connection.port, hook.connection.schema) == ("db", 5433, "warehouse")
    assert hook.placeholder == "%s"
    wh = WarehouseHook("wh_pg")
    assert wh.params.schema == "analytics" and wh.params.conn_id == "wh_pg"
    assert wh.describe() == "postgres://db:5433/warehouse (schema analytics)"
    # The ledger, which keeps resolved params, reaches the same connection.
    assert sql_hook_for(wh.params).connection.extra_dejson == {"sslmode": "disable"}


def test_undefined_default_is_the_embedded_duckdb_and_a_named_missing_connection_is_an_error(state_dir):
    hook = get_warehouse_hook()
    assert type(hook) is RetrainDuckDBHook and hook.database_path == str(state_dir / "warehouse.duckdb")
    assert get_warehouse_hook(None).database_path == hook.database_path
    with pytest.raises(AirflowNotFoundException):
        get_warehouse_hook("no_such_warehouse")


def test_unsupported_connection_type_names_connection_and_type(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WH_HTTP", json.dumps({"conn_type": "http", "host": "example.com"}))
    with pytest.raises(ValueError, match=r"connection 'wh_http' has type 'http'; .*retrain_duckdb, duckdb, postgres"):
        get_warehouse_hook("wh_http")


def test_duckdb_connection_without_a_path_is_named(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WH_NOPATH", json.dumps({"conn_type": "retrain_duckdb"}))
    with pytest.raises(ValueError, match="connection 'wh_nopath': set host to the DuckDB file path"):
        get_warehouse_hook("wh_nopath")


def test_duckdb_hook_speaks_the_dbapihook_api(tmp_path, monkeypatch):
    conn_id = _duck_conn(monkeypatch, "wh_api", "retrain_duckdb", tmp_path / "sub" / "w.duckdb")
    hook = RetrainDuckDBHook(conn_id)
    hook.run(["create schema s", "create table s.t (id integer, name varchar, ok boolean)"])
    hook.insert_rows("s.t", [(1, "a", True), (2, None, False), (3, "c", True)], target_fields=["id", "name", "ok"])
    assert hook.get_records("select id, name from s.t where ok = ? order by id", parameters=[True]) == [(1, "a"), (3, "c")]
    assert hook.get_first("select count(*) from s.t") == (3,)
    df = hook.get_df("select * from s.t order by id")
    assert list(df["id"]) == [1, 2, 3] and df["ok"].dtype == bool  # DuckDB's own column types
    assert df["name"].isna().tolist() == [False, True, False]


def test_read_table_through_a_retrain_duckdb_connection(tmp_path, monkeypatch):
    import duckdb

    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema marts; create table marts.f as select range as id, range % 2 = 0 as even from range(5)")
    conn_id = _duck_conn(monkeypatch, "wh_read", "retrain_duckdb", path)
    df = WarehouseHook(conn_id).read_table('"w"."marts"."f"', columns=["id", "even"])
    pd.testing.assert_frame_equal(df, pd.DataFrame({"id": range(5), "even": [True, False, True, False, True]}),
                                  check_dtype=False)


def test_read_table_of_a_missing_file_names_it(tmp_path, monkeypatch):
    conn_id = _duck_conn(monkeypatch, "wh_gone", "retrain_duckdb", tmp_path / "gone.duckdb")
    with pytest.raises(FileNotFoundError, match=f"DuckDB warehouse {tmp_path / 'gone.duckdb'} does not exist"):
        WarehouseHook(conn_id).read_table("marts.f")
    assert not (tmp_path / "gone.duckdb").exists()  # a read never creates the file


def test_cost_ledger_on_a_retrain_duckdb_connection(tmp_path, monkeypatch):
    conn_id = _duck_conn(monkeypatch, "wh_ledger", "retrain_duckdb", tmp_path / "w.duckdb")
    ledger = CostLedger.from_connection(conn_id)
    now = datetime(2026, 11, 23, 10, tzinfo=UTC)
    entry = LedgerEntry("e1", now, "churn", "training_job", "job-1", "local", "local", None, 1, 60.0, 0.0, 0.5,
                        "on_demand", None, "training_run", {"k": "v"})
    assert ledger.write([entry]) == 1
    assert ledger.write([entry]) == 1  # replaced, not duplicated
    (row,) = ledger.rows()
    assert (row["entry_id"], row["usd"], row["details"], row["ts"]) == ("e1", 0.5, {"k": "v"}, now)
    assert RetrainDuckDBHook(conn_id).get_first("select count(*) from retrain_ledger.entries") == (1,)
