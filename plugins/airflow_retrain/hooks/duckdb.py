"""RetrainDuckDBHook: a DuckDB database file as a ``DbApiHook`` (``run``, ``get_records``, ``insert_rows``, ``get_df``).

Connection type ``retrain_duckdb``: ``host`` = path of the database file. The type is our own, so it never
clashes with the ``duckdb`` type that ``airflow-provider-duckdb`` registers; connections of type ``duckdb``
defined before are still read (``host``, else ``schema``, is the path).

A DuckDB file has one writing process at a time (a pipeline's ``dbt build``, an analyst's ``dbt build``, the
cost ledger). Tasks of one Airflow deployment are serialised by the warehouse pool; :meth:`connect_duckdb`
waits (bounded) for the rest and fails with the file and the lock holder named when the lock never frees.
"""

from __future__ import annotations

import time
from contextlib import closing
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.sql.hooks.sql import DbApiHook

from airflow_retrain.config import EMBEDDED_WAREHOUSE_POOL

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

#: Connection types this hook reads: its own, and the one of airflow-provider-duckdb users may already have.
DUCKDB_CONN_TYPES = ("retrain_duckdb", "duckdb")


class RetrainDuckDBHook(DbApiHook):
    """Interact with a DuckDB database file.

    :param duckdb_conn_id: Airflow connection of type ``retrain_duckdb`` (or ``duckdb``) whose ``host`` is
        the database file.
    :param read_only: open the file read-only (several readers may share it; a writer needs it alone).
    :param lock_timeout_seconds: how long to wait while another process holds the file's write lock.
    :param poll_seconds: first wait between attempts to open a locked file (doubles up to 5 s).
    """

    conn_name_attr = "duckdb_conn_id"
    default_conn_name = "retrain_warehouse"
    conn_type = "retrain_duckdb"
    hook_name = "DuckDB file (airflow-retrain)"
    supports_executemany = True
    # DuckDB's Python client binds ``?`` (``$1`` too); DbApiHook defaults to ``%s``.
    _placeholder = "?"

    def __init__(
        self,
        *args: Any,
        read_only: bool = False,
        lock_timeout_seconds: float = 300.0,
        poll_seconds: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.read_only = read_only
        self.lock_timeout_seconds = lock_timeout_seconds
        self.poll_seconds = poll_seconds

    @classmethod
    def for_path(cls, path: str | Path, conn_id: str | None = None, **kwargs: Any) -> RetrainDuckDBHook:
        """A hook on a database file without an Airflow connection (the embedded warehouse).

        :param path: the database file.
        :param conn_id: the connection id the hook reports (e.g. the undefined default it stands in for).
        """
        from airflow.sdk import Connection

        conn_id = conn_id or cls.default_conn_name
        connection = Connection(conn_id=conn_id, conn_type=cls.conn_type, host=str(path))
        return cls(conn_id, connection=connection, **kwargs)

    @cached_property
    def database_path(self) -> str:
        """The database file of the connection (``~`` expanded)."""
        conn = self.connection
        if conn.conn_type not in DUCKDB_CONN_TYPES:
            raise ValueError(
                f"connection {self.get_conn_id()!r} has type {conn.conn_type!r}; RetrainDuckDBHook reads "
                f"{' or '.join(DUCKDB_CONN_TYPES)} connections"
            )
        path = conn.host or conn.schema
        if not path:
            raise ValueError(f"connection {self.get_conn_id()!r}: set host to the DuckDB file path")
        return str(Path(path).expanduser())

    def get_uri(self) -> str:
        """The database as a ``duckdb_engine`` SQLAlchemy URI."""
        return f"duckdb:///{self.database_path}"

    def get_conn(self) -> duckdb.DuckDBPyConnection:
        """Open the database file (read-only when the hook is), waiting while another process holds its lock."""
        return self.connect_duckdb(read_only=self.read_only)

    def connect_duckdb(self, read_only: bool | None = None) -> duckdb.DuckDBPyConnection:
        """Connect to the database file, waiting (bounded) while another process holds its file lock.

        :param read_only: open read-only (default: the hook's ``read_only``); a writer creates the file's
            folder and needs the lock to itself.
        :raises FileNotFoundError: a read-only open of a file that does not exist.
        :raises TimeoutError: the lock was still held after ``lock_timeout_seconds``.
        """
        import duckdb

        read_only = self.read_only if read_only is None else read_only
        path = self.database_path
        if read_only and not Path(path).exists():
            raise FileNotFoundError(f"DuckDB warehouse {path} does not exist")
        if not read_only:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        wait = self.poll_seconds
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
                        f"share it in the {EMBEDDED_WAREHOUSE_POOL!r} pool, or stop the process holding the lock"
                    ) from None
                if attempts == 1:
                    self.log.warning(
                        "DuckDB warehouse %s is locked by another process; waiting up to %.0f s",
                        path,
                        self.lock_timeout_seconds,
                    )
                time.sleep(min(wait, remaining))
                wait = min(wait * 2, 5.0)

    def get_df(self, sql: str | list[str], parameters: Any = None, *, df_type: str = "pandas", **kwargs: Any):
        """Run ``sql`` and return a DataFrame; pandas frames come from DuckDB's own columnar export.

        DbApiHook would hand the raw connection to ``pandas.read_sql``, which supports only SQLAlchemy and
        sqlite3 connections and builds the frame row by row (losing DuckDB's column types).
        """
        if df_type != "pandas" or kwargs or not isinstance(sql, str):
            return super().get_df(sql, parameters, df_type=df_type, **kwargs)  # type: ignore[call-overload]
        with closing(self.get_conn()) as con:
            frame: pd.DataFrame = con.execute(sql, parameters).df()
        return frame

