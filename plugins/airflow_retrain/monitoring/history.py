"""The drift and realised-metric history of a pipeline as JSON-able data (for the dashboard and the demo)."""

from __future__ import annotations

import json
import math
from typing import Any

from airflow_retrain.hooks.warehouse import WarehouseHook
from airflow_retrain.monitoring.store import MonitoringStore


def _plain(value: Any) -> Any:
    """A JSON-able value: timestamps as ISO text, NaN as ``None``, numpy scalars as Python ones."""
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def monitoring_history(
    pipeline: str, *, warehouse_conn_id: str | None = WarehouseHook.default_conn_name, limit: int = 200
) -> dict[str, Any]:
    """Every monitoring run of ``pipeline``, newest first, with the thresholds it was judged by.

    :return: ``{"pipeline", "runs": [{measured_at, dag_run_id, model_version, rows_scored, drifted_features,
        drifted_share, prediction_psi, realised_metric, realised_value, champion_value, crossed,
        retrain_requested, reason, drifted: [feature, ...], psi: {feature: value}}, ...],
        "retrains_requested": [{measured_at, dag_run_id, reason}, ...]}``; empty lists before the first run.
    """
    frame = MonitoringStore(WarehouseHook(warehouse_conn_id)).history(pipeline, limit=limit)
    runs = []
    for row in frame.to_dict(orient="records"):
        details = json.loads(row.pop("details") or "{}")
        entry = {k: _plain(v) for k, v in row.items() if k not in ("pipeline", "run_key")}
        features = details.get("features", {})
        entry["drifted"] = details.get("drifted", [])
        entry["psi"] = {c: e.get("psi") for c, e in features.items()}
        entry["notes"] = details.get("notes", [])
        entry["runtime"] = details.get("runtime")
        runs.append(entry)
    return {
        "pipeline": pipeline,
        "runs": runs,
        "retrains_requested": [
            {"measured_at": r["measured_at"], "dag_run_id": r["dag_run_id"], "reason": r["reason"]}
            for r in runs if r.get("retrain_requested")
        ],
    }
