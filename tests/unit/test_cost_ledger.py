"""The cost ledger: training runs recorded by the teardown task, summaries, the weekly budget, the report."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest
from helpers import stop_running_jobs, wait_for

from airflow_retrain.cost import estimate_cost
from airflow_retrain.operators.teardown import TeardownRunOperator
from airflow_retrain.runs import RunIdentity
from airflow_retrain.teardown.ledger import CostLedger, LedgerEntry, format_cost_report, summarize, week_start
from airflow_retrain.training.base import TrainingJobRequest
from airflow_retrain.training.local import LocalTrainingBackend

DAG_ID = "unit_ledger"


@pytest.fixture
def ledger_conn(tmp_path, monkeypatch) -> str:
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("AIRFLOW_CONN_LEDGER_DUCK", json.dumps({"conn_type": "duckdb", "host": str(path)}))
    return "ledger_duck"


@pytest.fixture
def backend(tmp_path):
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs")
    yield backend
    stop_running_jobs(backend)


def run_jobs(backend, tmp_path, run: RunIdentity, n: int) -> list[str]:
    entry = tmp_path / "train.py"
    entry.write_text(textwrap.dedent("""
        import time; time.sleep(0.3)
    """))
    (tmp_path / "train").mkdir(exist_ok=True)
    names = []
    for attempt in range(1, n + 1):
        name = run.job_name(attempt)
        backend.submit(TrainingJobRequest(job_name=name, entry_point=str(entry), channels={"train": str(tmp_path / "train")},
                                          tags=run.job_tags()))
        names.append(name)
    for name in names:
        wait_for(lambda name=name: backend.describe(name).state.terminal, timeout=30)
    return names


def warnings_in(output: str) -> list[str]:
    """Task-log warnings as Airflow's structured logger prints them."""
    return [line for line in output.splitlines() if "[warning" in line]


def test_teardown_records_each_job_at_billable_seconds_times_price(backend, tmp_path, make_context, ledger_conn, capsys):
    run = RunIdentity("churn", DAG_ID, f"manual__{tmp_path.name}")
    names = run_jobs(backend, tmp_path, run, 2)
    op = TeardownRunOperator(task_id="teardown", pipeline="churn", backend_config={"jobs_dir": str(backend.jobs_dir)},
                             hourly_price_usd=36.0, warehouse_conn_id=ledger_conn, weekly_budget_usd=0.001)
    result = op.execute(make_context(DAG_ID, run.run_id))
    rows = CostLedger.from_connection(ledger_conn).rows()
    assert [r["resource"] for r in rows] == sorted(names, key=lambda n: backend.describe(n).ended_at)
    for row in rows:
        job = backend.describe(row["resource"])
        # Hand-computed: billable seconds x 1 instance x $36/h = $0.01 per second.
        assert row["seconds"] == job.billable_seconds > 0.3
        assert row["usd"] == pytest.approx(job.billable_seconds * 0.01, abs=1e-6)
        assert row["usd"] == estimate_cost("local", "local", job.billable_seconds, 1, 36.0).usd
        assert (row["pipeline"], row["kind"], row["source"], row["pricing"]) == ("churn", "training_job", "training_run", "on_demand")
        assert row["details"]["run_key"] == run.run_key and row["details"]["hourly_price_usd"] == 36.0
        assert row["ts"] == datetime.fromtimestamp(job.ended_at, UTC).replace(microsecond=row["ts"].microsecond)
    assert sum(r["usd"] for r in rows) == pytest.approx(result["cost_usd"], abs=1e-6)
    (warning,) = warnings_in(capsys.readouterr().out)
    spent = sum(r["usd"] for r in rows)
    assert f"Budget: pipeline churn spent ${spent:.2f} this week, over its weekly budget of $0.00" in warning

    # A retried teardown records the same jobs again, never twice.
    op.execute(make_context(DAG_ID, run.run_id))
    assert len(CostLedger.from_connection(ledger_conn).rows()) == 2


def test_no_budget_warning_within_budget(backend, tmp_path, make_context, ledger_conn, capsys):
    run = RunIdentity("churn", DAG_ID, f"manual__{tmp_path.name}")
    run_jobs(backend, tmp_path, run, 1)
    op = TeardownRunOperator(task_id="teardown", pipeline="churn", backend_config={"jobs_dir": str(backend.jobs_dir)},
                             hourly_price_usd=1.0, warehouse_conn_id=ledger_conn, weekly_budget_usd=100.0)
    op.execute(make_context(DAG_ID, run.run_id))
    assert "Cost ledger: 1 job(s) recorded" in capsys.readouterr().out
    assert not [w for w in warnings_in(capsys.readouterr().out) if "budget" in w]


def test_ledger_failure_fails_teardown_after_stopping(backend, tmp_path, make_context, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LEDGER_BAD", json.dumps({"conn_type": "duckdb", "host": str(tmp_path / "no" / "dir" / "\0x")}))
    run = RunIdentity("churn", DAG_ID, f"manual__{tmp_path.name}")
    run_jobs(backend, tmp_path, run, 1)
    op = TeardownRunOperator(task_id="teardown", pipeline="churn", backend_config={"jobs_dir": str(backend.jobs_dir)},
                             warehouse_conn_id="ledger_bad")
    with pytest.raises(RuntimeError, match="cost ledger"):
        op.execute(make_context(DAG_ID, run.run_id))


def entry(i: int, ts: datetime, pipeline: str, usd: float, seconds: float, gpu_hours: float, pricing: str = "on_demand",
          source: str = "training_run", saving: float | None = None) -> LedgerEntry:
    return LedgerEntry(f"e{i}", ts, pipeline, "training_job" if source == "training_run" else "sagemaker.endpoint",
                       f"r{i}", "sagemaker", "us-east-1", "ml.g5.xlarge", 1, seconds, gpu_hours, usd, pricing, saving,
                       source, {})


def test_summary_per_day_week_spot_and_waste(tmp_path):
    ledger = CostLedger(type("P", (), {"kind": "duckdb", "duckdb_path": str(tmp_path / "w.duckdb"),
                                        "describe": lambda self: "duckdb"})())
    mon = datetime(2026, 11, 23, 10, tzinfo=UTC)  # a Monday
    tue, next_mon = mon.replace(day=24), mon.replace(day=30)
    ledger.write([
        entry(1, mon, "churn", 1.5, 3600, 1.0),
        entry(2, mon, "churn", 0.5, 3600, 1.0, pricing="spot"),
        entry(3, tue, "churn", 2.0, 7200, 2.0),
        entry(4, tue, "fraud", 4.0, 3600, 8.0),
        entry(5, next_mon, "churn", 1.0, 1800, 0.5),
        entry(6, tue, "churn", 0.7, 1800, 0.5, source="sweep", saving=1.4),
    ])
    now = (tue.replace(hour=12)).timestamp()
    summary = summarize(ledger.rows(), now)
    daily = {(d["day"], d["pipeline"]): d for d in summary["daily"]}
    assert daily[("2026-11-23", "churn")] == {"day": "2026-11-23", "pipeline": "churn", "jobs": 2, "gpu_hours": 2.0,
                                               "usd_on_demand": 1.5, "usd_spot": 0.5, "usd": 2.0}
    assert daily[("2026-11-24", "fraud")]["usd"] == 4.0
    weekly = {(w["week"], w["pipeline"]): w for w in summary["weekly"]}
    assert weekly[("2026-11-23", "churn")]["usd"] == 4.0 and weekly[("2026-11-23", "churn")]["gpu_hours"] == 4.0
    assert weekly[("2026-11-30", "churn")]["usd"] == 1.0
    (waste,) = summary["sweeps"]
    # Stopped at 10:00 at $1.40/h; the report at 12:00: $2.80 not burned since.
    assert waste == {"week": "2026-11-23", "pipeline": "churn", "resources": 1, "uptime_hours": 0.5, "gpu_hours": 0.5,
                     "usd_until_stopped": 0.7, "saving_usd_per_hour": 1.4, "est_saved_usd": 2.8}
    assert ledger.week_usd("churn", now) == 4.0  # training runs only, this ISO week
    assert ledger.week_usd("churn", next_mon.timestamp()) == 1.0
    text = format_cost_report(summary, "duckdb", budgets={"churn": 3.0})
    assert "OVER 3" in text and "within 3" in text
    assert "Waste stopped by the gpu_teardown sweeps" in text
    assert week_start(tue) == mon.replace(hour=0)


@pytest.mark.slow
def test_make_cost_report_prints_the_ledger(tmp_path, root, monkeypatch):
    path = tmp_path / "w.duckdb"
    ledger = CostLedger(type("P", (), {"kind": "duckdb", "duckdb_path": str(path), "describe": lambda self: "x"})())
    ledger.write([entry(1, datetime.now(UTC), "churn", 1.25, 3600, 1.0),
                  entry(2, datetime.now(UTC), "churn", 0.5, 600, 0.1, source="sweep", saving=3.0)])
    env = {**__import__("os").environ, "AIRFLOW_CONN_COST_DUCK": json.dumps({"conn_type": "duckdb", "host": str(path)})}
    out = subprocess.run([sys.executable, str(root / "scripts" / "cost_report.py"), "--conn-id", "cost_duck", "--json"],
                         capture_output=True, text=True, env=env, check=True)
    report = json.loads(out.stdout[out.stdout.index("{"):])
    assert report["weekly"][0]["usd"] == 1.25
    assert report["sweeps"][0]["saving_usd_per_hour"] == 3.0


def test_duckdb_ledger_waits_for_a_writer_holding_the_file(tmp_path):
    path = tmp_path / "w.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('held', flush=True); time.sleep(2)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # e.g. a dbt build holding the warehouse
        ledger = CostLedger(type("P", (), {"kind": "duckdb", "duckdb_path": str(path), "describe": lambda self: "x"})())
        assert ledger.write([entry(1, datetime.now(UTC), "churn", 1.0, 60, 0.0)]) == 1
        assert [r["entry_id"] for r in ledger.rows()] == ["e1"]
    finally:
        holder.kill()
        holder.wait()
