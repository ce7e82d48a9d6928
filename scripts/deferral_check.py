#!/usr/bin/env python3
"""Prove the SageMaker train task defers on a real Airflow: scheduler + triggerer + LocalExecutor.

Starts the fake cloud (``scripts/fake_cloud``; every job trains at least ``--job-seconds``) and
``airflow standalone`` (api-server, scheduler, dag-processor, triggerer; LocalExecutor, parallelism 2)
in a throw-away ``AIRFLOW_HOME``, triggers ``churn_retrain`` built from
``include/examples/sagemaker/churn.yaml`` through the REST API, and samples every ``--every`` seconds the
state of each task instance and the ``default_pool``'s running/deferred slots. It prints the timeline
and a verdict: while the job trained, ``train`` was ``deferred`` and no task held a worker slot
(``running_slots`` 0, ``deferred_slots`` 1), the job was one ``CreateTrainingJob``, and the run succeeded.
Everything it started is stopped at the end (SIGINT to standalone, then its children by PID).

    .venv/bin/python scripts/deferral_check.py [--port 8101] [--cloud-port 19120] [--job-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
DAG_ID = "churn_retrain"


def _api(base: str, method: str, path: str, token: str | None = None, payload: dict | None = None) -> dict:
    request = urllib.request.Request(f"{base}{path}", method=method,
                                     data=json.dumps(payload).encode() if payload is not None else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8101, help="Airflow api-server port")
    parser.add_argument("--cloud-port", type=int, default=19120,
                        help="fake cloud port (the next two: worker and triggerer log servers)")
    parser.add_argument("--job-seconds", type=float, default=60.0, help="minimum training time of the job")
    parser.add_argument("--every", type=float, default=3.0, help="sampling interval, seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--json", dest="json_path", help="write the timeline to this file")
    args = parser.parse_args()

    import psutil
    from demo import EMBEDDED_WAREHOUSE_POOL, load_fake_cloud_module

    work = Path(tempfile.mkdtemp(prefix="deferral-check-"))
    specs = work / "specs"
    specs.mkdir()
    import yaml

    raw = yaml.safe_load((ROOT / "include/examples/sagemaker/churn.yaml").read_text())
    raw["schedule"] = None  # only the run this script triggers: a scheduled run would share the pool
    (specs / "churn.yaml").write_text(yaml.safe_dump(raw))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what it started on SIGTERM too
    env = dict(os.environ)
    env.update({
        "RETRAIN_HOME": str(ROOT), "RETRAIN_STATE_DIR": str(work / "state"), "RETRAIN_SPECS_DIR": str(specs),
        "AIRFLOW_HOME": str(work / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False", "AIRFLOW__API__PORT": str(args.port),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # standalone runs a triggerer: deferrable operators defer (the train task's default follows this).
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
        # Workers reach the task execution API on this api-server (the default is port 8080).
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{args.port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(args.cloud_port + 1),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(args.cloud_port + 2),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.pop("RETRAIN_DEFERRABLE", None)  # the retired switch would override the option above
    (work / "state").mkdir()
    loader = runpy.run_path(str(ROOT / "include" / "data" / "load_churn.py"))
    loader["load_to_duckdb"](str(work / "state" / "warehouse.duckdb"))

    fake_cloud = load_fake_cloud_module()
    cloud = fake_cloud.start_fake_cloud(args.cloud_port, work / "cloud", config={"min_training_seconds": args.job_seconds})
    standalone = None
    children: set[int] = set()
    timeline: list[dict] = []
    try:
        cloud.bootstrap("airflow-retrain-demo", "airflow-retrain-training")
        cloud.reset_calls()
        env.update(cloud.airflow_env("aws_default"))
        subprocess.run(["airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["airflow", "pools", "set", EMBEDDED_WAREHOUSE_POOL, "1", "embedded DuckDB"], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        log = open(work / "standalone.log", "wb")  # noqa: SIM115 - closed with the process
        standalone = subprocess.Popen(["airflow", "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        base = f"http://127.0.0.1:{args.port}"
        began = time.monotonic()
        while True:
            try:
                _api(base, "GET", "/api/v2/version")
                break
            except OSError:
                if time.monotonic() - began > 600 or standalone.poll() is not None:
                    raise SystemExit(f"airflow standalone did not answer; see {work / 'standalone.log'}") from None
                time.sleep(2)
        print(f"airflow standalone answered after {time.monotonic() - began:.0f} s (log {work / 'standalone.log'})")
        passwords = json.loads((work / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        user, password = next(iter(passwords.items()))
        token = _api(base, "POST", "/auth/token", payload={"username": user, "password": password})["access_token"]
        while True:  # the dag-processor parses the DAG file first
            try:
                _api(base, "GET", f"/api/v2/dags/{DAG_ID}", token)
                break
            except urllib.error.HTTPError:
                time.sleep(2)
        run = _api(base, "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", token,
                   {"logical_date": None, "dag_run_id": "deferral_check"})
        run_id = run["dag_run_id"]
        started = time.monotonic()
        while time.monotonic() - started < args.timeout:
            children |= {p.pid for p in psutil.Process(standalone.pid).children(recursive=True)}
            tis = _api(base, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", token)["task_instances"]
            pool = _api(base, "GET", "/api/v2/pools/default_pool", token)
            state = _api(base, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", token)["state"]
            sample = {"t": round(time.monotonic() - started, 1), "run": state,
                      "tasks": {ti["task_id"]: ti["state"] for ti in tis},
                      "running_slots": pool["running_slots"], "deferred_slots": pool["deferred_slots"]}
            timeline.append(sample)
            busy = {k: v for k, v in sample["tasks"].items() if v not in (None, "success", "scheduled")}
            print(f"t={sample['t']:6.1f}s run={state:8} running_slots={sample['running_slots']} "
                  f"deferred_slots={sample['deferred_slots']} {busy}", flush=True)
            if state in ("success", "failed"):
                break
            time.sleep(args.every)
        calls = cloud.calls()
    finally:
        if standalone is not None:
            children |= {p.pid for p in psutil.Process(standalone.pid).children(recursive=True)}
            standalone.send_signal(signal.SIGINT)
            try:
                standalone.wait(60)
            except subprocess.TimeoutExpired:
                standalone.kill()
            for pid in children:
                try:
                    psutil.Process(pid).kill()
                except psutil.NoSuchProcess:
                    pass
        cloud.stop()
    deferred = [s for s in timeline if s["tasks"].get("train") == "deferred"]
    verdict = {
        "run_state": timeline[-1]["run"] if timeline else None,
        "samples": len(timeline),
        "samples_train_deferred": len(deferred),
        "deferred_samples_with_a_running_slot": sum(1 for s in deferred if s["running_slots"]),
        "create_training_job_calls": calls.get("sagemaker:CreateTrainingJob", 0),
        "describe_training_job_calls": calls.get("sagemaker:DescribeTrainingJob", 0),
    }
    print(json.dumps(verdict, indent=1))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"verdict": verdict, "timeline": timeline}, indent=1))
    ok = (verdict["run_state"] == "success" and deferred and not verdict["deferred_samples_with_a_running_slot"]
          and verdict["create_training_job_calls"] == 1)
    print("deferral proven" if ok else "deferral NOT proven")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
