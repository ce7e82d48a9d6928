"""The monitoring tables in the warehouse: predictions per scoring run, and one record per monitoring run.

``retrain_predictions`` holds ``(pipeline, run_key, id, score, model_version, model_run_id, runtime,
scored_at)``; ``retrain_monitoring`` one row per scoring run with its drift, realised metric and decision.
Both are written per run in **one transaction** that first deletes the run's rows: a rerun replaces its
rows (never duplicates them) and a write failing half-way rolls back to the previous rows.

The tables live in the warehouse's default schema (DuckDB ``main``; Postgres: the connection's search
path); they are created on first write. Works on the embedded DuckDB file and on Postgres (DB-API).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from airflow_retrain.hooks.warehouse import WarehouseHook

PREDICTIONS_TABLE = "retrain_predictions"
MONITORING_TABLE = "retrain_monitoring"

_PREDICTIONS_DDL = f"""CREATE TABLE IF NOT EXISTS {PREDICTIONS_TABLE} (
    pipeline VARCHAR NOT NULL, run_key VARCHAR NOT NULL, id VARCHAR NOT NULL, score DOUBLE PRECISION,
    model_version VARCHAR NOT NULL, model_run_id VARCHAR NOT NULL, runtime VARCHAR NOT NULL,
    scored_at TIMESTAMP NOT NULL)"""
_MONITORING_DDL = f"""CREATE TABLE IF NOT EXISTS {MONITORING_TABLE} (
    pipeline VARCHAR NOT NULL, run_key VARCHAR NOT NULL, dag_run_id VARCHAR NOT NULL, measured_at TIMESTAMP NOT NULL,
    model_name VARCHAR NOT NULL, model_version VARCHAR NOT NULL, rows_scored BIGINT NOT NULL,
    drifted_features INTEGER, drifted_share DOUBLE PRECISION, prediction_psi DOUBLE PRECISION,
    realised_metric VARCHAR, realised_value DOUBLE PRECISION, champion_value DOUBLE PRECISION,
    crossed BOOLEAN NOT NULL, retrain_requested BOOLEAN NOT NULL, reason VARCHAR NOT NULL, details VARCHAR NOT NULL)"""
MONITORING_COLUMNS = (
    "pipeline", "run_key", "dag_run_id", "measured_at", "model_name", "model_version", "rows_scored",
    "drifted_features", "drifted_share", "prediction_psi", "realised_metric", "realised_value", "champion_value",
    "crossed", "retrain_requested", "reason", "details",
)
PREDICTION_COLUMNS = ("pipeline", "run_key", "id", "score", "model_version", "model_run_id", "runtime", "scored_at")


class MonitoringStore:
    """Read and write the monitoring tables through the pipeline's warehouse connection.

    :param warehouse: the :class:`~airflow_retrain.hooks.warehouse.WarehouseHook` of the spec's connection.
    """

    def __init__(self, warehouse: WarehouseHook) -> None:
        self.warehouse = warehouse

    @property
    def is_duckdb(self) -> bool:
        return self.warehouse.params.kind == "duckdb"

    def _connect(self):
        if self.is_duckdb:
            return self.warehouse.connect_duckdb(read_only=False)
        return self.warehouse.sql_hook.get_conn()

    def _transaction(self, work: Callable[[Any], None]) -> None:
        """Run ``work(connection)`` in one transaction: all of it is committed, or none of it."""
        conn = self._connect()
        try:
            if self.is_duckdb:
                conn.execute("BEGIN TRANSACTION")
                try:
                    work(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                try:
                    with conn.cursor() as cur:
                        work(cur)
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
        finally:
            conn.close()

    def replace_predictions(
        self,
        pipeline: str,
        run_key: str,
        frame: pd.DataFrame,
        *,
        model_version: str,
        model_run_id: str,
        runtime: str,
        before_insert: Callable[[], None] | None = None,
    ) -> int:
        """Replace this run's predictions with ``frame`` (columns ``id``, ``score``) in one transaction.

        :param before_insert: called after the delete, inside the transaction (tests inject a fault here).
        :return: the number of rows written.
        """
        rows = frame.assign(
            pipeline=pipeline, run_key=run_key, id=frame["id"].astype(str), model_version=str(model_version),
            model_run_id=model_run_id, runtime=runtime, scored_at=datetime.now(UTC).replace(tzinfo=None),
        )[list(PREDICTION_COLUMNS)]

        def work(conn: Any) -> None:
            conn.execute(_PREDICTIONS_DDL)
            conn.execute(f"DELETE FROM {PREDICTIONS_TABLE} WHERE pipeline = {self._p} AND run_key = {self._p}",
                         (pipeline, run_key))
            if before_insert is not None:
                before_insert()
            if self.is_duckdb:
                conn.register("retrain_new_predictions", rows)
                conn.execute(f"INSERT INTO {PREDICTIONS_TABLE} SELECT * FROM retrain_new_predictions")
                conn.unregister("retrain_new_predictions")
            else:
                placeholders = ", ".join([self._p] * len(PREDICTION_COLUMNS))
                conn.executemany(f"INSERT INTO {PREDICTIONS_TABLE} VALUES ({placeholders})",
                                 list(rows.itertuples(index=False, name=None)))

        self._transaction(work)
        return len(rows)

    def record(self, row: dict[str, Any]) -> None:
        """Replace this run's monitoring record with ``row`` (keys: :data:`MONITORING_COLUMNS`)."""
        values = dict(row)
        values["details"] = json.dumps(values.get("details") or {}, default=str, sort_keys=True)
        values.setdefault("measured_at", datetime.now(UTC).replace(tzinfo=None))
        ordered = tuple(values.get(c) for c in MONITORING_COLUMNS)

        def work(conn: Any) -> None:
            conn.execute(_MONITORING_DDL)
            conn.execute(f"DELETE FROM {MONITORING_TABLE} WHERE pipeline = {self._p} AND run_key = {self._p}",
                         (values["pipeline"], values["run_key"]))
            placeholders = ", ".join([self._p] * len(MONITORING_COLUMNS))
            conn.execute(f"INSERT INTO {MONITORING_TABLE} ({', '.join(MONITORING_COLUMNS)}) VALUES ({placeholders})",
                         ordered)

        self._transaction(work)

    def _missing_file(self) -> bool:
        """The embedded DuckDB file does not exist yet (nothing was ever written): every table is empty."""
        from pathlib import Path

        return self.is_duckdb and not Path(self.warehouse.params.duckdb_path or "").exists()

    @property
    def _p(self) -> str:
        return "?" if self.is_duckdb else "%s"

    def _query(self, sql: str, parameters: tuple) -> pd.DataFrame:
        """Rows of a query on the monitoring tables; empty when a table does not exist yet."""
        import pandas as pd

        if self._missing_file():
            return pd.DataFrame()
        conn = self.warehouse.connect_duckdb(read_only=True) if self.is_duckdb else self.warehouse.sql_hook.get_conn()
        try:
            if self.is_duckdb:
                tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
                if not all(t in tables for t in (PREDICTIONS_TABLE, MONITORING_TABLE) if t in sql):
                    return pd.DataFrame()
                return conn.execute(sql, parameters).df()
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s), to_regclass(%s)", (PREDICTIONS_TABLE, MONITORING_TABLE))
                exists = dict(zip((PREDICTIONS_TABLE, MONITORING_TABLE), cur.fetchone(), strict=True))
                if not all(exists[t] for t in exists if t in sql):
                    return pd.DataFrame()
                cur.execute(sql, parameters)
                columns = [d[0] for d in cur.description]
                return pd.DataFrame(cur.fetchall(), columns=columns)
        finally:
            conn.close()

    def relation_exists(self, relation: str) -> bool:
        """Whether ``relation`` (``schema.table`` from the spec, or dbt's quoted name) can be read."""
        if self._missing_file():
            return False
        conn = self.warehouse.connect_duckdb(read_only=True) if self.is_duckdb else self.warehouse.sql_hook.get_conn()
        try:
            if self.is_duckdb:
                try:
                    conn.execute(f"SELECT 1 FROM {relation} LIMIT 0")  # a validated name (spec) or dbt's
                except Exception:  # noqa: BLE001 - duckdb.CatalogException and friends: it is not there
                    return False
                return True
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s)", (relation,))
                return cur.fetchone()[0] is not None
        finally:
            conn.close()

    def predictions(self, pipeline: str, run_key: str) -> pd.DataFrame:
        """This run's predictions (``id``, ``score``, ``model_version``, ...)."""
        return self._query(
            f"SELECT * FROM {PREDICTIONS_TABLE} WHERE pipeline = {self._p} AND run_key = {self._p} ORDER BY id",
            (pipeline, run_key),
        )

    def latest_predictions(self, pipeline: str, model_version: str) -> pd.DataFrame:
        """The latest score per id of ``model_version`` across scoring runs (for realised performance)."""
        return self._query(
            f"""SELECT id, score, scored_at FROM (
                  SELECT id, score, scored_at, row_number() OVER (PARTITION BY id ORDER BY scored_at DESC) AS n
                  FROM {PREDICTIONS_TABLE} WHERE pipeline = {self._p} AND model_version = {self._p}) AS p
                WHERE n = 1""",
            (pipeline, str(model_version)),
        )

    def history(self, pipeline: str, limit: int = 200) -> pd.DataFrame:
        """The pipeline's monitoring records, newest first."""
        return self._query(
            f"SELECT * FROM {MONITORING_TABLE} WHERE pipeline = {self._p} ORDER BY measured_at DESC LIMIT {int(limit)}",
            (pipeline,),
        )

    def last_request(self, pipeline: str) -> dict[str, Any] | None:
        """The newest record of ``pipeline`` that requested a retrain (for the cooldown), or ``None``."""
        frame = self._query(
            f"SELECT run_key, dag_run_id, measured_at, reason FROM {MONITORING_TABLE} "
            f"WHERE pipeline = {self._p} AND retrain_requested ORDER BY measured_at DESC LIMIT 1",
            (pipeline,),
        )
        return None if frame.empty else frame.iloc[0].to_dict()

    def baseline_scores(self, pipeline: str, model_version: str) -> list[float] | None:
        """The score-bin frequencies recorded by the first monitoring run of ``model_version`` (the
        reference for prediction drift), or ``None`` when this version was never monitored."""
        frame = self._query(
            f"SELECT details FROM {MONITORING_TABLE} WHERE pipeline = {self._p} AND model_version = {self._p} "
            "ORDER BY measured_at ASC LIMIT 1",
            (pipeline, str(model_version)),
        )
        if frame.empty:
            return None
        return json.loads(frame.iloc[0]["details"]).get("score_bins")
