"""WarehouseHook: the warehouse dbt builds and the export reads, from one Airflow connection.

Connection types: ``duckdb`` (``host`` = path of the database file) and ``postgres`` (``host``,
``port``, ``login``, ``password``, ``schema`` = database; extra ``{"schema": "public"}`` = dbt schema).
While the default connection ``retrain_warehouse`` is not defined (or the id is ``None``), the embedded
default is used: DuckDB at ``<state dir>/warehouse.duckdb``. A named connection that does not exist is an
error, never a silent fallback.
The same values become the env vars ``dbt/profiles.yml`` reads, so analysts and DAGs share one profile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowNotFoundException
from airflow.sdk import BaseHook

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class WarehouseParams:
    kind: str  # duckdb | postgres
    duckdb_path: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    dbname: str | None = None
    schema: str = "public"

    def describe(self) -> str:
        """Where the warehouse is, without credentials (safe for logs and XCom)."""
        if self.kind == "duckdb":
            return f"duckdb:{self.duckdb_path}"
        return f"postgres://{self.host}:{self.port}/{self.dbname} (schema {self.schema})"


class WarehouseHook(BaseHook):
    """Connect to the feature warehouse.

    :param warehouse_conn_id: Airflow connection of type ``duckdb`` or ``postgres``; ``None``, or the
        default ``retrain_warehouse`` while it is not defined, means the embedded DuckDB warehouse.
    """

    conn_name_attr = "warehouse_conn_id"
    default_conn_name = "retrain_warehouse"
    conn_type = "duckdb"
    hook_name = "DuckDB warehouse (airflow-retrain)"

    def __init__(
        self,
        warehouse_conn_id: str | None = default_conn_name,
        lock_timeout_seconds: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.warehouse_conn_id = warehouse_conn_id
        self.lock_timeout_seconds = lock_timeout_seconds

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["port", "login", "password", "schema", "extra"],
            "relabeling": {"host": "Database file path"},
        }

    @cached_property
    def params(self) -> WarehouseParams:
        conn = None
        if self.warehouse_conn_id is not None:
            try:
                conn = self.get_connection(self.warehouse_conn_id)
            except AirflowNotFoundException:
                if self.warehouse_conn_id != self.default_conn_name:
                    raise
        if conn is None:
            from airflow_retrain.spec import state_dir

            return WarehouseParams(kind="duckdb", duckdb_path=str(state_dir() / "warehouse.duckdb"))
        if conn.conn_type == "duckdb":
            path = conn.host or conn.schema
            if not path:
                raise ValueError(f"connection {self.warehouse_conn_id!r}: set host to the DuckDB file path")
            return WarehouseParams(kind="duckdb", duckdb_path=str(Path(path).expanduser()))
        if conn.conn_type in ("postgres", "postgresql"):
            extra = conn.extra_dejson
            return WarehouseParams(
                kind="postgres",
                host=conn.host or "localhost",
                port=int(conn.port or 5432),
                user=conn.login,
                password=conn.password,
                dbname=conn.schema or extra.get("dbname"),
                schema=extra.get("schema", "public"),
            )
        raise ValueError(
            f"connection {self.warehouse_conn_id!r} has type {conn.conn_type!r}; "
            "airflow-retrain supports duckdb and postgres warehouses"
        )

    def dbt_env(self) -> dict[str, str]:
        """Env vars for ``dbt/profiles.yml``; they hold the password, so never log them."""
        p = self.params
        if p.kind == "duckdb":
            return {"RETRAIN_DBT_TARGET": "duckdb", "RETRAIN_DUCKDB_PATH": p.duckdb_path or ""}
        env = {
            "RETRAIN_DBT_TARGET": "postgres",
            "RETRAIN_PG_HOST": p.host or "",
            "RETRAIN_PG_PORT": str(p.port),
            "RETRAIN_PG_USER": p.user or "",
            "RETRAIN_PG_DBNAME": p.dbname or "",
            "RETRAIN_PG_SCHEMA": p.schema,
        }
        if p.password:
            env["RETRAIN_PG_PASSWORD"] = p.password
        return env

    def read_table(self, relation: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a whole relation (as dbt names it, e.g. ``"db"."marts"."churn_features"``)."""
        cols = ", ".join(_quote(c) for c in columns) if columns else "*"
        sql = f"SELECT {cols} FROM {relation}"  # relation comes from dbt's manifest, not from users
        p = self.params
        if p.kind == "duckdb":

            if not Path(p.duckdb_path).exists():
                raise FileNotFoundError(f"DuckDB warehouse {p.duckdb_path} does not exist")
            with self.connect_duckdb(read_only=True) as con:
                return con.execute(sql).df()
        import pandas as pd
        import psycopg2

        with psycopg2.connect(
            host=p.host, port=p.port, user=p.user, password=p.password, dbname=p.dbname
        ) as con, con.cursor() as cur:
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            return pd.DataFrame(cur.fetchall(), columns=names)


    def connect_duckdb(self, read_only: bool = True, poll_seconds: float = 0.5):
        """Connect to the DuckDB warehouse, waiting (bounded) while another process holds its file lock.

        A DuckDB file has one writing process at a time (another pipeline's dbt build, an analyst's
        ``dbt build``). Tasks of the same Airflow deployment are serialised by the warehouse pool; this
        wait covers the rest, and fails with the file and the lock holder named when the lock never frees.

        :param read_only: open read-only (the export); a writer needs the lock to itself.
        :param poll_seconds: first wait between attempts (doubles up to 5 s).
        :raises TimeoutError: the lock was still held after ``lock_timeout_seconds``.
        """
        import duckdb

        path = self.params.duckdb_path
        deadline = time.monotonic() + self.lock_timeout_seconds
        wait = poll_seconds
        attempts = 0
        while True:
            attempts += 1
            try:
                return duckdb.connect(path, read_only=read_only)
            except duckdb.IOException as e:
                if "lock" not in str(e).lower():
                    raise
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"DuckDB warehouse {path} stayed locked by another process for "
                        f"{self.lock_timeout_seconds:.0f} s ({attempts} attempts): {e}. Run the pipelines that "
                        f"share it in the {_embedded_pool()!r} pool, or stop the process holding the lock"
                    ) from None
                if attempts == 1:
                    self.log.warning("DuckDB warehouse %s is locked by another process; waiting up to %.0f s",
                                     path, self.lock_timeout_seconds)
                time.sleep(min(wait, remaining))
                wait = min(wait * 2, 5.0)


def _embedded_pool() -> str:
    from airflow_retrain.spec import EMBEDDED_WAREHOUSE_POOL

    return EMBEDDED_WAREHOUSE_POOL


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'

