"""`make ui` on any port: the Execution API, the MLflow links and the run note's connection follow the ports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ui():
    spec = importlib.util.spec_from_file_location("retrain_ui_script", ROOT / "scripts" / "ui.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_moved_api_port_moves_the_execution_api_and_the_note_connection(tmp_path):
    ui = _ui()
    env = ui.ui_environment({"AIRFLOW__API__PORT": "8093", "MLFLOW_UI_PORT": "5093", "RETRAIN_STATE_DIR": str(tmp_path),
                             "AIRFLOW_HOME": str(tmp_path / "airflow"), "PATH": "/usr/bin"}, "pw")
    assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:8093"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://localhost:8093/execution/"
    assert env["RETRAIN_MLFLOW_UI_URL"] == "http://localhost:5093"
    conn = json.loads(env["AIRFLOW_CONN_RETRAIN_AIRFLOW_API"])
    assert conn == {"conn_type": "http", "host": "http://localhost:8093", "login": "admin", "password": "pw"}
    command = ui.mlflow_command(env)
    assert command[command.index("--port") + 1] == "5093"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    text = ui.where_to_click(env)
    assert "http://localhost:8093/" in text and "Browse -> Retraining" in text and "http://localhost:5093" in text


def test_values_the_user_set_win():
    env = _ui().ui_environment({"AIRFLOW__API__PORT": "8093", "AIRFLOW__API__BASE_URL": "https://airflow.example.com/",
                                "RETRAIN_MLFLOW_UI_URL": "https://mlflow.example.com"}, "pw")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "https://airflow.example.com/execution/"
    assert env["RETRAIN_MLFLOW_UI_URL"] == "https://mlflow.example.com"


def test_the_admin_password_is_generated_once_and_kept_private(tmp_path):
    ui = _ui()
    env = {"AIRFLOW_HOME": str(tmp_path)}
    first = ui.admin_password(env)
    path = tmp_path / "simple_auth_manager_passwords.json.generated"
    assert json.loads(path.read_text()) == {"admin": first} and path.stat().st_mode & 0o077 == 0
    assert ui.admin_password(env) == first  # what Airflow's simple auth manager reads on start


def test_make_ui_runs_the_script_with_the_ports(tmp_path):
    out = subprocess.run(["make", "-n", "ui", "AIRFLOW__API__PORT=8093"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "scripts/demo.py --prepare-only" in out and "scripts/ui.py" in out and "standalone" not in out
