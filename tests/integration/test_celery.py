"""The docker-compose topology without containers: CeleryExecutor with a real Redis broker (Debian's
redis-server, started by scripts/services.sh), and api-server, scheduler, dag-processor and two Celery
workers as separate processes, each worker with its own scratch dir. The
churn DAG runs end to end through them; the run's note comes back through the REST API.

The metadata DB is SQLite here: in Airflow 3 the workers never open it (they talk to the api-server's
execution API), and Postgres as Airflow's metadata DB needs an async driver (asyncpg) that the lock does
not carry outside the official image (docker-compose uses the image's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import bound, require_service, wait_for
from mlflow_server import free_port

# Runs here retrain the same inputs as an earlier champion of the session: force them to train.
FORCE = {"force": True}

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("RETRAIN_TEST_CELERY_API_PORT") or free_port())  # a free one unless given
BASE = f"http://127.0.0.1:{PORT}"
USER, PASSWORD = "admin", "retrain-celery-admin"
pytestmark = pytest.mark.integration


def _service(var: str) -> str:
    return require_service(var, "scripts/services.sh start provides it; Redis needs redis-server")


def _celery_provider_importable() -> None:
    try:
        import airflow.providers.celery.executors.celery_executor_utils  # noqa: F401
    except ImportError as e:
        # The lock pairs celery 5.7.0 with apache-airflow-providers-celery 3.26.0 (the newest), which
        # imports celery.backends.database.retry, removed in celery 5.7: no Celery worker can start.
        pytest.skip(f"the Celery provider cannot import ({e}): the lock needs celery<5.7 (5.6.3 works)")


def test_churn_dag_runs_on_celery_workers(tmp_path, churn_loader):
    import httpx

    _celery_provider_importable()
    broker = _service("RETRAIN_TEST_REDIS_URL")
    db = f"sqlite:///{tmp_path / 'airflow.db'}"
    state = tmp_path / "state"
    churn_loader["load_to_duckdb"](str(state / "warehouse.duckdb"))
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "RETRAIN_STATE_DIR": str(state),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+sqlite:///{tmp_path / 'celery-results.db'}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__PORT": str(PORT),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{BASE}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": "retrain-celery-test-jwt-secret-0123456789",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW_CONN_RETRAIN_AIRFLOW_API": json.dumps(
            {"conn_type": "http", "host": BASE, "login": USER, "password": PASSWORD}
        ),
    }
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([*airflow, "pools", "set", "retrain_embedded_warehouse", "1", "embedded DuckDB"], env=env,
                   check=True, capture_output=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    commands = {
        "api-server": [*airflow, "api-server", "--port", str(PORT)],
        "scheduler": [*airflow, "scheduler"],
        "dag-processor": [*airflow, "dag-processor"],
        "triggerer": [*airflow, "triggerer"],  # deferred tasks (cloud training, dbt nodes) as in docker-compose
        "worker1": [*airflow, "celery", "worker", "--celery-hostname", "worker1@%h", "--concurrency", "2"],
        "worker2": [*airflow, "celery", "worker", "--celery-hostname", "worker2@%h", "--concurrency", "2"],
    }
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, argv in commands.items():
            proc_env = dict(env)
            if name.startswith("worker"):
                proc_env["RETRAIN_SCRATCH"] = str(tmp_path / f"scratch-{name}")  # never shared between workers
            with open(logs / f"{name}.log", "w") as out:
                procs[name] = subprocess.Popen(argv, env=proc_env, stdout=out, stderr=subprocess.STDOUT,
                                               start_new_session=True)

        def alive_or_fail():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited: {(logs / f'{name}.log').read_text()[-3000:]}")

        def get(path):
            alive_or_fail()
            try:
                return httpx.get(f"{BASE}{path}", headers=auth, timeout=30)
            except httpx.HTTPError:
                return None

        def api_up():
            alive_or_fail()
            try:
                return httpx.get(f"{BASE}/api/v2/version", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(api_up, timeout=240, interval=2)
        # A 2-core machine starting an API server, a scheduler and two Celery workers answers slowly at first.
        token = httpx.post(f"{BASE}/auth/token", json={"username": USER, "password": PASSWORD},
                           timeout=60).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        wait_for(lambda: (r := get("/api/v2/dags/churn_retrain")) is not None and r.status_code == 200,
                 timeout=240, interval=3)

        def call(method, path, ok=(200,), **kwargs):
            """A write the test must see through: the API server shares one SQLite file with a scheduler, a
            DAG processor, a triggerer and two workers, and answers 500 while another holds the write lock.
            Only idempotent calls come here (a run is created under its own id: 409 means it exists)."""
            last = []

            def attempt():
                alive_or_fail()
                try:
                    response = httpx.request(method, f"{BASE}{path}", headers=auth, timeout=60, **kwargs)
                except httpx.HTTPError as exc:
                    last[:] = [repr(exc)]
                    return False
                last[:] = [response.status_code, response.text[:500]]
                return response.status_code in ok

            try:
                wait_for(attempt, timeout=120, interval=3)
            except AssertionError:
                raise AssertionError(f"{method} {path}: {last}; api-server log: "
                                     f"{(logs / 'api-server.log').read_text()[-3000:]}") from None

        call("PATCH", "/api/v2/dags/churn_retrain", json={"is_paused": False})
        run_id = f"manual__celery_{os.getpid()}"
        call("POST", "/api/v2/dags/churn_retrain/dagRuns", ok=(200, 409),
             json={"dag_run_id": run_id, "logical_date": None, "conf": FORCE})

        def finished():
            r = get(f"/api/v2/dags/churn_retrain/dagRuns/{run_id}")
            return r is not None and r.json().get("state") in ("success", "failed") and r.json()

        began = time.monotonic()
        result = wait_for(finished, timeout=900, interval=5)
        tis = get(f"/api/v2/dags/churn_retrain/dagRuns/{run_id}/taskInstances").json()["task_instances"]
        states = {ti["task_id"]: ti["state"] for ti in tis}
        assert result["state"] == "success", (states, {n: (logs / f"{n}.log").read_text()[-2000:] for n in commands})
        # The scheduler may run the latest @weekly interval first (unpaused), so this run promotes or keeps.
        assert result["note"].startswith(("promoted v", "kept v")), result["note"]
        received = {n: (logs / f"{n}.log").read_text().count("execute_workload") for n in ("worker1", "worker2")}
        assert sum(received.values()) >= len(states), received
        print(f"celery run: {time.monotonic() - began:.0f} s; tasks per worker {received}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=bound(30))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
