"""A retrain run started by the scoring DAG's drift Asset says why: in its outcome (the run note), its report
and its promotion history entry. The triggering events are built with Airflow's own Task SDK types, as a
run's context holds them (``triggering_asset_events``)."""

from __future__ import annotations

import json

import pytest
from drift_events import REASON, asset_event, drift_event, triggering

from airflow_retrain.monitoring.drift import drift_trigger
from airflow_retrain.operators.report import RunReportOperator
from airflow_retrain.report import format_report, run_outcome, trigger_label


def test_the_newest_drift_event_is_the_trigger_and_other_assets_are_not():
    dbt = asset_event("x-dbt://retrain/churn_features", {}, "dbt_run", 9, dag_id="dbt_dag")
    context = {"triggering_asset_events": triggering(drift_event("s1", 1, "older"), drift_event("s2", 7), dbt)}
    trigger = drift_trigger(context, "churn")
    assert trigger == {"kind": "drift", "reason": REASON, "scoring_dag_id": "score_churn", "scoring_run_id": "s2",
                       "champion_version": "2", "monitoring_run_id": "m1",
                       "requested_at": "2026-12-01T03:07:00+00:00", "events": 2}
    assert trigger_label(trigger) == f"drift-triggered (score_churn run s2: {REASON}; +1 earlier request(s))"
    assert drift_trigger(context, "other_pipeline") is None


@pytest.mark.parametrize("events", [None, (), ("dbt",)])
def test_a_run_not_started_by_drift_has_no_trigger(events):
    context = {} if events is None else {"triggering_asset_events": triggering(*(
        asset_event("x-dbt://retrain/churn_features", {}, "r", 1) for _ in events))}
    assert drift_trigger(context, "churn") is None


PROMOTED = {"register": {"version": "3", "model_name": "churn", "run_id": "abc"},
            "promote": {"decision": "promoted", "champion_after": "3", "champion_before": "2", "reason": "beats v2",
                        "model_name": "churn"}}


def test_the_outcome_of_a_drift_triggered_run_heads_with_why_and_a_cron_run_is_unchanged():
    trigger = drift_trigger({"triggering_asset_events": triggering(drift_event())}, "churn")
    assert run_outcome({"stages": PROMOTED, "trigger": trigger}) == (
        f"drift-triggered (score_churn run scheduled__2026-12-01: {REASON}): promoted v3 (was v2)")
    assert run_outcome({"stages": PROMOTED, "trigger": None}) == "promoted v3 (was v2)"
    failed = run_outcome({"stages": {}, "task_states": {"train": "failed"}, "trigger": trigger})
    assert failed.startswith("drift-triggered (score_churn run") and failed.endswith(
        ": failed at train (no candidate; champion unchanged)")


def test_a_long_or_multiline_reason_stays_one_bounded_line():
    label = trigger_label({"kind": "drift", "reason": "x\n" * 400, "scoring_run_id": "r", "events": 1})
    assert "\n" not in label and len(label) < 400 and label.endswith("…)")


def test_the_report_task_records_the_trigger_and_says_it_in_the_outcome(make_context, tmp_path):
    stages = PROMOTED
    ctx = make_context(dag_id="churn_retrain", run_id="asset_triggered__1", pulled=stages)
    ctx["triggering_asset_events"] = triggering(drift_event())
    op = RunReportOperator(task_id="report", pipeline="churn", stage_task_ids=list(stages),
                           artifact_root=(tmp_path / "store").as_uri())
    result = op.execute(ctx)
    assert result["outcome"] == f"drift-triggered (score_churn run scheduled__2026-12-01: {REASON}): promoted v3 (was v2)"
    report = ctx["ti"].xcoms["run_report"]
    assert report["trigger"]["reason"] == REASON and report["trigger"]["scoring_run_id"] == "scheduled__2026-12-01"
    stored = json.loads((tmp_path / "store" / "churn_retrain" / "latest_report.json").read_text())
    assert run_outcome(stored) == result["outcome"]  # the dashboard re-derives it from the stored report
    assert f"  trigger        drift-triggered (score_churn run scheduled__2026-12-01: {REASON})" in format_report(stored)


def test_a_cron_runs_report_has_no_trigger(make_context, tmp_path):
    ctx = make_context(dag_id="churn_retrain", run_id="scheduled__1", pulled=PROMOTED)
    op = RunReportOperator(task_id="report", pipeline="churn", stage_task_ids=list(PROMOTED),
                           artifact_root=(tmp_path / "store").as_uri())
    assert op.execute(ctx)["outcome"] == "promoted v3 (was v2)"
    assert ctx["ti"].xcoms["run_report"]["trigger"] is None
