"""The dashboard's data functions: REST API reads (against a mock transport), MLflow, ledger, charts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from airflow_retrain.ui import data
from airflow_retrain.ui.app import render
from airflow_retrain.ui.charts import bar_chart, line_chart


def fake_airflow(routes: dict[str, object], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = routes.get(request.url.path)
        return httpx.Response(404, json={"detail": "nope"}) if body is None else httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


@pytest.fixture
def api_calls():
    seen: list[httpx.Request] = []
    routes = {
        "/api/v2/dags": {"dags": [{"dag_id": "churn_retrain", "timetable_description": "At 00:00, only on Sunday",
                                   "next_dagrun_run_after": "2026-12-06T00:00:00Z", "is_paused": False,
                                   "tags": [{"name": "retrain"}, {"name": "churn"}]}]},
        "/api/v2/dags/churn_retrain/dagRuns": {"dag_runs": [
            {"dag_run_id": "manual__1", "state": "success", "note": "promoted v1 (first champion)",
             "run_after": "2026-11-29T01:00:00Z", "end_date": "2026-11-29T01:02:00Z"}]},
        "/api/v2/dags/churn_retrain/dagRuns/manual__1/taskInstances": {"task_instances": [
            {"task_id": "train", "state": "success"}, {"task_id": "promote", "state": "success"}]},
        "/api/v2/dags/churn_retrain/dagRuns/manual__1/taskInstances/report/xcomEntries/run_report": {
            "key": "run_report", "value": {"stages": {"teardown": {"compute_seconds": 3600.0, "cost_usd": 1.5},
                                                      "train": {"cost": {"gpus": 2}}}}},
    }
    return data.AirflowApi("http://airflow.test", "viewer-token", transport=fake_airflow(routes, seen)), seen


async def test_rest_reads_use_the_viewers_token(api_calls):
    api, seen = api_calls
    pipelines = await data.list_pipelines(api)
    assert pipelines == [{"dag_id": "churn_retrain", "schedule": "At 00:00, only on Sunday",
                          "next_run": "2026-12-06T00:00:00Z", "paused": False, "tags": ["churn", "retrain"]}]
    assert seen[0].url.params["tags"] == "retrain"
    runs = await data.recent_runs(api, "churn_retrain")
    assert runs[0]["note"] == "promoted v1 (first champion)" and seen[1].url.params["order_by"] == "-run_after"
    assert await data.run_stages(api, "churn_retrain", "manual__1") == {"train": "success", "promote": "success"}
    report = await data.run_report(api, "churn_retrain", "manual__1")
    assert data.run_cost(report) == {"compute_seconds": 3600.0, "gpu_hours": 2.0, "usd": 1.5}
    assert await data.run_report(api, "churn_retrain", "manual__2") is None  # report task has not run
    assert {r.headers["authorization"] for r in seen} == {"Bearer viewer-token"}


async def test_a_refused_viewer_is_not_shown_an_empty_page():
    api = data.AirflowApi("http://airflow.test", "t", transport=httpx.MockTransport(lambda r: httpx.Response(403)))
    with pytest.raises(httpx.HTTPStatusError):
        await data.list_pipelines(api)


def test_gate_verdicts_and_evidence():
    tags = {"retrain.gate.metrics": "failed", "retrain.gate.metrics.message": "roc_auc 0.7 < min 0.8",
            "retrain.gate.data": "passed", "retrain.pipeline": "churn"}
    assert data.gate_verdicts(tags) == [
        {"gate": "data", "verdict": "passed", "evidence": ""},
        {"gate": "metrics", "verdict": "failed", "evidence": "roc_auc 0.7 < min 0.8"},
    ]


def test_model_overview_from_mlflow(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("churn")
    experiment = client.create_experiment("retrain/churn", artifact_location=(tmp_path / "a").as_uri())
    for value, tags in [(0.80, {"retrain.gate.metrics": "passed", "retrain.promotion.decision": "promoted"}),
                        (0.79, {"retrain.gate.metrics": "failed", "retrain.gate.metrics.message": "too low"})]:
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "roc_auc", value)
        client.create_model_version("churn", (tmp_path / "m").as_uri(), run.info.run_id, tags=tags)
    client.set_registered_model_alias("churn", "champion", "1")

    class Hook:  # the slice of MlflowHook the dashboard uses
        def __init__(self):
            self.client = client

    overview = data.model_overview(Hook(), "churn", "roc_auc")
    assert overview["champion"]["version"] == "1" and overview["champion"]["metric"] == 0.80
    assert overview["challenger"]["version"] == "2"  # no challenger alias: newest non-champion
    assert overview["challenger"]["gates"] == [{"gate": "metrics", "verdict": "failed", "evidence": "too low"}]
    assert overview["history"] == [{"version": "1", "decision": "promoted", "reason": None, "dag_run": None}]
    client.set_registered_model_alias("churn", "challenger", "1")
    assert data.model_overview(Hook(), "churn", "roc_auc")["challenger"]["version"] == "1"
    missing = data.model_overview(Hook(), "fraud", "roc_auc")
    assert "fraud" in missing["error"] and missing["versions"] == []


def test_ledger_absent_says_no_ledger_yet(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ledger(name, *args, **kwargs):
        if name.startswith("airflow_retrain.teardown"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ledger)
    result = data.ledger_rows()
    assert result["available"] is False and result["reason"].startswith(data.LEDGER_MISSING)


def test_weekly_costs_bucket_by_monday():
    entries = [
        {"ts": "2026-11-29T01:00:00Z", "usd": 1.0, "gpu_hours": 0.5},  # Sunday -> week of Mon 23rd
        {"ts": datetime(2026, 11, 23, 0, 0), "usd": 2.0, "gpu_hours": 1.0},
        {"ts": "2026-11-30T00:00:00+00:00", "usd": 4.0, "gpu_hours": None},
    ]
    assert data.weekly_costs(entries) == [
        {"week": "2026-11-23", "usd": 3.0, "gpu_hours": 1.5, "runs": 2},
        {"week": "2026-11-30", "usd": 4.0, "gpu_hours": 0.0, "runs": 1},
    ]


def test_teardown_actions_from_ledger_and_reports():
    ledger = {"available": True, "rows": [{"source": "sweep", "ts": "t", "kind": "stop", "resource": "job-1",
                                           "location": "eu-west-1", "usd": 0.4},
                                          {"source": "training_run", "kind": "train", "resource": "job-2"}]}
    reports = [{"run_id": "r1", "dag_id": "d", "stages": {"teardown": {"stopped_jobs": ["job-3"], "scratch_removed": ["x"]}}}]
    whats = [a["what"] for a in data.teardown_actions(ledger, reports)]
    assert whats == ["stop job-1", "stopped job job-3", "removed run scratch"]


def test_charts_are_inline_svg_and_escape_labels():
    svg = line_chart([("v1", 0.8), ("v<2>", 0.85)], "roc_auc by version", highlight="v1")
    assert svg.startswith("<svg") and "v&lt;2&gt;" in svg and 'class="dot champion"' in svg
    assert "no data yet" in line_chart([], "empty")
    assert "<rect" in bar_chart([("2026-11-23", 1.5)], "USD per week")


@pytest.mark.parametrize(("low", "high", "ticks"), [
    (0.7962, 0.88, [0.75, 0.8, 0.85, 0.9]),
    (0.80, 0.85, [0.8, 0.82, 0.84, 0.86]),
    (0.0, 1.37, [0.0, 0.5, 1.0, 1.5]),
    (3, 97, [0, 50, 100]),
])
def test_axes_have_round_ticks(low, high, ticks):
    from airflow_retrain.ui.charts import nice_ticks

    assert nice_ticks(low, high) == pytest.approx(ticks)


def test_chart_axes_are_labelled_with_round_numbers_and_empty_cost_is_said_in_words():
    svg = line_chart([("v1", 0.7962), ("v2", 0.88)], "roc_auc by version")
    assert ">0.75<" in svg and ">0.90<" in svg and "0.7962<" not in svg.split("<circle")[0]
    zero = bar_chart([("2026-11-23", 0.0), ("2026-11-30", 0.0)], "USD per week")
    assert "<svg" not in zero and "$0 in each of 2 week(s)" in zero
    assert ">$0.000<" in bar_chart([("w", 0.004)], "USD per week") and ">$0.004<" in bar_chart([("w", 0.004)], "USD")


def test_history_entries_fill_version_decision_and_dag_run():
    entry = {"seq": 2, "at": "2026-12-01T00:00:00Z", "action": "kept", "alias": "champion", "from": "1", "to": "1",
             "by": "churn_retrain/scheduled__2026-12-01/promote", "reason": "v2 does not beat v1", "candidate_version": "2"}
    row = data.history_row(entry)
    assert (row["version"], row["decision"], row["dag_run"]) == ("2", "kept", "churn_retrain/scheduled__2026-12-01")
    move = data.history_row({"seq": 1, "action": "promote", "from": None, "to": "1", "by": "d/r/promote"})
    assert (move["version"], move["decision"], move["dag_run"]) == ("1", "promoted", "d/r")


def test_render_escapes_what_it_shows():
    overview = {
        "pipelines": [{"dag_id": "churn_retrain", "schedule": "@weekly", "next_run": None, "paused": False,
                       "model": None, "runs": [{"run_id": "<script>x</script>", "state": "failed",
                                                "outcome": "gate failed: metrics (v2; champion unchanged)",
                                                "stages": {"gate_metrics": "failed"},
                                                "cost": {"compute_seconds": None, "gpu_hours": None, "usd": None}}]}],
        "ledger": {"available": False, "reason": "no ledger yet", "entries": 0},
        "weekly_costs": [], "cost_source": "run reports", "teardown_actions": [],
    }
    page = render(overview)
    assert "<script>x" not in page and "&lt;script&gt;" in page
    assert 'class="outcome-failed">gate failed: metrics' in page
    json.dumps(overview)  # the same data is served as JSON


def _overview(now_iso: str) -> dict:
    versions = [
        {"version": "1", "aliases": [], "metric": 0.84, "metrics": {"roc_auc": 0.84}, "gates": [], "decision": "promoted",
         "reason": "no champion yet", "dag_run": "churn_retrain/r1"},
        {"version": "2", "aliases": ["champion"], "metric": 0.851,
         "metrics": {"roc_auc": 0.851, **{f"gate.data.null_rate.c{i}": 0.0 for i in range(60)}, "gate.metrics.roc_auc": 0.851},
         "gates": [{"gate": "data", "verdict": "passed", "evidence": "data gate passed"},
                   {"gate": "metrics", "verdict": "passed", "evidence": "within bounds"}],
         "decision": "promoted", "reason": "beats v1", "dag_run": "churn_retrain/r2"},
    ]
    history = [data.history_row(e) for e in reversed([
        {"seq": 1, "at": "2026-11-30T00:00:00Z", "action": "promote", "alias": "champion", "from": None, "to": "1",
         "by": "churn_retrain/r1/promote", "reason": "no champion yet", "candidate_version": "1"},
        {"seq": 2, "at": "2026-12-01T00:00:00Z", "action": "promote", "alias": "champion", "from": "1", "to": "2",
         "by": "churn_retrain/r2/promote", "reason": "beats v1", "candidate_version": "2"},
        {"seq": 3, "at": "2026-12-02T00:00:00Z", "action": "kept", "alias": "champion", "from": "2", "to": "2",
         "by": "churn_retrain/r3/promote", "reason": "v3 does not beat v2", "candidate_version": "3"},
    ])]
    run = {"run_id": "r3", "state": "success", "end_date": now_iso, "run_after": now_iso, "stages": {"promote": "skipped"},
           "outcome": "kept v2 because candidate v3 roc_auc 0.8490 vs 0.8510, needs +0.002",
           "cost": {"compute_seconds": 4.0, "gpu_hours": 0.0, "usd": 0.0123}}
    return {
        "pipelines": [{"dag_id": "churn_retrain", "schedule": "At 00:00 on Sunday", "next_run": "2026-12-13T00:00:00Z",
                       "paused": False, "weekly_budget_usd": 50.0, "runs": [run],
                       "model": {"model_name": "churn", "primary_metric": "roc_auc", "greater_is_better": True,
                                 "champion": versions[1], "challenger": None, "versions": versions, "history": history}}],
        "ledger": {"available": False, "reason": "no ledger yet", "entries": 0},
        "weekly_costs": [{"week": "2026-11-30", "usd": 0.0123, "gpu_hours": 0.0, "runs": 1}],
        "cost_source": "run reports", "teardown_actions": [],
    }


def test_first_screen_answers_what_the_last_run_did_and_why():
    from airflow_retrain.ui.render import render as render_page

    now = datetime.now(UTC).isoformat()
    page = render_page(_overview(now))
    glance = page.split('class="glance"', 1)[1].split("<h2", 1)[0]
    assert "kept v2 because candidate v3 roc_auc 0.8490 vs 0.8510, needs +0.002" in glance
    assert 'data-role="champion">v2<' in glance and "roc_auc <b>0.8510</b>" in glance and "▲ +0.0110 vs v1" in glance
    assert "$0.01" in glance and "budget $50.00/week" in glance and "2026-12-13 00:00 UTC" in glance
    # The history row has every column: when, Version, Decision, champion move, reason, DAG run.
    assert ("<tr><td>2026-12-02 00:00 UTC</td><td>v3</td><td>kept</td><td>champion v2 → v2</td><td>v3 does not beat v2</td>"
            "<td>churn_retrain/r3</td></tr>") in page
    # Gate evidence is folded by gate; no raw gate.* metric row sits in the open.
    assert "<details><summary><b>data</b>" in page and "(60 checks)" in page
    assert page.count("null_rate.c1<") == 1 and page.index("null_rate.c1<") > page.index("<details>")
    # A run in flight does not hide what the last finished run did.
    overview = _overview(now)
    overview["pipelines"][0]["runs"].insert(0, {"run_id": "r4", "state": "running", "outcome": "running: train",
                                                "stages": {}, "cost": {"usd": None}})
    glance = render_page(overview).split('class="glance"', 1)[1].split("<h2", 1)[0]
    assert "kept v2 because" in glance and "now running: train" in glance


def test_a_run_stopped_before_its_report_says_where(monkeypatch):
    from airflow_retrain.ui import app

    run = {"state": "failed", "stages": {"prepare_run": "success", "train": "failed", "register": "upstream_failed"}}
    assert app._outcome_without_report(run) == "failed at train (no run report)"
    assert app._outcome_without_report({"state": "running", "stages": {"train": "running"}}) == "running: train"


def test_a_failed_runs_reason_is_shown_escaped_in_the_runs_table_and_first_screen():
    from airflow_retrain.ui.render import render as render_page

    overview = _overview(datetime.now(UTC).isoformat())
    reason = "failed at train: training job churn-1 Failed: ValueError: bad <img src=x onerror=alert(1)> & co"
    overview["pipelines"][0]["runs"].insert(0, {
        "run_id": "r4", "state": "failed", "end_date": datetime.now(UTC).isoformat(), "stages": {"train": "failed"},
        "outcome": f"{reason} (no candidate; champion unchanged)", "cost": {"usd": None}})
    page = render_page(overview)
    shown = "failed at train: training job churn-1 Failed: ValueError: bad &lt;img src=x onerror=alert(1)&gt; &amp; co"
    glance, details = page.split('class="glance"', 1)[1].split("<h2", 1)
    assert f'data-role="last-outcome">{shown} (no candidate; champion unchanged)<' in glance
    assert f'<td class="outcome-failed">{shown} (no candidate; champion unchanged)</td>' in details
    assert "<img" not in page


async def test_a_run_without_report_shows_the_error_its_failed_task_recorded():
    from airflow_retrain.ui import app

    runs = "/api/v2/dags/churn_retrain/dagRuns"
    error = "MlflowException: API request to https://bob:pw123@mlflow.example.com/api failed" + " x" * 400
    routes = {
        runs: {"dag_runs": [{"dag_run_id": "r5", "state": "failed", "note": None}]},
        f"{runs}/r5/taskInstances": {"task_instances": [{"task_id": "train", "state": "success"},
                                                        {"task_id": "register", "state": "failed"}]},
        # The API returns the stored value; a string may come JSON-encoded.
        f"{runs}/r5/taskInstances/register/xcomEntries/retrain_error": {"key": "retrain_error",
                                                                       "value": json.dumps(error)},
    }
    api = data.AirflowApi("http://airflow.test", "t", transport=fake_airflow(routes, []))
    [run] = await app._runs(api, "churn_retrain")
    assert run["outcome"].startswith(
        "failed at register: MlflowException: API request to https://mlflow.example.com/api failed x x")
    assert run["outcome"].endswith("… (no run report)") and "pw123" not in run["outcome"]
    assert len(run["outcome"]) <= len("failed at register: ") + 300 + len(" (no run report)")
