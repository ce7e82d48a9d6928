"""`make cost-report` rejects out-of-range arguments with one message naming the flag (exit 2), never a traceback
or a silently empty report."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime

import pytest


@pytest.fixture
def cost_report(root):
    spec = importlib.util.spec_from_file_location("cost_report_script", root / "scripts" / "cost_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--days", "99999999999"], "argument --days: must be a whole number of days from 1 to 3650, got '99999999999'"),
        (["--days", "-5"], "argument --days: must be a whole number of days from 1 to 3650, got '-5'"),
        (["--days", "0"], "argument --days: must be a whole number of days from 1 to 3650, got '0'"),
        (["--days", "3651"], "argument --days: must be a whole number of days from 1 to 3650, got '3651'"),
        (["--days", "1.5"], "argument --days: must be a whole number of days from 1 to 3650, got '1.5'"),
        (["--days", "1e9"], "argument --days: must be a whole number of days from 1 to 3650, got '1e9'"),
        (["--conn-id", ""], "argument --conn-id: must be an Airflow connection id"),
        (["--conn-id", "x" * 251], "argument --conn-id: must be an Airflow connection id"),
        (["--conn-id", "a b;rm"], "argument --conn-id: must be an Airflow connection id"),
        (["--conn-id", "no_such_ledger_conn"], "argument --conn-id: connection 'no_such_ledger_conn' is not defined"),
        (["--json", "yes"], "unrecognized arguments: yes"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(cost_report, capsys, monkeypatch, argv, message):
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_LEDGER_CONN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cost_report.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("days", ["1", "3650"])
def test_days_at_the_bounds_report(cost_report, capsys, monkeypatch, tmp_path, days):
    from airflow_retrain.teardown.ledger import CostLedger, LedgerEntry

    path = tmp_path / "w.duckdb"
    params = type("P", (), {"kind": "duckdb", "duckdb_path": str(path), "describe": lambda self: "x"})()
    now = datetime.now(UTC)
    CostLedger(params).write([LedgerEntry("e1", now, "churn", "training_job", "r1", "sagemaker", "us-east-1",
                                          "ml.g5.xlarge", 1, 3600.0, 1.0, 1.25, "on_demand", None, "training_run")])
    monkeypatch.setenv("AIRFLOW_CONN_COST_ARGS", json.dumps({"conn_type": "duckdb", "host": str(path)}))
    assert cost_report.main(["--conn-id", "cost_args", "--days", days, "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert report["weekly"][0]["usd"] == 1.25
