"""The cost ledger in a Postgres warehouse (the ``retrain_warehouse`` connection of type postgres).

`scripts/services.sh start` provides the server (RETRAIN_TEST_PG_URL); without it this skips locally and
fails in CI (RETRAIN_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import json
import textwrap
import uuid
from urllib.parse import urlparse

import pytest
from helpers import require_service, wait_for

from airflow_retrain.operators.teardown import TeardownRunOperator
from airflow_retrain.runs import RunIdentity
from airflow_retrain.teardown.ledger import CostLedger
from airflow_retrain.training.base import TrainingJobRequest
from airflow_retrain.training.local import LocalTrainingBackend

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_ledger_conn(monkeypatch) -> str:
    url = urlparse(require_service("RETRAIN_TEST_PG_URL"))
    conn = {"conn_type": "postgres", "host": url.hostname, "port": url.port, "login": url.username,
            "password": url.password, "schema": url.path.lstrip("/")}
    monkeypatch.setenv("AIRFLOW_CONN_PG_LEDGER", json.dumps(conn))
    return "pg_ledger"


def test_training_run_ledger_on_postgres(tmp_path, make_context, pg_ledger_conn):
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs")
    pipeline = f"pg_{uuid.uuid4().hex[:8]}"
    run = RunIdentity(pipeline, "pg_ledger_retrain", f"manual__{tmp_path.name}")
    entry = tmp_path / "train.py"
    entry.write_text(textwrap.dedent("import time; time.sleep(0.2)\n"))
    (tmp_path / "train").mkdir()
    name = run.job_name(1)
    backend.submit(TrainingJobRequest(job_name=name, entry_point=str(entry), channels={"train": str(tmp_path / "train")},
                                      tags=run.job_tags()))
    wait_for(lambda: backend.describe(name).state.terminal, timeout=30)

    op = TeardownRunOperator(task_id="teardown", pipeline=pipeline, backend_config={"jobs_dir": str(backend.jobs_dir)},
                             hourly_price_usd=7.2, warehouse_conn_id=pg_ledger_conn, weekly_budget_usd=50.0)
    op.execute(make_context(run.dag_id, run.run_id))
    op.execute(make_context(run.dag_id, run.run_id))  # a retried teardown: same row, not two

    ledger = CostLedger.from_connection(pg_ledger_conn)
    assert ledger.params.kind == "postgres"
    rows = [r for r in ledger.rows() if r["pipeline"] == pipeline]
    assert len(rows) == 1
    job = backend.describe(name)
    # Hand-computed: billable seconds x $7.20/h = $0.002 per second.
    assert rows[0]["seconds"] == job.billable_seconds
    assert rows[0]["usd"] == pytest.approx(job.billable_seconds * 0.002, abs=1e-6)
    assert ledger.week_usd(pipeline, job.ended_at) == pytest.approx(rows[0]["usd"], abs=1e-9)
