"""docker-compose.yaml, checked statically (no Docker engine runs here): the CeleryExecutor topology,
commands, mounts, health checks, cloud connections through the environment, and versions that match
the lock. The same topology runs without containers in the Celery integration test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LONG_RUNNING = ["postgres", "redis", "mlflow", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "airflow-worker"]
AIRFLOW = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def lock_version(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==([^\s]+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert match, f"{name} not pinned in requirements.txt"
    return match.group(1)


def test_services_and_commands(compose):
    services = compose["services"]
    assert set(LONG_RUNNING) <= set(services)
    commands = {name: services[name].get("command") for name in AIRFLOW}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker": "celery worker",
    }
    mlflow = services["mlflow"]["command"]
    assert mlflow[:2] == ["mlflow", "server"]
    assert mlflow[mlflow.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")
    assert "mlflow-artifacts:/mlflow/artifacts" in services["mlflow"]["volumes"]


def test_celery_executor_with_redis_broker(compose):
    for name in AIRFLOW:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    worker = compose["services"]["airflow-worker"]
    assert worker["environment"]["RETRAIN_SCRATCH"].startswith("/tmp/")  # container-local, never shared
    for dependency in ("redis", "postgres", "mlflow", "airflow-apiserver"):
        assert worker["depends_on"][dependency]["condition"] == "service_healthy"
    assert compose["services"]["airflow-scheduler"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_project_folders_are_mounted_into_every_airflow_service(compose):
    for name in AIRFLOW:
        targets = {re.sub(r"\$\{[^}]*\}", "X", v).split(":")[1] for v in compose["services"][name]["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins/airflow_retrain", "/opt/airflow/include",
                "/opt/airflow/dbt"} <= targets, name


def test_every_long_running_service_has_a_health_check(compose):
    for name in LONG_RUNNING:
        check = compose["services"][name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"
    assert "inspect ping" in " ".join(compose["services"]["airflow-worker"]["healthcheck"]["test"])
    assert compose["services"]["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_cloud_connections_come_from_the_environment(compose):
    for name in AIRFLOW:
        service = compose["services"][name]
        assert {"path": "cloud.env", "required": False} in service["env_file"], name
        env = service["environment"]
        assert not any(k.startswith(("AIRFLOW_CONN_AWS", "AIRFLOW_CONN_GOOGLE")) for k in env)
        assert "aws_secret_access_key" not in str(env).lower()


def test_one_image_built_from_the_lock(compose):
    images = {compose["services"][name].get("image") for name in [*AIRFLOW, "mlflow"]}
    assert images == {"${RETRAIN_IMAGE:-airflow-retrain:local}"}
    assert compose["services"]["airflow-worker"]["build"]["dockerfile"] == "docker/Dockerfile"
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    base = re.search(r"ARG AIRFLOW_BASE_IMAGE=apache/airflow:([0-9.]+)-python3\.11", dockerfile)
    assert base and base.group(1) == lock_version("apache-airflow")
    assert "requirements.txt" in dockerfile
    assert lock_version("apache-airflow-providers-celery") and lock_version("redis")


def test_make_up_starts_it():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^up:.*\n\tdocker compose up -d --build", makefile, re.M)
