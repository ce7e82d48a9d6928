"""Test configuration: a throwaway Airflow home, state dir and embedded registry per test session.

The environment is set before anything imports Airflow, so no test touches the developer's .local/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FAKE_ROLE_ARN, connect_fake_cloud, tasks_on_separate_workers

ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="retrain-tests-"))

os.environ["RETRAIN_HOME"] = str(ROOT)
os.environ["RETRAIN_STATE_DIR"] = str(_SESSION_DIR / "state")
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.pop("RETRAIN_SPECS_DIR", None)
os.environ.pop("AIRFLOW_CONN_MLFLOW_DEFAULT", None)
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
# gcsfs >= 2026 probes each bucket over gRPC Storage Control (TLS) before using the JSON API; the fake
# Cloud Storage speaks only the JSON API (as emulators do), so switch the probe off before gcsfs loads.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


_INTEGRATION_DIR = ROOT / "tests" / "integration"


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration/ is ``integration`` (so ``make test-fast`` never starts a DAG
    run, an Airflow server or a service), whether or not its module says so."""
    for item in items:
        if _INTEGRATION_DIR in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


def pytest_unconfigure(config):
    """This process's Airflow home and state dir go when its session ends (every xdist worker has its own);
    ``RETRAIN_KEEP_TEST_STATE=1`` keeps them to look at."""
    if os.environ.get("RETRAIN_KEEP_TEST_STATE") != "1":
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, config):
    """Repeat the random order's seed last, beside the failures (pytest-randomly prints it only in the
    header, which -q hides and a long run scrolls away)."""
    if config.pluginmanager.hasplugin("randomly") and config.getoption("randomly_reorganize", False):
        seed = config.getoption("randomly_seed")
        terminalreporter.write_line(f"Random test order, seed {seed}: replay with --randomly-seed={seed} "
                                    f"(make test PYTEST_ARGS=--randomly-seed={seed})")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def state_dir() -> Path:
    path = Path(os.environ["RETRAIN_STATE_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated SQLite metadata DB (for dag.test() and DagBag tests)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )
    # The pool the factory gives dbt_build/export_dataset on the embedded warehouse (`make demo` creates
    # it with `airflow pools set`; in-process here, saving an Airflow start).
    from airflow.models.pool import Pool

    from airflow_retrain.spec import EMBEDDED_WAREHOUSE_POOL

    Pool.create_or_update_pool(EMBEDDED_WAREHOUSE_POOL, slots=1, description="embedded DuckDB", include_deferred=False)
    return Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"


def _load_churn_module():
    import runpy

    return runpy.run_path(str(ROOT / "include" / "data" / "load_churn.py"))


@pytest.fixture(scope="session")
def churn_loader():
    return _load_churn_module()


@pytest.fixture(scope="session")
def warehouse(state_dir, churn_loader) -> Path:
    """The embedded DuckDB warehouse with the real Telco churn data in raw.telco_customers."""
    path = state_dir / "warehouse.duckdb"
    churn_loader["load_to_duckdb"](str(path))
    return path


class FakeTI:
    """The slice of a task instance the operators use: XCom push/pull and the try number."""

    def __init__(self, try_number: int = 1, pulled: dict | None = None):
        self.try_number = try_number
        self.xcoms: dict[str, object] = {}
        self.pulled = pulled or {}

    def xcom_push(self, key, value):
        self.xcoms[key] = value

    def xcom_pull(self, task_ids=None, key="return_value", default=None, **_):
        return self.pulled.get(task_ids, default)


class FakeDag:
    def __init__(self, dag_id):
        self.dag_id = dag_id


class FakeTask:
    owner = "tests"


@pytest.fixture
def make_context():
    """Build a minimal task context: ``make_context(dag_id, run_id, try_number=1)``."""

    def _make(dag_id: str = "unit_retrain", run_id: str = "manual__1", try_number: int = 1, pulled=None):
        return {
            "dag": FakeDag(dag_id),
            "run_id": run_id,
            "task": FakeTask(),
            "ti": FakeTI(try_number, pulled),
        }

    return _make


@pytest.fixture
def channel(tmp_path) -> Path:
    """An empty ``train`` channel folder for a local training job."""
    path = tmp_path / "data" / "train"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def entry_point(tmp_path, request) -> str:
    """The requesting test module's ``TRAIN`` script (indented as it likes), written to ``train.py``."""
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(request.module.TRAIN))
    return str(path)


# --- The fake AWS cloud (scripts/fake_cloud): one child process per session, reset per test ---------


@pytest.fixture(scope="session")
def fake_cloud_server(tmp_path_factory):
    """The fake cloud users run with ``make fake-cloud``, on loopback (``RETRAIN_TEST_FAKE_CLOUD_PORT``
    or a free port). Its environment carries canary secrets that no training script may see."""
    from fakes import fake_cloud

    handle = fake_cloud.start_fake_cloud(
        int(os.environ.get("RETRAIN_TEST_FAKE_CLOUD_PORT", "0")),
        tmp_path_factory.mktemp("fake-cloud"),
        env={"AWS_SECRET_ACCESS_KEY": "canary-host-secret", "AIRFLOW_CONN_CANARY": "postgres://u:canary@h/db"},
    )
    yield handle
    handle.stop()


@pytest.fixture
def fake_cloud(fake_cloud_server):
    """The session's fake cloud, reset (no jobs, buckets, faults, counts; default knobs) for this test."""
    fake_cloud_server.reset()
    yield fake_cloud_server
    fake_cloud_server.reset()  # stops any job the test left running


@pytest.fixture
def cloud(fake_cloud, monkeypatch, request):
    """The reset fake cloud with the requesting module's ``BUCKET``, the role ``FAKE_ROLE_ARN`` and the module's
    Airflow connection ``CONN`` pointing at it; no deferral forced through the environment."""
    bucket, conn_id = request.module.BUCKET, request.module.CONN
    assert connect_fake_cloud(fake_cloud, monkeypatch.setenv, bucket, conn_id) == FAKE_ROLE_ARN
    monkeypatch.delenv("RETRAIN_DEFERRABLE", raising=False)
    return fake_cloud


@pytest.fixture(scope="session")
def dbt_manifest(state_dir) -> Path:
    """The repo's dbt project parsed once (``dbt parse``) into this session's manifest cache."""
    from airflow_retrain.dbt.__main__ import cache_manifest

    cache_manifest(str(ROOT / "dbt"))
    return ROOT / "dbt"


@pytest.fixture(scope="session")
def shop_project(tmp_path_factory) -> Path:
    """A copy of tests/fixtures/dbt_shop (seeds, snapshot, ephemeral, source tests, a package, own
    profiles.yml), with ``dbt deps`` run and its manifest cached."""
    from airflow_retrain.dbt.__main__ import cache_manifest

    project = tmp_path_factory.mktemp("shop") / "dbt_shop"
    shutil.copytree(ROOT / "tests" / "fixtures" / "dbt_shop", project)
    cache_manifest(str(project))
    return project


# --- Every task of a dag.test() run as if on its own worker --------------------------------------------


@pytest.fixture
def separate_workers(tmp_path) -> Iterator[list[dict]]:
    """This test's ``dag.test()`` runs each task on its own worker (:func:`tasks_on_separate_workers`)."""
    with tasks_on_separate_workers(tmp_path) as workers:
        yield workers
