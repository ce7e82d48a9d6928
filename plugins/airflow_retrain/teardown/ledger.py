"""The cost ledger: every GPU-hour and dollar the package spent or stopped, as one warehouse table.

``retrain_ledger.entries`` lives in the project's warehouse (the ``retrain_warehouse`` connection: the
embedded DuckDB by default, Postgres when that connection is a postgres one), never in Airflow's metadata
database. Rows come from two sources, both priced by :func:`airflow_retrain.cost.estimate_cost`:

- ``training_run``: one row per training job, in the ledger from its submission on: the train task
  writes it when it submits the job (``details.phase = submitted``, 0 s so far), rewrites it with the
  job's last known state and elapsed time when it loses the cloud or the cloud forgets the job
  (``phase = lost``), and the run's ``teardown`` task replaces it with the final one (``phase = ended``:
  the backend's billable seconds x instances x price; ``pricing`` is ``spot`` for managed-spot jobs,
  priced by the cost model's spot column). One ``entry_id`` per job, so each write replaces the last;
  a job the cloud no longer knows keeps its last row instead of vanishing from the costs;
- ``sweep``: written by the ``gpu_teardown`` DAG, one row per resource it stopped or deleted (price x
  uptime until the action, and ``saving_usd_per_hour``: the burn rate the action stopped).

Writes are idempotent (``entry_id`` is derived from the job or the action), so a retried task never
counts twice. ``make cost-report`` (:func:`format_cost_report`) prints it per pipeline per day and week.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from airflow_retrain.cost import CostEstimate, gpus_per_instance

SCHEMA = "retrain_ledger"
LOCK_WAIT_SECONDS = 120.0
TABLE = f"{SCHEMA}.entries"
_COLUMNS = (
    "entry_id", "ts", "pipeline", "kind", "resource", "backend", "location", "instance_type", "instance_count",
    "seconds", "gpu_hours", "usd", "pricing", "saving_usd_per_hour", "source", "details",
)
_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        entry_id VARCHAR(512) PRIMARY KEY,
        ts TIMESTAMP NOT NULL,
        pipeline VARCHAR(256),
        kind VARCHAR(128) NOT NULL,
        resource VARCHAR(512) NOT NULL,
        backend VARCHAR(64),
        location VARCHAR(256),
        instance_type VARCHAR(128),
        instance_count INTEGER,
        seconds DOUBLE PRECISION,
        gpu_hours DOUBLE PRECISION,
        usd DOUBLE PRECISION,
        pricing VARCHAR(16),
        saving_usd_per_hour DOUBLE PRECISION,
        source VARCHAR(32) NOT NULL,
        details VARCHAR
    )""",
]


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str
    ts: datetime  # UTC
    pipeline: str | None
    kind: str
    resource: str
    backend: str
    location: str
    instance_type: str | None
    instance_count: int
    seconds: float
    gpu_hours: float
    usd: float | None
    pricing: str  # on_demand | spot
    saving_usd_per_hour: float | None
    source: str  # training_run | sweep
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> tuple:
        values = asdict(self)
        values["ts"] = self.ts.astimezone(UTC).replace(tzinfo=None)
        values["details"] = json.dumps(self.details, default=str, sort_keys=True)
        return tuple(values[c] for c in _COLUMNS)


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


#: ``details.phase`` of a training_run row: the job was just submitted, the task lost track of it (the
#: cloud was unreachable or forgot the job: the row holds its last known time), or it ended.
LEDGER_PHASES = ("submitted", "lost", "ended")


def last_known_usage(job: Any, seen_at: float) -> Any:
    """``job`` with its billable time at least the time it had been running when last seen at ``seen_at``.

    Clouds report billable time only once a job ends (SageMaker's ``BillableTimeInSeconds``); for a job
    that never reports an end, the elapsed time since it started (or was created) is the best estimate.
    """
    if job.state.terminal:
        return job
    began = job.started_at or job.created_at
    elapsed = max(0.0, seen_at - began) if began else 0.0
    return replace(job, billable_seconds=max(float(job.billable_seconds), round(elapsed, 3)))


def training_run_entry(
    pipeline: str,
    dag_id: str,
    run_key: str,
    job: Any,
    cost: CostEstimate,
    now: float,
    *,
    phase: str = "ended",
    note: str | None = None,
) -> LedgerEntry:
    """The ledger row of one training job of a run (``job`` is a :class:`TrainingJob`).

    :param phase: one of :data:`LEDGER_PHASES`; every phase writes the same ``entry_id``.
    :param note: why the row is what it is (``lost``: the outage or the cloud's answer).
    """
    if phase not in LEDGER_PHASES:
        raise ValueError(f"unknown ledger phase {phase!r}; one of {', '.join(LEDGER_PHASES)}")
    gpus = job.details.get("gpus_visible") if job.backend == "local" else gpus_per_instance(job.backend, job.instance_type)
    return LedgerEntry(
        entry_id=f"training_run:{job.backend}:{job.job_name}",
        ts=_utc(job.ended_at or now),
        pipeline=pipeline,
        kind="training_job",
        resource=job.job_name,
        backend=job.backend,
        location=str(getattr(cost, "region", None) or job.details.get("region") or job.backend),
        instance_type=job.instance_type,
        instance_count=job.instance_count,
        seconds=float(job.billable_seconds),
        gpu_hours=round(job.billable_seconds * job.instance_count * (gpus or 0) / 3600.0, 6),
        usd=cost.usd,
        pricing="spot" if getattr(cost, "spot", False) or job.details.get("pricing") == "spot" else "on_demand",
        saving_usd_per_hour=None,
        source="training_run",
        details={"dag_id": dag_id, "run_key": run_key, "state": job.state.value, "phase": phase,
                 "hourly_price_usd": cost.hourly_price_usd, "price_source": cost.price_source,
                 **({"note": note} if note else {})},
    )


def sweep_entry(record: Any, sweep_id: str) -> LedgerEntry:
    """The ledger row of one resource the sweep acted on (``record`` is a :class:`SweepRecord`)."""
    return LedgerEntry(
        entry_id=f"sweep:{record.kind}:{record.location}:{record.resource}:{int(record.at)}",
        ts=_utc(record.at),
        pipeline=record.pipeline,
        kind=record.kind,
        resource=record.resource,
        backend=record.backend,
        location=record.location,
        instance_type=record.instance_type,
        instance_count=record.instance_count,
        seconds=record.uptime_seconds,
        gpu_hours=record.gpu_hours,
        usd=record.usd_uptime,
        pricing="on_demand",
        saving_usd_per_hour=record.saving_usd_per_hour,
        source="sweep",
        details={"sweep_id": sweep_id, "action": record.action, "reason": record.reason, "detail": record.detail,
                 "owner": record.owner, "evidence": record.evidence},
    )


class CostLedger:
    """The ledger table in the warehouse of ``params`` (:class:`~airflow_retrain.hooks.warehouse.WarehouseParams`)."""

    def __init__(self, params: Any) -> None:
        self.params = params

    @classmethod
    def from_connection(cls, warehouse_conn_id: str | None = "retrain_warehouse") -> CostLedger:
        from airflow_retrain.hooks.warehouse import WarehouseHook

        return cls(WarehouseHook(warehouse_conn_id=warehouse_conn_id).params)

    def describe(self) -> str:
        return f"{TABLE} in {self.params.describe()}"

    @cached_property
    def _sql_hook(self) -> Any:
        """The warehouse's SQL hook: ``RetrainDuckDBHook`` (waits for a writer holding the file) or ``PostgresHook``."""
        from airflow_retrain.hooks.warehouse import sql_hook_for

        return sql_hook_for(self.params, lock_timeout_seconds=LOCK_WAIT_SECONDS)

    def _connect(self):
        # One DB-API connection for the whole batch: the DDL, deletes and inserts commit together.
        return self._sql_hook.get_conn()

    def _sql(self, sql: str) -> str:
        # Statements are written with DuckDB's ``?``; the hook names its driver's placeholder (``%s`` for Postgres).
        return sql.replace("?", self._sql_hook.placeholder)

    def _run(self, statements: list[tuple[str, Iterable[tuple]]], fetch: tuple[str, tuple] | None = None) -> list[tuple]:
        con = self._connect()
        try:
            cur = con.cursor()
            for ddl in _DDL:
                cur.execute(ddl)
            rows: list[tuple] = []
            for sql, params_list in statements:
                for params in params_list:
                    cur.execute(self._sql(sql), params)
            if fetch is not None:
                cur.execute(self._sql(fetch[0]), fetch[1])
                rows = cur.fetchall()
            con.commit()
            return rows
        finally:
            con.close()

    def write(self, entries: list[LedgerEntry]) -> int:
        """Insert or replace ``entries`` (by ``entry_id``) in one transaction; returns how many."""
        if not entries:
            self._run([])
            return 0
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._run(
            [
                (f"DELETE FROM {TABLE} WHERE entry_id = ?", [(e.entry_id,) for e in entries]),
                (f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES ({placeholders})", [e.row() for e in entries]),
            ]
        )
        return len(entries)

    def rows(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Ledger rows (oldest first) since ``since`` (UTC), as dicts."""
        since = since or datetime(1970, 1, 1, tzinfo=UTC)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE ts >= ? ORDER BY ts, entry_id"
        rows = self._run([], fetch=(sql, (since.astimezone(UTC).replace(tzinfo=None),)))
        out = []
        for row in rows:
            item = dict(zip(_COLUMNS, row, strict=True))
            item["ts"] = item["ts"].replace(tzinfo=UTC)
            item["details"] = json.loads(item["details"] or "{}")
            out.append(item)
        return out

    def week_usd(self, pipeline: str, now: float) -> float:
        """Dollars the pipeline's training runs spent in the ISO week (Monday 00:00 UTC) holding ``now``."""
        start = week_start(_utc(now))
        sql = (
            f"SELECT COALESCE(SUM(usd), 0) FROM {TABLE} "
            "WHERE pipeline = ? AND source = 'training_run' AND ts >= ? AND ts < ?"
        )
        start = start.replace(tzinfo=None)
        rows = self._run([], fetch=(sql, (pipeline, start, start + timedelta(days=7))))
        return float(rows[0][0] or 0.0)


def week_start(moment: datetime) -> datetime:
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def summarize(rows: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """Per pipeline per day and per ISO week: GPU-hours and dollars, on-demand vs spot; the sweeps' savings."""

    def bucket(table: dict, key: tuple, row: dict[str, Any]) -> None:
        item = table.setdefault(key, {"jobs": 0, "gpu_hours": 0.0, "usd_on_demand": 0.0, "usd_spot": 0.0, "usd": 0.0})
        usd = row["usd"] or 0.0
        item["jobs"] += 1
        item["gpu_hours"] += row["gpu_hours"] or 0.0
        item["usd_spot" if row["pricing"] == "spot" else "usd_on_demand"] += usd
        item["usd"] += usd

    daily: dict[tuple, dict] = {}
    weekly: dict[tuple, dict] = {}
    waste: dict[tuple, dict] = {}
    for row in rows:
        pipeline = row["pipeline"] or "(untagged)"
        day = row["ts"].date().isoformat()
        week = week_start(row["ts"]).date().isoformat()
        if row["source"] == "training_run":
            bucket(daily, (day, pipeline), row)
            bucket(weekly, (week, pipeline), row)
            continue
        item = waste.setdefault(
            (week, pipeline),
            {"resources": 0, "uptime_hours": 0.0, "gpu_hours": 0.0, "usd_until_stopped": 0.0,
             "saving_usd_per_hour": 0.0, "est_saved_usd": 0.0},
        )
        saving = row["saving_usd_per_hour"] or 0.0
        item["resources"] += 1
        item["uptime_hours"] += (row["seconds"] or 0.0) / 3600.0
        item["gpu_hours"] += row["gpu_hours"] or 0.0
        item["usd_until_stopped"] += row["usd"] or 0.0
        item["saving_usd_per_hour"] += saving
        # What it would have burned since, had it run on (counted up to a week at most).
        item["est_saved_usd"] += saving * min(max(0.0, now - row["ts"].timestamp()), 7 * 86400) / 3600.0

    def listing(table: dict, names: tuple[str, str]) -> list[dict[str, Any]]:
        return [
            {names[0]: k[0], names[1]: k[1], **{f: round(v, 6) if isinstance(v, float) else v for f, v in item.items()}}
            for k, item in sorted(table.items())
        ]

    return {
        "daily": listing(daily, ("day", "pipeline")),
        "weekly": listing(weekly, ("week", "pipeline")),
        "sweeps": listing(waste, ("week", "pipeline")),
    }


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=False)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in [header, *cells]]


def format_cost_report(summary: dict[str, Any], where: str, budgets: dict[str, float] | None = None) -> str:
    """The report ``make cost-report`` prints."""
    budgets = budgets or {}
    lines = [f"Cost ledger: {where}", "", "Training runs per pipeline per day"]
    cols = ["jobs", "gpu_hours", "usd_on_demand", "usd_spot", "usd"]
    if summary["daily"]:
        lines += _table(["day", "pipeline", *cols], [[d["day"], d["pipeline"], *(d[c] for c in cols)] for d in summary["daily"]])
    else:
        lines.append("  (no training runs recorded)")
    lines += ["", "Training runs per pipeline per week (weeks start Monday, UTC)"]
    if summary["weekly"]:
        rows = []
        for w in summary["weekly"]:
            budget = budgets.get(w["pipeline"])
            status = "-" if budget is None else (f"OVER {budget:g}" if w["usd"] > budget else f"within {budget:g}")
            rows.append([w["week"], w["pipeline"], *(w[c] for c in cols), status])
        lines += _table(["week", "pipeline", *cols, "weekly budget"], rows)
    else:
        lines.append("  (no training runs recorded)")
    lines += ["", "Waste stopped by the gpu_teardown sweeps, per week"]
    scols = ["resources", "uptime_hours", "gpu_hours", "usd_until_stopped", "saving_usd_per_hour", "est_saved_usd"]
    if summary["sweeps"]:
        lines += _table(["week", "pipeline", *scols], [[s["week"], s["pipeline"], *(s[c] for c in scols)] for s in summary["sweeps"]])
    else:
        lines.append("  (nothing stopped by a sweep)")
    return "\n".join(lines)
