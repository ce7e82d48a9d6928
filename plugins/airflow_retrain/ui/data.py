"""What the dashboard shows, read from three places and nowhere else:

- Airflow's public REST API (``/api/v2``), called with the viewer's own token, so the viewer sees exactly
  the DAGs and runs their role allows (never the metadata database's ORM);
- the MLflow registry through :class:`~airflow_retrain.hooks.mlflow.MlflowHook` (aliases, versions, gate
  tags, promotion history);
- the cost ledger table in the warehouse, read defensively: where it does not exist yet, "no ledger yet".

Each function is small and returns plain dicts, so the page, the JSON endpoint and the tests share them.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

GATE_TAG = "retrain.gate."
PROMOTION_TAG = "retrain.promotion."
LEDGER_MISSING = "no ledger yet"


class AirflowApi:
    """A thin async client of Airflow's REST API on behalf of one viewer (their bearer token).

    :param base_url: the API server's root URL (``http://host:port``).
    :param token: the viewer's JWT (from the request's ``Authorization`` header or ``_token`` cookie).
    :param transport: an ``httpx`` transport (tests); default: the network.
    :param max_concurrent: requests in flight at once. One page asks for two things per run of every
        pipeline (100 DAGs x 10 runs: 2,000 requests); unbounded, each page view would open that many
        connections to the API server that is serving it.
    """

    def __init__(self, base_url: str, token: str, transport: Any = None, max_concurrent: int = 16) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.transport = transport
        self._slots = asyncio.Semaphore(max_concurrent)

    async def get(self, path: str, **params: Any) -> Any:
        import httpx

        async with self._slots, httpx.AsyncClient(timeout=20.0, transport=self.transport) as client:
            response = await client.get(
                f"{self.base_url}/api/v2{path}",
                params={k: v for k, v in params.items() if v is not None},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()


#: What Airflow's REST API reads in a path as "every DAG" / "every run" (a run may be *named* ``~``).
WILDCARD = "~"


def _q(value: str) -> str:
    """One path segment. ``quote`` leaves ``.`` alone, and a run id ``..`` (a valid one) would be a dot-segment
    the HTTP client resolves, sending the viewer's request to another endpoint; ``%2E`` decodes back to ``.``
    on the server."""
    return quote(value, safe="").replace(".", "%2E")


async def list_pipelines(api: AirflowApi) -> list[dict[str, Any]]:
    """Every retraining DAG (tag ``retrain``) with its schedule and next run."""
    body = await api.get("/dags", tags="retrain", limit=100, order_by="dag_id") or {}
    return [
        {
            "dag_id": d["dag_id"],
            "schedule": d.get("timetable_description") or d.get("timetable_summary") or "-",
            "next_run": d.get("next_dagrun_run_after") or d.get("next_dagrun_logical_date"),
            "paused": d.get("is_paused"),
            "tags": sorted(t["name"] for t in d.get("tags", [])),
        }
        for d in body.get("dags", [])
    ]


async def recent_runs(api: AirflowApi, dag_id: str, limit: int = 10) -> list[dict[str, Any]]:
    """The DAG's latest runs, newest first: state, note (the run's outcome), times."""
    body = await api.get(f"/dags/{_q(dag_id)}/dagRuns", order_by="-run_after", limit=limit) or {}
    return [
        {
            "run_id": r["dag_run_id"],
            "state": r.get("state"),
            "note": r.get("note"),
            "run_after": r.get("run_after"),
            "start_date": r.get("start_date"),
            "end_date": r.get("end_date"),
            "run_type": r.get("run_type"),
        }
        for r in body.get("dag_runs", [])
    ]


async def run_stages(api: AirflowApi, dag_id: str, run_id: str) -> dict[str, str | None]:
    """``task_id -> state`` of one run, in the DAG's order as the API lists them (none for a run named ``~``,
    which the API cannot address on its own)."""
    if run_id == WILDCARD:
        return {}
    body = await api.get(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances", limit=100) or {}
    return {ti["task_id"]: ti.get("state") for ti in body.get("task_instances", [])}


async def run_report(api: AirflowApi, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The run report the ``report`` task pushed as XCom ``run_report`` (``None`` before it ran, and for a run
    named ``~``)."""
    if run_id == WILDCARD:
        return None
    body = await api.get(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/report/xcomEntries/run_report")
    if not body:
        return None
    value = body.get("value")
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


async def task_error(api: AirflowApi, dag_id: str, run_id: str, task_id: str) -> str | None:
    """The error line a failed task recorded (XCom ``retrain_error``, see :mod:`airflow_retrain.failure`),
    bounded and redacted again; ``None`` when it recorded none."""
    if run_id == WILDCARD:
        return None
    from airflow_retrain.failure import ERROR_XCOM_KEY, bounded

    path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{ERROR_XCOM_KEY}"
    body = await api.get(path)
    value = (body or {}).get("value")
    if isinstance(value, str):
        import json

        try:  # the API returns the stored value: a string may come JSON-encoded
            decoded = json.loads(value)
        except ValueError:
            decoded = value
        value = decoded if isinstance(decoded, str) else value
    return (bounded(value) or None) if isinstance(value, str) else None


def run_cost(report: dict[str, Any] | None) -> dict[str, float | None]:
    """Compute seconds, GPU-hours (GPUs x hours) and USD of one run, from its report."""
    stages = (report or {}).get("stages") or {}
    teardown = stages.get("teardown") or {}
    train = stages.get("train") or {}
    seconds = teardown.get("compute_seconds", train.get("compute_seconds"))
    usd = teardown.get("cost_usd", (train.get("cost") or {}).get("usd"))
    gpus = (train.get("cost") or {}).get("gpus", 0 if (train.get("info") or {}).get("device") in ("cpu", None) else 1)
    gpu_hours = (seconds or 0.0) * (gpus or 0) / 3600.0 if seconds is not None else None
    return {"compute_seconds": seconds, "gpu_hours": gpu_hours, "usd": usd}


# --- MLflow -------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def gate_verdicts(tags: dict[str, str]) -> list[dict[str, str]]:
    """The ``retrain.gate.<name>`` tags of a version: each gate's verdict and its evidence (message)."""
    verdicts = []
    for key, value in sorted(tags.items()):
        if not key.startswith(GATE_TAG):
            continue
        name = key[len(GATE_TAG):]
        if "." in name:  # retrain.gate.<name>.message and other details
            continue
        verdicts.append({"gate": name, "verdict": value, "evidence": tags.get(f"{key}.message", "")})
    return verdicts


def model_overview(hook: Any, model_name: str, primary_metric: str, max_versions: int = 50) -> dict[str, Any]:
    """Champion and challenger with their metrics, every version's primary metric and gates, and the
    promotion history, from the MLflow registry (synchronous: call it from a worker thread).

    :param hook: an :class:`~airflow_retrain.hooks.mlflow.MlflowHook`.
    """
    client = hook.client
    try:
        registered = client.get_registered_model(model_name)
    except Exception as e:  # noqa: BLE001 - not registered yet, or the registry is down: say which
        return {"model_name": model_name, "error": f"{type(e).__name__}: {e}", "versions": [], "history": []}
    aliases = dict(getattr(registered, "aliases", None) or {})
    versions = sorted(client.search_model_versions(f"name = '{model_name}'"), key=lambda v: int(v.version))
    rows = []
    for mv in versions[-max_versions:]:
        metrics: dict[str, float] = {}
        try:
            metrics = {k: v for k, v in client.get_run(mv.run_id).data.metrics.items() if _finite(v) is not None}
        except Exception:  # noqa: BLE001 - a deleted run: the version still shows
            pass
        tags = dict(mv.tags or {})
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(a for a, v in aliases.items() if str(v) == str(mv.version)),
                "metric": metrics.get(primary_metric),
                "metrics": metrics,
                "gates": gate_verdicts(tags),
                "decision": tags.get(f"{PROMOTION_TAG}decision"),
                "reason": tags.get(f"{PROMOTION_TAG}reason"),
                "dag_run": tags.get(f"{PROMOTION_TAG}dag_run") or tags.get("retrain.run_id"),
                "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
                if mv.creation_timestamp
                else None,
            }
        )
    by_version = {r["version"]: r for r in rows}
    champion = by_version.get(str(aliases.get("champion"))) if "champion" in aliases else None
    challenger = by_version.get(str(aliases.get("challenger"))) if "challenger" in aliases else None
    if challenger is None:  # no challenger alias: the newest version that is not the champion
        challenger = next((r for r in reversed(rows) if r is not champion), None)
    return {
        "model_name": model_name,
        "primary_metric": primary_metric,
        "champion": champion,
        "challenger": challenger,
        "versions": rows,
        "history": promotion_history(hook, model_name, rows),
    }


_ACTIONS = {"promote": "promoted", "kept": "kept", "kept_champion": "kept", "rejected": "rejected",
            "rollback": "rolled back", "already_champion": "already champion", "challenger": "registered as challenger"}


def history_row(entry: dict[str, Any]) -> dict[str, Any]:
    """One promotion-history entry (``registry.history``: seq, at, action, alias, from, to, by, reason,
    candidate_version) with the columns the page shows filled: the version decided on, the decision in
    words, the champion before and after, and the DAG run (``by`` is ``<dag_id>/<run_id>/<task_id>``)."""
    by = str(entry.get("by") or "")
    parts = by.split("/")
    return {
        **entry,
        "version": entry.get("version") or entry.get("candidate_version") or entry.get("to"),
        "decision": entry.get("decision") or _ACTIONS.get(str(entry.get("action")), entry.get("action")),
        "dag_run": entry.get("dag_run") or ("/".join(parts[:-1]) if len(parts) >= 3 else by or None),
    }


def promotion_history(hook: Any, model_name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The registry's promotion history where the hook keeps one (newest first), else the decisions tagged
    on versions."""
    if hasattr(hook, "promotion_history"):
        try:
            return [history_row(e) for e in reversed(list(hook.promotion_history(model_name)))]
        except Exception:  # noqa: BLE001 - fall back to the version tags
            pass
    return [
        {"version": r["version"], "decision": r["decision"], "reason": r["reason"], "dag_run": r["dag_run"]}
        for r in rows
        if r.get("decision")
    ]


# --- the cost ledger ----------------------------------------------------------------------------------


def ledger_rows(warehouse_conn_id: str = "retrain_warehouse", since: datetime | None = None) -> dict[str, Any]:
    """Rows of the cost ledger (``retrain_ledger.entries``), or why there are none.

    :return: ``{"available": True, "rows": [...]}`` or ``{"available": False, "reason": "no ledger yet ..."}``.
    """
    try:
        from airflow_retrain.teardown.ledger import CostLedger  # type: ignore[import-not-found]
    except ImportError:
        return {"available": False, "reason": f"{LEDGER_MISSING} (this installation has no cost ledger)"}
    try:
        rows = CostLedger.from_connection(warehouse_conn_id).rows(since)
    except Exception as e:  # noqa: BLE001 - e.g. the table does not exist until the first teardown wrote it
        text = str(e).lower()
        if "does not exist" in text or "no such table" in text or "not found" in text or "catalog error" in text:
            return {"available": False, "reason": f"{LEDGER_MISSING} (no teardown has written it)"}
        return {"available": False, "reason": f"{LEDGER_MISSING}: {type(e).__name__}: {e}"}
    return {"available": True, "rows": rows}


def weekly_costs(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """USD and GPU-hours per ISO week (weeks start on Monday, UTC), oldest first.

    :param entries: dicts with ``ts`` (datetime or ISO string), ``usd`` and ``gpu_hours``.
    """
    weeks: dict[str, dict[str, float]] = defaultdict(lambda: {"usd": 0.0, "gpu_hours": 0.0, "runs": 0})
    for entry in entries:
        ts = entry.get("ts")
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        if ts is None:
            continue
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        monday = (ts.astimezone(UTC) - timedelta(days=ts.astimezone(UTC).weekday())).date().isoformat()
        weeks[monday]["usd"] += float(entry.get("usd") or 0.0)
        weeks[monday]["gpu_hours"] += float(entry.get("gpu_hours") or 0.0)
        weeks[monday]["runs"] += 1
    return [{"week": week, **values} for week, values in sorted(weeks.items())]


def teardown_actions(ledger: dict[str, Any], reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What teardown stopped or deleted: the ledger's sweep rows, and each run's stopped jobs."""
    actions = []
    for row in ledger.get("rows", []) if ledger.get("available") else []:
        if row.get("source") == "sweep":
            actions.append({"when": str(row.get("ts")), "what": f"{row.get('kind')} {row.get('resource')}",
                            "where": row.get("location"), "usd": row.get("usd")})
    for report in reports:
        teardown = ((report or {}).get("stages") or {}).get("teardown") or {}
        for job in teardown.get("stopped_jobs", []):
            actions.append({"when": report.get("run_id"), "what": f"stopped job {job}", "where": report.get("dag_id"),
                            "usd": None})
        if teardown.get("scratch_removed"):
            actions.append({"when": report.get("run_id"), "what": "removed run scratch", "where": report.get("dag_id"),
                            "usd": None})
    return actions
