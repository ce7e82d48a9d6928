"""The dashboard's drift view: a pipeline with a ``monitoring:`` block shows its drift and realised-metric
history, the thresholds, and the retrains the data requested with the run each started and its outcome.
Rendered from fixture data; every value escaped; the page behind Airflow's authentication."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from airflow_retrain.spec.monitoring import MonitoringThresholds
from airflow_retrain.ui import monitoring
from airflow_retrain.ui.render import outcome_class

DRIFT = "feature drift in 1 of 25 features (share 4% > 0%): tenure_months (PSI 0.412 > 0.2)"
LABEL = f"drift-triggered (score_churn run scheduled__2026-12-02: {DRIFT})"


def spec(**thresholds):
    return SimpleNamespace(
        name="churn", score_dag_id="score_churn", registry=SimpleNamespace(primary_metric="roc_auc"),
        monitoring=SimpleNamespace(thresholds=MonitoringThresholds(**thresholds), cooldown_hours=24.0,
                                   trigger_retrain=True))


def history() -> dict:
    """Two monitoring runs, newest first, as ``monitoring_history`` returns them."""
    runs = [
        {"measured_at": "2026-12-02T03:05:00", "dag_run_id": "scheduled__2026-12-02", "model_version": "2",
         "rows_scored": 7043, "drifted_features": 1, "drifted_share": 0.04, "prediction_psi": 0.31,
         "realised_value": None, "champion_value": 0.845, "crossed": True, "retrain_requested": True,
         "reason": DRIFT, "drifted": ["tenure_months"], "psi": {"tenure_months": 0.412, "<b>odd</b>": 0.01}},
        {"measured_at": "2026-12-01T03:05:00", "dag_run_id": "scheduled__2026-12-01", "model_version": "2",
         "rows_scored": 7043, "drifted_features": 0, "drifted_share": 0.0, "prediction_psi": 0.002,
         "realised_value": 0.8391, "champion_value": 0.845, "crossed": False, "retrain_requested": False,
         "reason": "no threshold crossed", "drifted": [], "psi": {"tenure_months": 0.004, "<b>odd</b>": 0.0}},
    ]
    return {"pipeline": "churn", "runs": runs, "retrains_requested": [
        {"measured_at": runs[0]["measured_at"], "dag_run_id": runs[0]["dag_run_id"], "reason": DRIFT}]}


RETRAIN_RUNS = [
    {"run_id": "asset_triggered__2026-12-02", "outcome": f"{LABEL}: promoted v3 (was v2)", "trigger": LABEL,
     "report": {"trigger": {"kind": "drift", "scoring_run_id": "scheduled__2026-12-02", "reason": DRIFT}}},
    {"run_id": "scheduled__2026-11-29", "outcome": "kept v2 because candidate v3 did not beat it", "report": {}},
]


def test_the_view_shows_history_thresholds_and_the_retrain_each_request_started():
    view = monitoring.monitoring_view(spec(metric_drop_max=0.05), history(), RETRAIN_RUNS)
    assert view["requests"] == [{"measured_at": "2026-12-02T03:05:00", "dag_run_id": "scheduled__2026-12-02",
                                 "reason": DRIFT, "retrain_run_id": "asset_triggered__2026-12-02",
                                 "retrain_outcome": f"{LABEL}: promoted v3 (was v2)"}]
    json.dumps(view)  # served in /api/overview as well
    html = monitoring.render_monitoring(view)
    assert "<h3>Drift and realised performance (score_churn)</h3>" in html
    assert ("Thresholds: feature PSI &gt; 0.2; drifted share &gt; 0%; prediction PSI &gt; 0.2; realised roc_auc "
            "drop &gt; 0.05; at least 100 scored rows. A crossing requests a retrain, at most one per 24 h.") in html
    # three charts with titled, round-number axes and the runs' dates as x labels
    assert 'aria-label="largest feature PSI per scoring run (threshold 0.2)"' in html
    assert 'aria-label="prediction PSI per scoring run (threshold 0.2)"' in html
    assert 'aria-label="realised roc_auc per scoring run"' in html and ">12-02 03:05</text>" in html
    table = html.split('data-role="monitoring-runs"', 1)[1].split("</table>", 1)[0]
    assert table.index("12-02 03:05") < table.index("12-01 03:05")  # newest first
    assert "<td>0.412 (tenure_months)</td><td>0.310</td>" in table and "<td>0.8391</td><td>0.8450</td>" in table
    assert f"<td>retrain requested: {DRIFT.replace('>', '&gt;')}</td>" in table
    retrains = html.split('data-role="drift-retrains"', 1)[1]
    assert "<td>asset_triggered__2026-12-02</td>" in retrains and "promoted v3 (was v2)</td>" in retrains


def test_every_value_is_escaped():
    h = history()
    h["runs"][0]["reason"] = h["retrains_requested"][0]["reason"] = "<script>alert(1)</script>"
    h["runs"][0]["dag_run_id"] = "<img src=x onerror=alert(2)>"
    h["runs"][0]["psi"] = {"<i>f</i>": 0.9}
    html = monitoring.render_monitoring(monitoring.monitoring_view(spec(), h, []))
    assert "<script>" not in html and "<img" not in html and "<i>f" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "0.900 (&lt;i&gt;f&lt;/i&gt;)" in html


def test_no_history_yet_is_said_in_words_without_empty_charts():
    view = monitoring.monitoring_view(spec(), {"pipeline": "churn", "runs": [], "retrains_requested": []}, [])
    html = monitoring.render_monitoring(view)
    assert "no monitoring runs yet: score_churn has not scored with a champion" in html
    assert "<svg" not in html and "monitoring-runs" not in html and "Thresholds: feature PSI &gt; 0.2" in html


def test_a_history_that_cannot_be_read_says_why(monkeypatch):
    from airflow_retrain.monitoring import history as history_module

    def down(*args, **kwargs):
        raise OSError("warehouse locked by <run>")

    monkeypatch.setattr(history_module, "monitoring_history", down)
    loaded = monitoring.load_history("churn", "retrain_warehouse")
    html = monitoring.render_monitoring(monitoring.monitoring_view(spec(), loaded, []))
    assert "Monitoring history unavailable: OSError: warehouse locked by &lt;run&gt;" in html


def test_a_drift_triggered_runs_outcome_keeps_its_colour():
    assert outcome_class(f"{LABEL}: promoted v3 (was v2)", LABEL) == "outcome-promoted"
    assert outcome_class(f"{LABEL}: kept v2 because candidate v3 did not beat it", LABEL) == "outcome-kept"


async def test_collect_adds_the_view_to_pipelines_with_a_monitoring_block(monkeypatch):
    import httpx

    from airflow_retrain.ui import app, data

    def answer(request: httpx.Request) -> httpx.Response:
        body = routes.get(request.url.path)
        return httpx.Response(404) if body is None else httpx.Response(200, json=body)

    runs = "/api/v2/dags/churn_retrain/dagRuns"
    routes = {
        "/api/v2/dags": {"dags": [{"dag_id": "churn_retrain", "tags": [{"name": "retrain"}]}]},
        runs: {"dag_runs": [{"dag_run_id": "asset_triggered__2026-12-02", "state": "success", "note": None}]},
        f"{runs}/asset_triggered__2026-12-02/taskInstances": {"task_instances": []},
        f"{runs}/asset_triggered__2026-12-02/taskInstances/report/xcomEntries/run_report": {"value": {
            "trigger": {"kind": "drift", "scoring_dag_id": "score_churn", "scoring_run_id": "scheduled__2026-12-02",
                        "reason": DRIFT},
            "stages": {"register": {"version": "3"}, "promote": {"decision": "promoted", "champion_after": "3",
                                                                 "champion_before": "2"}}}},
    }
    the_spec = spec()
    the_spec.dag_id, the_spec.budget, the_spec.warehouse_connection_id = "churn_retrain", None, "wh"
    the_spec.registry.greater_is_better = True
    seen = []
    monkeypatch.setattr(app, "_specs_by_dag_id", lambda: {"churn_retrain": the_spec})
    monkeypatch.setattr(app, "_model", lambda s: None)
    monkeypatch.setattr(monitoring, "load_history", lambda name, conn: seen.append((name, conn)) or history())
    monkeypatch.setattr(data, "ledger_rows", lambda *a, **k: {"available": False, "reason": data.LEDGER_MISSING})
    api = data.AirflowApi("http://airflow.test", "t", transport=httpx.MockTransport(answer))
    overview = await app.collect(api)
    [pipeline] = overview["pipelines"]
    assert seen == [("churn", "wh")]
    assert pipeline["runs"][0]["outcome"] == f"{LABEL}: promoted v3 (was v2)"
    assert pipeline["monitoring"]["requests"][0]["retrain_run_id"] == "asset_triggered__2026-12-02"
    assert isinstance(httpx.Response(200, json=overview).json(), dict)  # JSON-able as served


@pytest.mark.parametrize("path", ["/", "/api/overview"])
def test_the_page_with_the_drift_view_needs_a_signed_in_viewer(path):
    from fastapi.testclient import TestClient

    from airflow_retrain.ui import app

    with TestClient(app.create_app()) as client:
        assert client.get(path).status_code == 401  # no token: Airflow's dependency refuses before any read
