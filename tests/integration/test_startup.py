"""Clean start-up: the plugin loads once, with no import error, in a fresh Airflow process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

_PROBE = """
import json
from importlib.metadata import distributions
import airflow.plugins_manager as pm
pm.ensure_plugins_loaded()
plugins, _ = pm._get_plugins()
print(json.dumps({
    "errors": {str(k): str(v) for k, v in pm.get_import_errors().items()},
    "plugins": [p.name for p in plugins],
    "dists": sum(1 for d in distributions() if (d.metadata["Name"] or "").lower() == "airflow-retrain"),
}))
"""


def test_plugin_loads_once_without_import_error(tmp_path):
    assert not (ROOT / "plugins" / "airflow_retrain.egg-info").exists(), "run `make venv` (egg-info moved to build/)"
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["errors"] == {}
    assert found["plugins"].count("airflow_retrain") == 1
    assert found["dists"] == 1


def test_any_airflow_command_works_with_only_airflow_home(tmp_path):
    """After `make ui`'s preparation, a hand-started `airflow ...` needs AIRFLOW_HOME and PATH only, and
    every pipeline is listed at once (serialized by the preparation, not after a first run)."""
    prepare_env = {
        **os.environ,
        "RETRAIN_STATE_DIR": str(tmp_path / "state"),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
    }
    subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--prepare-only"], env=prepare_env, check=True,
                   capture_output=True)
    bare = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    listed = subprocess.run(["airflow", "dags", "list", "-o", "json"], env=bare, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = json.loads(next(line for line in listed.stdout.splitlines() if line.startswith("[")))
    assert "churn_retrain" in {r["dag_id"] for r in rows}
    home = subprocess.run(["airflow", "config", "get-value", "retrain", "home"], env=bare, capture_output=True, text=True)
    assert home.stdout.strip() == str(ROOT)
    errors = subprocess.run(["airflow", "dags", "list-import-errors", "-o", "json"], env=bare, capture_output=True,
                            text=True)
    assert json.loads(next(line for line in errors.stdout.splitlines() if line.startswith("["))) == [], errors.stdout
