"""`make demo MONITORING=1` (``scripts/demo.py --monitoring``): after the retrain, monitoring and the retrain
that drift triggers, through Airflow itself.

1. the spec runs as a copy whose retrain DAG is scheduled on the drift Asset alone (``schedule: null``, so
   starting a scheduler creates no cron run) with ``monitoring.cooldown_hours: 0`` (a second demo the same
   day triggers again); the retrain DAG is unpaused (Airflow queues Asset-triggered runs of unpaused DAGs only);
2. ``airflow dags test score_<name>`` on the population as loaded: the decision (normally no drift);
3. a feature is shifted in the raw data (``tenure + 40``), and ``score_<name>`` runs again: drift recorded,
   the drift Asset updated with the reason;
4. Airflow's API server, scheduler and triggerer start on a free port (``scripts/ui.py``'s environment)
   until the Asset-triggered retrain run finishes; its outcome (the run note) says why it ran;
5. the raw data is reloaded and the retrain DAG paused again.

CPU heavy (three DAG runs and Airflow's components): minutes on a laptop.
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

SHIFT_SQL = "UPDATE raw.telco_customers SET tenure = tenure + 40 WHERE tenure > 0"
SHIFT_TEXT = "tenure + 40 months for every customer with a tenure (raw.telco_customers)"
RUN_TIMEOUT_S = 1200


def demo_spec(raw_spec: dict, spec_path: Path) -> dict:
    """The spec the monitoring demo runs (see the module's docstring); one clear error without ``monitoring:``."""
    if not isinstance(raw_spec.get("monitoring"), dict):
        raise SystemExit(f"demo --monitoring: spec {spec_path} has no monitoring: block (see docs/monitoring.md)")
    spec = copy.deepcopy(raw_spec)
    spec["schedule"] = None
    spec["monitoring"].update(cooldown_hours=0, trigger_retrain=True)
    return spec


def write_demo_spec(raw_spec: dict, spec_path: Path, state: Path) -> Path:
    """Write :func:`demo_spec` alone into ``<state>/demo/specs-monitoring``; return that folder."""
    folder = state / "demo" / "specs-monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.y*ml"):
        old.unlink()
    (folder / spec_path.name).write_text(yaml.safe_dump(demo_spec(raw_spec, spec_path), sort_keys=False))
    return folder


def latest_monitoring(pipeline: str, warehouse: Path) -> dict | None:
    """The newest row of ``retrain_monitoring`` for ``pipeline`` (read-only), or ``None``."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        row = con.execute(
            "SELECT dag_run_id, model_version, rows_scored, drifted_features, prediction_psi, retrain_requested, "
            "reason FROM retrain_monitoring WHERE pipeline = ? ORDER BY measured_at DESC LIMIT 1", [pipeline]
        ).fetchone()
    keys = ("dag_run_id", "model_version", "rows_scored", "drifted_features", "prediction_psi", "retrain_requested",
            "reason")
    return dict(zip(keys, row, strict=True)) if row else None


def monitoring_line(row: dict | None) -> str:
    if row is None:
        return "no monitoring record (did score run? see the log)"
    decision = "RETRAIN REQUESTED" if row["retrain_requested"] else "no retrain"
    psi = "-" if row["prediction_psi"] is None else f"{row['prediction_psi']:.3f}"
    return (f"{row['dag_run_id']}: champion v{row['model_version']}, {row['rows_scored']} rows, "
            f"{row['drifted_features']} drifted feature(s), prediction PSI {psi}: {decision}: {row['reason']}")


def shift_feature(warehouse: Path) -> None:
    import duckdb

    with duckdb.connect(str(warehouse)) as con:
        con.execute(SHIFT_SQL)


def asset_triggered_runs(listing: list[dict]) -> list[dict]:
    """The Asset-triggered runs in ``airflow dags list-runs -o json`` output (run ids ``asset_triggered__...``)."""
    return [r for r in listing if str(r.get("run_id", "")).startswith("asset_triggered__")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_runs_listing(stdout: str) -> list[dict]:
    """The runs in ``airflow dags list-runs -o json`` output: the JSON array on its own line, after whatever
    warnings the CLI prints to stdout first (Airflow 3.3 prints a graphviz warning there)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("["):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return []


def _list_runs(airflow: str, dag_id: str, env: dict[str, str]) -> list[dict]:
    out = subprocess.run([airflow, "dags", "list-runs", dag_id, "-o", "json"], env=env, capture_output=True, text=True)
    return parse_runs_listing(out.stdout)


def run_triggered_retrain(dag_id: str, env: dict[str, str], log_dir: Path) -> dict | None:
    """Start Airflow's API server, scheduler and triggerer until an Asset-triggered run of ``dag_id`` that was
    not there before has finished; stop them; return that run (``None`` on timeout)."""
    scripts = str(Path(__file__).resolve().parent)
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import ui

    env = dict(env, AIRFLOW__API__PORT=str(free_port()), AIRFLOW__CORE__PARALLELISM="4")
    env = ui.ui_environment(env, ui.admin_password(env))
    airflow = str(Path(sys.executable).parent / "airflow")
    before = {r["run_id"] for r in asset_triggered_runs(_list_runs(airflow, dag_id, env))}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for component in ("api-server", "scheduler", "triggerer"):
            log = open(log_dir / f"{component}.log", "w")  # noqa: SIM115 - closed with the process below
            procs[component] = subprocess.Popen([airflow, component], env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
            if component == "api-server":  # tasks started before it listens would fail "Connection refused"
                base = env["AIRFLOW__API__BASE_URL"].rstrip("/")
                deadline = time.monotonic() + 180
                while not ui._answers(f"{base}/api/v2/version") and time.monotonic() < deadline:
                    time.sleep(2)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            if gone := next((n for n, p in procs.items() if p.poll() is not None), None):
                print(f"!! {gone} exited (code {procs[gone].returncode}); see {log_dir / (gone + '.log')}")
                return None
            new = [r for r in asset_triggered_runs(_list_runs(airflow, dag_id, env)) if r["run_id"] not in before]
            done = [r for r in new if r.get("state") in ("success", "failed")]
            if done:
                return done[0]
            time.sleep(10)
        print(f"!! no Asset-triggered run of {dag_id} finished within {RUN_TIMEOUT_S} s; logs in {log_dir}")
        return None
    finally:
        for name, proc in reversed(procs.items()):
            ui._stop(proc, name)


def run_demo(*, env: dict[str, str], state: Path, pipeline: str, dag_id: str, latest_report, read_report,
             reload_data) -> int:
    """Steps 2-5 of the module's docstring, after ``dag_id`` promoted a champion. ``0`` when the drift-triggered
    retrain ran and its outcome says why."""
    from airflow_retrain.report import format_report, run_outcome

    log_dir = state / "demo" / "monitoring"
    log_dir.mkdir(parents=True, exist_ok=True)
    warehouse = state / "warehouse.duckdb"
    score = f"score_{pipeline}"
    subprocess.run(["airflow", "dags", "unpause", dag_id], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        for n, title in ((1, "the population as loaded"), (2, f"after shifting a feature: {SHIFT_TEXT}")):
            if n == 2:
                shift_feature(warehouse)
            print(f"==> Scoring with the champion: {score} on {title} (log: {log_dir / f'{score}_{n}.log'})", flush=True)
            with open(log_dir / f"{score}_{n}.log", "w") as log:
                subprocess.run(["airflow", "dags", "test", score], env=env, stdout=log, stderr=subprocess.STDOUT)
            row = latest_monitoring(pipeline, warehouse)
            print(f"    {monitoring_line(row)}")
        if not (row and row["retrain_requested"]):
            print(f"!! the shifted population requested no retrain; see {log_dir}")
            return 1
        print(f"==> Starting Airflow's scheduler until the drift-triggered {dag_id} run finishes (logs: {log_dir})",
              flush=True)
        run = run_triggered_retrain(dag_id, env, log_dir)
        if run is None:
            return 1
        report = read_report(latest_report)
        if not report or report.get("run_id") != run["run_id"]:
            print(f"!! {run['run_id']} ({run.get('state')}) wrote no report; see {log_dir / 'scheduler.log'}")
            return 1
        print()
        print(format_report(report))
        print()
        print(f"  outcome of {run['run_id']} (its run note): {run_outcome(report)}")
        return 0 if run.get("state") == "success" else 1
    finally:
        print("==> Restoring the raw data and pausing the retrain DAG again", flush=True)
        reload_data(str(warehouse))
        subprocess.run(["airflow", "dags", "pause", dag_id], env=env, stdout=subprocess.DEVNULL)
