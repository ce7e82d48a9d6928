"""Benchmark: cost of parsing dags/retrain.py against the floor, importing Airflow's Task SDK alone.

Each sample is a fresh interpreter (as the dag-processor's parse of a file is), run alternately so both
see the same machine load. Prints a table of medians and the ratio.

    .venv/bin/python bench/dag_parse.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "import airflow.sdk (floor)": "import airflow.sdk",
    "parse dags/retrain.py (1 spec)": f"import runpy; runpy.run_path({str(ROOT / 'dags' / 'retrain.py')!r})",
    "parse + build, then import mlflow (what we avoid)": (
        f"import runpy; runpy.run_path({str(ROOT / 'dags' / 'retrain.py')!r}); import mlflow, pandas, duckdb"
    ),
}


def sample(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ, RETRAIN_HOME=str(ROOT), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    env.setdefault("AIRFLOW_HOME", str(ROOT / ".local" / "airflow"))
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for code in CASES.values():  # warm the OS cache once
        sample(code, env)
    for _ in range(args.repeat):
        for name, code in CASES.items():
            times[name].append(sample(code, env))
    floor = statistics.median(times["import airflow.sdk (floor)"])
    print(f"{'case':52} {'median s':>9} {'min s':>7} {'x floor':>8}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:52} {med:9.2f} {min(values):7.2f} {med / floor:8.2f}")


if __name__ == "__main__":
    main()
