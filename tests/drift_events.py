"""Drift Asset events as a retrain run's context holds them (``triggering_asset_events``), built with the
Task SDK's own types; shared by the tests of the drift-triggered retrain's outcome and history entry."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow_retrain.monitoring.drift import drift_asset_uri

REASON = "feature drift in 1 of 25 features (share 4% > 0%): tenure_months (PSI 0.412 > 0.2)"


def asset_event(uri: str, extra: dict, run_id: str, minute: int, dag_id: str = "score_churn"):
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name=uri, uri=uri, extra={}), extra=extra,
        source_task_id="request_retrain", source_dag_id=dag_id, source_run_id=run_id, source_map_index=-1,
        source_aliases=[], timestamp=datetime(2026, 12, 1, 3, minute, tzinfo=UTC),
    )


def triggering(*events):
    """What the Task SDK puts in a run's context under ``triggering_asset_events``."""
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    return TriggeringAssetEventsAccessor.build(list(events))


def drift_event(run_id: str = "scheduled__2026-12-01", minute: int = 5, reason: str = REASON):
    return asset_event(drift_asset_uri("churn"), {"reason": reason, "scoring_run_id": run_id,
                                                  "champion_version": "2", "monitoring_run_id": "m1"}, run_id, minute)
