"""The pieces of ``make demo MONITORING=1`` (``scripts/demo_monitoring.py``), each without running a DAG: the
spec copy it runs, the feature shift, the monitoring record it prints, the run it waits for, the make target."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHURN = ROOT / "include" / "pipelines" / "churn.yaml"


@pytest.fixture
def demo():
    spec = importlib.util.spec_from_file_location("demo_monitoring_under_test", ROOT / "scripts" / "demo_monitoring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_spec_is_drift_triggered_only_and_has_no_cooldown(demo, tmp_path, monkeypatch):
    from airflow.sdk import Asset

    from airflow_retrain.dag_factory import _dag_schedule
    from airflow_retrain.monitoring.drift import drift_asset_uri
    from airflow_retrain.spec import load_spec

    raw = yaml.safe_load(CHURN.read_text())
    folder = demo.write_demo_spec(raw, CHURN, tmp_path)
    assert raw["schedule"] == "@weekly" and raw["monitoring"]["cooldown_hours"] == 24  # the original is untouched
    monkeypatch.setenv("RETRAIN_HOME", str(ROOT))
    spec = load_spec(folder / "churn.yaml")  # still a valid spec, checked against the project's dbt models
    assert spec.schedule is None and spec.monitoring.cooldown_hours == 0
    assert _dag_schedule(spec) == Asset(drift_asset_uri("churn"))  # no cron run when the scheduler starts


def test_a_spec_without_monitoring_is_one_clear_error(demo, tmp_path):
    with pytest.raises(SystemExit, match=r"demo --monitoring: spec .*x\.yaml has no monitoring: block"):
        demo.demo_spec({"name": "x"}, tmp_path / "x.yaml")


def test_the_shift_and_the_printed_monitoring_record(demo, tmp_path):
    import duckdb

    from airflow_retrain.monitoring.store import _MONITORING_DDL

    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.telco_customers AS SELECT * FROM (VALUES (0), (5)) t(tenure)")
        con.execute(_MONITORING_DDL)
    assert demo.latest_monitoring("churn", warehouse) is None
    demo.shift_feature(warehouse)
    with duckdb.connect(str(warehouse)) as con:
        assert sorted(r[0] for r in con.execute("SELECT tenure FROM raw.telco_customers").fetchall()) == [0, 45]
        con.execute("INSERT INTO retrain_monitoring VALUES ('churn', 'k', 'scheduled__2', now()::TIMESTAMP, 'churn', "
                    "'2', 7043, 1, 0.04, 0.31, NULL, NULL, 0.845, true, true, 'feature drift: tenure', '{}')")
    row = demo.latest_monitoring("churn", warehouse)
    assert demo.monitoring_line(row) == ("scheduled__2: champion v2, 7043 rows, 1 drifted feature(s), prediction PSI "
                                         "0.310: RETRAIN REQUESTED: feature drift: tenure")


def test_only_asset_triggered_runs_are_waited_for(demo):
    listing = [{"run_id": "manual__1", "state": "success"}, {"run_id": "asset_triggered__2", "state": "running"},
               {"run_id": "scheduled__3", "state": "success"}]
    assert demo.asset_triggered_runs(listing) == [{"run_id": "asset_triggered__2", "state": "running"}]


def test_the_runs_listing_is_read_past_the_warnings_the_cli_prints_first(demo):
    """Airflow 3.3's ``dags list-runs -o json`` prints a graphviz warning on stdout before the array: read
    as a whole, the listing was never JSON and the demo waited its 20 minutes for a run that had finished."""
    stdout = (
        "2026-12-06T12:25:46Z [warning  ] Could not import graphviz. Rendering graph to the graphical format\n"
        "Run `pip install graphviz` to attempt to install it. [py.warnings] category=UserWarning\n"
        '[{"dag_id": "churn_retrain", "run_id": "asset_triggered__2026-12-06T12:13:41_SKvO", "state": "success"}]\n'
    )
    assert demo.parse_runs_listing(stdout) == [
        {"dag_id": "churn_retrain", "run_id": "asset_triggered__2026-12-06T12:13:41_SKvO", "state": "success"}]
    assert demo.parse_runs_listing("") == [] and demo.parse_runs_listing("[not json\n") == []


@pytest.mark.parametrize(("args", "flag"), [(["MONITORING=1"], True), ([], False)])
def test_make_demo_passes_monitoring(args, flag):
    out = subprocess.run(["make", "-n", "demo", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "scripts/demo.py --backend local" in out and ("--monitoring" in out) == flag


def test_monitoring_needs_the_local_backend():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--monitoring", "--backend", "vertex"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--monitoring runs with the local backend only" in out.stderr
