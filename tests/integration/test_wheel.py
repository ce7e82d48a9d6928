"""The provider as people install it: the built wheel in a clean venv (from the lock), the example DAG
files copied into a DAGs folder, the project in ``RETRAIN_HOME``; nothing from this checkout on sys.path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

_LOAD = """
import json, os
from airflow.dag_processing.dagbag import DagBag
import airflow_retrain
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
print(json.dumps({"package": airflow_retrain.__file__, "dags": sorted(bag.dag_ids),
                  "errors": {os.path.basename(k): v for k, v in bag.import_errors.items()}}))
"""


def _uv() -> str:
    return shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv") or pytest.fail("uv not found")


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    uv = _uv()
    subprocess.run([uv, "build", "--wheel", "-q", "-o", str(work / "dist"), str(ROOT)], check=True, capture_output=True)
    (wheel,) = (work / "dist").glob("airflow_retrain-*.whl")
    venv = work / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    subprocess.run([uv, "pip", "sync", "-q", "--python", str(python), str(ROOT / "requirements.txt")], check=True,
                   capture_output=True)
    subprocess.run([uv, "pip", "install", "-q", "--no-deps", "--python", str(python), str(wheel)], check=True,
                   capture_output=True)
    return venv


def _load(venv: Path, tmp_path: Path, **extra: str) -> dict:
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    folder = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import airflow_retrain.example_dags as d; print(d.FOLDER)"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    ).stdout.strip()
    for name in ("retrain.py", "retrain_spec_check.py"):
        shutil.copy(Path(folder) / name, dags / name)
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp_path / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **extra,
    }
    out = subprocess.run([str(venv / "bin" / "python"), "-c", _LOAD], env=env, cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_wheel_loads_the_dags_from_retrain_home(clean_venv, tmp_path):
    home = tmp_path / "project"
    for part in ("include", "dbt"):
        shutil.copytree(ROOT / part, home / part, ignore=shutil.ignore_patterns("target", "logs", "__pycache__"))
    found = _load(clean_venv, tmp_path, RETRAIN_HOME=str(home), RETRAIN_STATE_DIR=str(tmp_path / "state"))
    assert found["package"].startswith(str(clean_venv)), found  # the wheel, not this checkout
    assert found["dags"] == ["churn_retrain"]
    assert found["errors"] == {}


def test_wheel_without_retrain_home_is_an_import_error_saying_what_to_set(clean_venv, tmp_path):
    found = _load(clean_venv, tmp_path)
    assert found["dags"] == []
    assert "set RETRAIN_HOME" in found["errors"]["retrain_spec_check.py"]
    empty = tmp_path / "empty"
    (empty / "include" / "pipelines").mkdir(parents=True)
    found = _load(clean_venv, tmp_path, RETRAIN_HOME=str(empty))
    assert f"looked in {empty / 'include' / 'pipelines'}" in found["errors"]["retrain_spec_check.py"]


def test_wheel_carries_the_price_table(clean_venv, tmp_path):
    """The cost model reads airflow_retrain/data/prices.json: package-data must put it in the wheel."""
    code = ("import airflow_retrain.price_table as p, airflow_retrain.cost as c; "
            "print(p.PRICES_FILE); print(c.estimate_cost('sagemaker', 'ml.m5.xlarge', 3600).price_source)")
    out = subprocess.run([str(clean_venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    path, source = out.stdout.split()
    assert path.startswith(str(clean_venv)) and path.endswith("airflow_retrain/data/prices.json"), path
    assert source == "table"
