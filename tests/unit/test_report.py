"""The run report: gathered from every stage's XCom, stored as JSON, rendered for people."""

from __future__ import annotations

import json

import pytest

from airflow_retrain.operators.report import RunReportOperator
from airflow_retrain.report import format_report
from airflow_retrain.runs import RunIdentity

STAGES = {
    "dbt_build": {"models_built": 2, "models_total": 2, "tests_passed": 41, "tests_total": 41, "tests_warned": 0,
                  "elapsed_seconds": 7.5, "warehouse": "duckdb:/x"},
    "export_dataset": {"relation": "marts.churn_features", "rows": {"train": 5620, "test": 1423},
                       "label_rate": {"train": 0.263, "test": 0.274}, "fingerprint": "8b72"},
    "train": {"job_name": "churn-1", "backend": "local", "info": {"device": "cuda"}, "compute_seconds": 4.0,
              "cost": {"usd": 0.0}, "metrics": {"roc_auc": 0.8381, "log_loss": None}},
    "register": {"model_name": "churn", "version": "2", "run_id": "abc"},
    "gate_metrics": {"passed": True, "message": "metric gate passed: roc_auc 0.8381 within bounds"},
    "promote": {"decision": "kept_champion", "reason": "v2 does not beat v1", "model_name": "churn",
                "champion_after": "1"},
    "teardown": {"jobs": [{}], "stopped_jobs": [], "compute_seconds": 4.0, "cost_usd": 0.0, "scratch_removed": "/s"},
}


def test_report_operator_writes_and_renders(make_context, tmp_path):
    ctx = make_context(dag_id="churn_retrain", run_id="r1", pulled=STAGES)
    store = tmp_path / "store"
    op = RunReportOperator(
        task_id="report", pipeline="churn", stage_task_ids=list(STAGES), artifact_root=store.as_uri()
    )
    result = op.execute(ctx)
    run_key = RunIdentity("churn", "churn_retrain", "r1").run_key
    assert result["report_uri"] == (store / "churn_retrain" / run_key / "report.json").as_uri()
    report = json.loads((store / "churn_retrain" / run_key / "report.json").read_text())
    assert report["stages"] == STAGES
    assert report["dag_id"] == "churn_retrain" and report["run_id"] == "r1"
    latest = store / "churn_retrain" / "latest_report.json"
    assert json.loads(latest.read_text()) == report
    # XCom gets the URI and a few facts, not the report.
    assert result["outcome"] == "kept v1 because candidate v2 did not beat it"
    assert ctx["ti"].xcoms["run_report"] == report  # readable in the UI's XCom tab
    assert result["summary"] == {
        "pipeline": "churn", "outcome": "kept v1 because candidate v2 did not beat it", "run_key": run_key, "failed_tasks": [], "job_name": "churn-1",
        "metrics": {"roc_auc": 0.8381, "log_loss": None}, "version": "2", "decision": "kept_champion",
        "champion_after": "1", "cost_usd": 0.0,
    }
    text = format_report(report)
    assert "2/2 models built, 41/41 tests passed" in text
    assert "job churn-1 on local (cuda): 4.0 compute s, est. $0.0000" in text
    assert "roc_auc=0.8381, log_loss=-" in text
    assert "KEPT_CHAMPION: v2 does not beat v1" in text
    assert "churn@champion = version 1" in text
    assert "scratch removed" in text
    lines = text.splitlines()
    for line in (
        "  dbt build      2/2 models built, 41/41 tests passed (7.5 s, duckdb:/x)",
        "  dataset        marts.churn_features: train 5620 rows, holdout 1423 rows, label rate 0.263/0.274, "
        "fingerprint 8b72",
        "  registered     churn version 2 (MLflow run abc)",
        "  teardown       1 job(s), 0 stopped, 4.0 compute s, est. $0.0000; scratch removed",
    ):
        assert line in lines


def test_report_without_results_gives_each_stage_its_state():
    text = format_report({"pipeline": "churn", "task_states": {"dbt_build": "failed", "teardown": "success"}})
    lines = text.splitlines()
    for line in ("  dbt build      failed", "  dataset        no result", "  registered     no result",
                 "  teardown       success"):
        assert line in lines


def test_report_of_a_failed_run_says_where_it_stopped():
    report = {
        "pipeline": "churn",
        "dag_id": "churn_retrain",
        "run_id": "r2",
        "task_states": {"train": "failed", "register": "upstream_failed"},
        "stages": {k: STAGES[k] for k in ("dbt_build", "export_dataset", "teardown")},
    }
    text = format_report(report)
    assert "training       failed" in text
    assert "registered     upstream_failed" in text
    assert "promotion      no result (champion unchanged)" in text


def _verdict(gate, passed, message, checks=1, **details):
    return {"gate": gate, "passed": passed, "message": message, "details": details,
            "checks": [{"name": f"c{i}", "observed": 0.1, "min": None, "max": 0.2, "passed": passed,
                        "reason": "skipped: x" if i == 0 and passed else "r"} for i in range(checks)]}


def test_report_shows_each_gate_verdict():
    stages = {k: v for k, v in STAGES.items() if k != "gate_metrics"}
    stages["gate_data"] = {"passed": True, "verdict": _verdict("data", True, "data gate passed", checks=40)}
    stages["gate_model"] = {"verdicts": {
        "data": _verdict("data", True, "data gate passed", checks=40),
        "metrics": _verdict("metrics", True, "metric gate passed", checks=3),
        "champion": _verdict("champion", False, "champion gate failed: candidate roc_auc=0.8381 does not beat "
                             "champion v1 roc_auc=0.8390", decision="does_not_beat"),
        "slices": _verdict("slices", True, "slice gate passed", checks=6),
    }}
    text = format_report({"pipeline": "churn", "dag_id": "churn_retrain", "run_id": "r3", "stages": stages})
    assert "  gate data       PASSED (40 checks, 1 skipped)" in text
    assert text.count("gate data") == 1
    assert "  gate champion   NOT BETTER: candidate roc_auc=0.8381 does not beat champion v1" in text
    assert "  gate slices     PASSED (6 checks, 1 skipped)" in text
    assert text.index("gate data") < text.index("training") < text.index("gate metrics")


def test_report_of_a_failed_data_gate_names_the_number_and_threshold():
    report = {
        "pipeline": "churn", "dag_id": "churn_retrain", "run_id": "r4",
        "task_states": {"gate_data": "failed", "train": "upstream_failed", "gate_model": "upstream_failed"},
        "stages": {k: STAGES[k] for k in ("dbt_build", "export_dataset", "teardown")},
        "gate_verdicts": {"gate_data": [_verdict("data", False, "data gate failed: PSI of charges 1.2 > max 0.2")]},
    }
    text = format_report(report)
    assert "  gate data       FAILED: data gate failed: PSI of charges 1.2 > max 0.2" in text
    assert "  gate_model     upstream_failed" in text


@pytest.mark.parametrize(
    ("stages", "states", "outcome"),
    [
        ({"register": {"version": "3"}, "promote": {"decision": "promoted", "champion_after": "3", "champion_before": "1"}},
         {}, "promoted v3 (was v1)"),
        ({"register": {"version": "1"}, "promote": {"decision": "promoted", "champion_after": "1", "champion_before": None}},
         {}, "promoted v1 (first champion)"),
        ({"register": {"version": "2"}, "promote": {"decision": "kept_champion", "champion_after": "1"}},
         {}, "kept v1 because candidate v2 did not beat it"),
        ({"register": {"version": "2"}}, {"gate_metrics": "failed", "promote": "upstream_failed"},
         "gate failed: metrics (v2; champion unchanged)"),
        ({}, {"train": "failed", "register": "upstream_failed"}, "failed at train (no candidate; champion unchanged)"),
        ({"register": {"version": "4"}, "promote": {"decision": "kept_champion", "champion_after": "3",
                                                    "primary_metric": "roc_auc", "candidate_value": 0.8412,
                                                    "champion_value": 0.845, "min_improvement": 0.002}},
         {"promote": "skipped"}, "kept v3 because candidate v4 roc_auc 0.8412 vs 0.8450, needs +0.002"),
        ({"register": {"version": "4"}, "promote": {"decision": "rejected", "champion_after": "3",
                                                    "reason": "beats v3; not approved by ana: data looks off"}},
         {"promote": "skipped"}, "kept v3 because candidate v4 not approved by ana: data looks off"),
    ],
)
def test_run_outcome_tells_runs_apart(stages, states, outcome):
    from airflow_retrain.report import run_outcome

    assert run_outcome({"stages": stages, "task_states": states}) == outcome


def test_a_failed_gate_names_its_failed_checks():
    from airflow_retrain.report import run_outcome

    check = {"name": "roc_auc", "observed": 0.71, "passed": False, "reason": "below min"}
    report = {"stages": {"register": {"version": "2"}},
              "task_states": {"gate_model": "failed", "promote": "upstream_failed"},
              "gate_verdicts": {"gate_model": [{"gate": "metrics", "passed": False, "checks": [check]},
                                               {"gate": "champion", "passed": False, "checks": [check]}]}}
    assert run_outcome(report) == "gate failed: model: roc_auc 0.7100 (v2; champion unchanged)"


def test_a_dry_run_says_so():
    from airflow_retrain.report import run_outcome

    report = {"params": {"dry_run": True}, "stages": {"register": {"version": "5"}, "promote": {
        "decision": "dry_run", "reason": "would be promoted over v4 (dry_run: nothing moved)"}}}
    assert run_outcome(report) == "dry run: v5 would be promoted over v4 (dry_run: nothing moved)"
