"""A Postgres warehouse through the Postgres provider's PostgresHook (the ``retrain_warehouse`` resolver).

`scripts/services.sh start` provides the server (RETRAIN_TEST_PG_URL); without it this skips locally and
fails in CI (RETRAIN_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import json
import os
import uuid
from urllib.parse import urlparse

import pytest

from airflow_retrain.hooks.warehouse import WarehouseHook, get_warehouse_hook

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_warehouse(monkeypatch) -> str:
    value = os.environ.get("RETRAIN_TEST_PG_URL")
    if not value:
        if os.environ.get("RETRAIN_REQUIRE_SERVICES") == "1":
            pytest.fail("RETRAIN_TEST_PG_URL is not set: start the services with scripts/services.sh start")
        pytest.skip("RETRAIN_TEST_PG_URL not set (scripts/services.sh start provides it)")
    url = urlparse(value)
    # extra.schema is dbt's schema; PostgresHook would hand it to libpq, which rejects it.
    conn = {"conn_type": "postgres", "host": url.hostname, "port": url.port, "login": url.username,
            "password": url.password, "schema": url.path.lstrip("/"), "extra": {"schema": "analytics"}}
    monkeypatch.setenv("AIRFLOW_CONN_PG_WAREHOUSE", json.dumps(conn))
    return "pg_warehouse"


def test_postgres_warehouse_through_postgres_hook(pg_warehouse):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    schema = f"t_{uuid.uuid4().hex[:8]}"
    hook = get_warehouse_hook(pg_warehouse)
    assert isinstance(hook, PostgresHook)
    try:
        hook.run([f"create schema {schema}", f"create table {schema}.f (id integer, churned boolean, v double precision)"])
        hook.insert_rows(f"{schema}.f", [(1, True, 0.5), (2, False, None)], target_fields=["id", "churned", "v"])
        assert hook.get_records(f"select id from {schema}.f where churned = %s", parameters=(True,)) == [(1,)]
        df = WarehouseHook(pg_warehouse).read_table(f'"{schema}"."f"', columns=["id", "churned", "v"])
        assert df.sort_values("id")["churned"].tolist() == [True, False]
        assert df["v"].isna().sum() == 1
    finally:
        hook.run(f"drop schema if exists {schema} cascade")
