"""`make ui`: Airflow (api-server, scheduler, dag-processor, triggerer) and the MLflow UI on this machine, stopped together on Ctrl-C.

What a new user would otherwise have to know and set by hand, derived here from two ports:

- ``AIRFLOW__API__PORT`` (default 8080): Airflow serves its UI and API there, and the workers must reach the
  Execution API on the same port. Airflow derives that URL from ``[api] base_url`` (default
  ``http://localhost:8080``), so moving the port alone made every task fail with "Connection refused" and an
  empty log; ``AIRFLOW__API__BASE_URL`` and ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL`` follow the port here
  (a value the user set wins).
- ``MLFLOW_UI_PORT`` (default 5000): ``mlflow server`` on the embedded registry (``<state>/mlflow/mlflow.db``,
  artifacts under ``<state>/mlflow/artifacts``), and ``RETRAIN_MLFLOW_UI_URL`` pointing at it, so every MLflow
  extra link resolves.

The run's outcome reaches the grid as the DAG run's note, which Airflow 3.3 lets a task set only through the
REST API (the Task SDK's Execution API has no call for it): the ``retrain_airflow_api`` connection is defined
for the components (``AIRFLOW_CONN_RETRAIN_AIRFLOW_API``, this process tree only), with the admin user's
password from the simple auth manager's password file, which is created here (mode 0600) when missing.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "admin"
API_CONN_ENV = "AIRFLOW_CONN_RETRAIN_AIRFLOW_API"


def passwords_file(env: dict[str, str]) -> Path:
    """The simple auth manager's password file (``[core] simple_auth_manager_passwords_file`` or its default)."""
    configured = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    return Path(configured) if configured else Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"


def admin_password(env: dict[str, str]) -> str:
    """The admin's password, generated into the password file (as Airflow would on first start) when missing."""
    path = passwords_file(env)
    passwords = json.loads(path.read_text() or "{}") if path.exists() else {}
    if ADMIN not in passwords:
        passwords[ADMIN] = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(passwords) + "\n")
        path.chmod(0o600)
    return passwords[ADMIN]


def ui_environment(env: dict[str, str], password: str) -> dict[str, str]:
    """The environment of Airflow's components: the URLs that must follow the ports, and the note's connection.

    :param env: the caller's environment (``AIRFLOW__API__PORT``, ``MLFLOW_UI_PORT``, ``RETRAIN_STATE_DIR``).
    :param password: the admin's password for the ``retrain_airflow_api`` connection.
    """
    out = dict(env)
    port = int(out.setdefault("AIRFLOW__API__PORT", "8080"))
    api = f"http://localhost:{port}"
    out.setdefault("AIRFLOW__API__BASE_URL", api)
    base = out["AIRFLOW__API__BASE_URL"].rstrip("/")
    out.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"{base}/execution/")
    out.setdefault("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    mlflow_port = int(out.setdefault("MLFLOW_UI_PORT", "5000"))
    out.setdefault("RETRAIN_MLFLOW_UI_URL", f"http://localhost:{mlflow_port}")
    out.setdefault(API_CONN_ENV, json.dumps({"conn_type": "http", "host": base, "login": ADMIN, "password": password}))
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    return out


def mlflow_command(env: dict[str, str]) -> list[str]:
    """``mlflow server`` on the embedded registry the DAGs write while ``mlflow_default`` is undefined."""
    base = Path(env.get("RETRAIN_STATE_DIR") or ROOT / ".local") / "mlflow"
    base.mkdir(parents=True, exist_ok=True)
    return [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
        "--default-artifact-root", (base / "artifacts").as_uri(),
        "--host", "127.0.0.1", "--port", env["MLFLOW_UI_PORT"], "--workers", "1",
    ]


def where_to_click(env: dict[str, str]) -> str:
    base = env["AIRFLOW__API__BASE_URL"].rstrip("/")
    return "\n".join([
        "",
        f"  Airflow UI   {base}/   (user {ADMIN}, password in {passwords_file(env)})",
        "  Dashboard    Browse -> Retraining (or {base}/retrain/)".replace("{base}", base),
        "  Run outcome  the grid's run note; a task's MLflow links are under its Details tab",
        f"  MLflow UI    {env['RETRAIN_MLFLOW_UI_URL']}",
        "  Ctrl-C stops both.",
        "",
    ])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL we built
            return response.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen, name: str, grace: float = 20.0) -> None:
    """SIGTERM to the process group (each component's own clean stop), SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            print(f"    {name} still running {wait:.0f} s after {sig.name}", flush=True)


def main() -> int:
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(Path(env.get("RETRAIN_STATE_DIR") or ROOT / ".local") / "airflow"))
    env = ui_environment(env, admin_password(env))
    airflow = str(Path(sys.executable).parent / "airflow")
    base = env["AIRFLOW__API__BASE_URL"].rstrip("/")
    interrupted = False

    def on_signal(signum, _frame):
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # Each in its own process group: Ctrl-C reaches this script alone, which stops them all in order. The
    # API server comes first and alone: a task the scheduler started before it listens fails with
    # "Connection refused" (the first run of a fresh start would be red for nothing).
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["mlflow server"] = subprocess.Popen(mlflow_command(env), env=env, start_new_session=True)
        procs["api-server"] = subprocess.Popen([airflow, "api-server", "--port", env["AIRFLOW__API__PORT"]], env=env,
                                               start_new_session=True)
        print(f"==> waiting for Airflow's API server on {base}", flush=True)
        while not interrupted and not _answers(f"{base}/api/v2/version"):
            if (gone := next((n for n, p in procs.items() if p.poll() is not None), None)) is not None:
                print(f"!! {gone} exited (code {procs[gone].returncode}) before Airflow's API server answered")
                return 1
            time.sleep(1)
        for component in ("scheduler", "dag-processor", "triggerer"):
            if not interrupted:
                procs[component] = subprocess.Popen([airflow, component], env=env, start_new_session=True)
        announced = False
        while not interrupted:
            if (gone := next((n for n, p in procs.items() if p.poll() is not None), None)) is not None:
                print(f"!! {gone} exited on its own (code {procs[gone].returncode}); stopping the others")
                return 1
            if not announced and _answers(env["RETRAIN_MLFLOW_UI_URL"]):
                print(where_to_click(env), flush=True)
                announced = True
            time.sleep(1)
        return 0
    finally:
        print("==> stopping Airflow and the MLflow UI", flush=True)
        for name, proc in reversed(procs.items()):
            _stop(proc, name)


if __name__ == "__main__":
    sys.exit(main())
