"""The warehouse dbt builds and the export reads, from one Airflow connection.

:func:`get_warehouse_hook` resolves a connection id to the SQL hook that serves it:

- ``postgres`` / ``postgresql`` → the Postgres provider's ``PostgresHook`` (``host``, ``port``, ``login``,
  ``password``, ``schema`` = database; extra ``{"schema": "analytics"}`` = the dbt schema);
- ``retrain_duckdb``, and ``duckdb`` connections defined before → :class:`RetrainDuckDBHook` (``host`` =
  the database file);
- no connection id, or the default ``retrain_warehouse`` while it is not defined → the embedded DuckDB
  warehouse at ``<state dir>/warehouse.duckdb``. A named connection that does not exist is an error, never
  a silent fallback.

:class:`WarehouseHook` wraps that hook for the package's operators: the connection as
:class:`WarehouseParams` (the env vars ``dbt/profiles.yml`` reads, so analysts and DAGs share one
profile), a credential-free description, and a table read into pandas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_retrain.config import state_dir
from airflow_retrain.hooks.duckdb import DUCKDB_CONN_TYPES, RetrainDuckDBHook

if TYPE_CHECKING:
    import pandas as pd
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import Connection

DEFAULT_WAREHOUSE_CONN_ID = "retrain_warehouse"
POSTGRES_CONN_TYPES = ("postgres", "postgresql")
# Keys of a postgres connection's extra that are ours (dbt's schema), not libpq parameters: PostgresHook
# passes every other extra key to the driver, which rejects unknown ones.
_DBT_EXTRA_KEYS = ("schema",)


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
    conn_id: str | None = None  # the Airflow connection; None: the embedded warehouse

    def describe(self) -> str:
        """Where the warehouse is, without credentials (safe for logs and XCom)."""
        if self.kind == "duckdb":
            return f"duckdb:{self.duckdb_path}"
        return f"postgres://{self.host}:{self.port}/{self.dbname} (schema {self.schema})"


def get_warehouse_hook(
    conn_id: str | None = DEFAULT_WAREHOUSE_CONN_ID, *, lock_timeout_seconds: float = 300.0
) -> DbApiHook:
    """The SQL hook serving the warehouse connection ``conn_id`` (see the module docstring).

    :param conn_id: Airflow connection id; ``None`` means the embedded DuckDB warehouse.
    :param lock_timeout_seconds: for DuckDB, how long to wait while another process holds the file.
    :raises AirflowNotFoundException: a named connection (other than the default) is not defined.
    :raises ValueError: the connection's type is neither DuckDB nor Postgres.
    """
    return resolve_warehouse(conn_id, lock_timeout_seconds=lock_timeout_seconds)[0]


def resolve_warehouse(
    conn_id: str | None = DEFAULT_WAREHOUSE_CONN_ID, *, lock_timeout_seconds: float = 300.0
) -> tuple[DbApiHook, WarehouseParams]:
    """The SQL hook of :func:`get_warehouse_hook` and the connection's settings as :class:`WarehouseParams`."""
    conn = None
    if conn_id is not None:
        try:
            conn = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            if conn_id != DEFAULT_WAREHOUSE_CONN_ID:
                raise
    if conn is None:
        duck = RetrainDuckDBHook.for_path(
            state_dir() / "warehouse.duckdb", conn_id=DEFAULT_WAREHOUSE_CONN_ID, lock_timeout_seconds=lock_timeout_seconds
        )
        return duck, WarehouseParams(kind="duckdb", duckdb_path=duck.database_path)
    if conn.conn_type in DUCKDB_CONN_TYPES:
        duck = RetrainDuckDBHook(conn_id, connection=conn, lock_timeout_seconds=lock_timeout_seconds)
        return duck, WarehouseParams(kind="duckdb", duckdb_path=duck.database_path, conn_id=conn_id)
    if conn.conn_type in POSTGRES_CONN_TYPES:
        extra = conn.extra_dejson
        params = WarehouseParams(
            kind="postgres",
            host=conn.host or "localhost",
            port=int(conn.port or 5432),
            user=conn.login,
            password=conn.password,
            dbname=conn.schema or extra.get("dbname"),
            schema=extra.get("schema", "public"),
            conn_id=conn_id,
        )
        return _postgres_hook(conn), params
    raise ValueError(
        f"connection {conn_id!r} has type {conn.conn_type!r}; an airflow-retrain warehouse is a "
        f"{', '.join(DUCKDB_CONN_TYPES + POSTGRES_CONN_TYPES)} connection"
    )


def sql_hook_for(params: Any, *, lock_timeout_seconds: float = 300.0) -> DbApiHook:
    """The SQL hook serving already resolved :class:`WarehouseParams` (the cost ledger keeps those)."""
    if params.kind == "duckdb":
        return RetrainDuckDBHook.for_path(
            params.duckdb_path, conn_id=getattr(params, "conn_id", None), lock_timeout_seconds=lock_timeout_seconds
        )
    if params.kind != "postgres":
        raise ValueError(f"no SQL hook for a {params.kind!r} warehouse")
    if params.conn_id:
        return get_warehouse_hook(params.conn_id)
    from airflow.sdk import Connection

    return _postgres_hook(
        Connection(
            conn_id=DEFAULT_WAREHOUSE_CONN_ID, conn_type="postgres", host=params.host, port=params.port,
            login=params.user, password=params.password, schema=params.dbname,
        )
    )


def _postgres_hook(conn: Connection) -> DbApiHook:
    try:
        from airflow.providers.postgres.hooks.postgres import PostgresHook
    except ImportError as e:
        raise ImportError(
            f"connection {conn.conn_id!r} is a postgres warehouse: install the Postgres provider "
            f"(pip install 'airflow-retrain[postgres]'): {e}"
        ) from e
    extra = conn.extra_dejson
    if any(key in extra for key in _DBT_EXTRA_KEYS):
        from airflow.sdk import Connection

        driver_extra = {k: v for k, v in extra.items() if k not in _DBT_EXTRA_KEYS}
        conn = Connection(
            conn_id=conn.conn_id, conn_type=conn.conn_type, description=conn.description, host=conn.host,
            schema=conn.schema, login=conn.login, password=conn.password, port=conn.port,
            extra=json.dumps(driver_extra),
        )
    # The connection already fetched: PostgresHook would look it up again.
    return PostgresHook(postgres_conn_id=conn.conn_id, connection=conn)


class WarehouseHook(BaseHook):
    """The feature warehouse, for dbt (profile env vars) and the export (a table into pandas).

    :param warehouse_conn_id: Airflow connection of type ``retrain_duckdb`` (or ``duckdb``) or ``postgres``;
        ``None``, or the default ``retrain_warehouse`` while it is not defined, means the embedded DuckDB
        warehouse.
    :param lock_timeout_seconds: for DuckDB, how long to wait while another process holds the file.
    """

    default_conn_name = DEFAULT_WAREHOUSE_CONN_ID

    def __init__(
        self,
        warehouse_conn_id: str | None = default_conn_name,
        lock_timeout_seconds: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.warehouse_conn_id = warehouse_conn_id
        self.lock_timeout_seconds = lock_timeout_seconds

    @cached_property
    def _resolved(self) -> tuple[DbApiHook, WarehouseParams]:
        return resolve_warehouse(self.warehouse_conn_id, lock_timeout_seconds=self.lock_timeout_seconds)

    @property
    def sql_hook(self) -> DbApiHook:
        """The SQL hook serving the connection (:func:`get_warehouse_hook`)."""
        return self._resolved[0]

    @property
    def params(self) -> WarehouseParams:
        """The connection's settings (they hold the password: never log them, use :meth:`describe`)."""
        return self._resolved[1]

    def describe(self) -> str:
        """Where the warehouse is, without credentials (safe for logs and XCom)."""
        return self.params.describe()

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
        """Read a whole relation (as dbt names it, e.g. ``"db"."marts"."churn_features"``) into pandas."""
        cols = ", ".join(_quote(c) for c in columns) if columns else "*"
        sql = f"SELECT {cols} FROM {relation}"  # relation comes from dbt's manifest, not from users
        hook = self.sql_hook
        if isinstance(hook, RetrainDuckDBHook):
            # Read-only: the exports of several pipelines may read the file at once.
            hook = RetrainDuckDBHook(
                hook.get_conn_id(), connection=hook.connection, read_only=True,
                lock_timeout_seconds=self.lock_timeout_seconds,
            )
        return hook.get_df(sql)

    def connect_duckdb(self, read_only: bool = True):
        """A DuckDB connection to the warehouse (waiting while another process holds the file's lock).

        :raises TypeError: the warehouse is not DuckDB.
        """
        hook = self.sql_hook
        if not isinstance(hook, RetrainDuckDBHook):
            raise TypeError(f"warehouse {self.describe()} is not a DuckDB file")
        return hook.connect_duckdb(read_only=read_only)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
