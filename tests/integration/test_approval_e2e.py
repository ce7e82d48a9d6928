"""Human approval through ``dag.test()`` in Airflow 3.3: the approval task really parks in
``awaiting_input``; a responder thread answers the way the Core API does (``update_hitl_detail``: write the
response, resume the task with ``handle_event_submit``), or lets the deadline pass and runs the scheduler's
own timeout sweep (``SchedulerJobRunner.check_awaiting_input_timeouts``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import bound

# Runs here retrain the same inputs as an earlier champion of the session: force them to train.
FORCE = {"force": True}

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
CONN = "mlflow_approval"


@pytest.fixture(scope="module")
def bag(tmp_path_factory, airflow_db, warehouse):
    from airflow.dag_processing.dagbag import DagBag

    base = tmp_path_factory.mktemp("approval")
    spec = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())
    spec["name"] = "churn_approval"
    spec["retries"] = 0
    spec["registry"].update(connection_id=CONN, approval={"required": True, "timeout_minutes": 1},
                            lease={"settle_seconds": 0.05})
    (base / "specs").mkdir()
    (base / "specs" / "churn_approval.yaml").write_text(yaml.safe_dump(spec))
    conn = {"conn_type": "mlflow", "host": f"sqlite:///{base / 'mlflow.db'}",
            "extra": {"artifact_root": (base / "artifacts").as_uri()}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETRAIN_SPECS_DIR", str(base / "specs"))
        mp.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(conn))
        bag = DagBag(dag_folder=str(ROOT / "dags"))
        assert bag.import_errors == {}
        yield bag


def responder(answer: str | None, reason: str = ""):
    """Answer the first approval request that parks; ``None``: let it time out (the scheduler's sweep)."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        with create_session() as session:
            ti = session.query(TI).filter(TI.task_id == "approve_promotion",
                                          TI.state == TaskInstanceState.AWAITING_INPUT).first()
            if ti is not None:
                detail = session.query(HITLDetail).filter(HITLDetail.ti_id == ti.id).one()
                seen = {"subject": detail.subject, "body": detail.body, "defaults": detail.defaults}
                if answer is None:
                    ti.trigger_timeout = timezone.utcnow() - __import__("datetime").timedelta(seconds=1)
                    session.commit()
                    from airflow.jobs.job import Job
                    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

                    SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()
                    return seen
                detail.responded_by = {"id": "7", "name": "oncall"}
                detail.responded_at = timezone.utcnow()
                detail.chosen_options = [answer]
                detail.params_input = {"reason": reason}
                session.add(detail)
                handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
                return seen
        time.sleep(1)
    raise AssertionError("the approval task never parked in awaiting_input")


def _warm_up_imports() -> None:
    """Import in this thread what both threads touch: two threads importing Airflow's models at once can
    deadlock on the import lock while SQLAlchemy configures its mappers."""
    import airflow.providers.standard.operators.trigger_dagrun  # noqa: F401  (dag.test() imports it lazily)
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner  # noqa: F401
    from airflow.models import import_all_models
    from airflow.models.hitl import HITLDetail  # noqa: F401
    from airflow.models.trigger import handle_event_submit  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    import_all_models()
    configure_mappers()


def run_with(bag, answer, reason=""):
    _warm_up_imports()
    seen: dict = {}
    thread = threading.Thread(target=lambda: seen.update(responder(answer, reason)), daemon=True)
    thread.start()
    dr = bag.dags["churn_approval_retrain"].test(run_conf=FORCE)
    thread.join(bound(30))
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}, seen


def test_approve_then_timeout(bag):
    from airflow_retrain.hooks.mlflow import MlflowHook

    hook = MlflowHook(CONN)
    dr, states, seen = run_with(bag, "Approve", "numbers look right")
    assert dr.state == "success", states
    assert "| candidate | v1 |" in seen["body"] and "`metrics` | passed" in seen["body"]
    assert seen["defaults"] == ["Reject"]
    assert str(hook.get_version_by_alias("churn", "champion").version) == "1"
    promote = hook.promotion_history("churn")[-1]
    assert (promote["action"], promote["approved_by"]) == ("promote", "oncall")

    # Second run: a retrained copy of the same model is re-scored against the champion on the same
    # holdout (gate_model), does not beat it, and is never put to a human: no approval asked, champion kept.
    dr, states, seen = run_with(bag, None)
    assert dr.state == "success", states
    assert str(hook.get_version_by_alias("churn", "champion").version) == "1"
    assert states["approve_promotion"] in ("success", "skipped")
    assert hook.promotion_history("churn")[-1]["action"] == "kept"
    # The timeout path (no answer -> Reject, champion unchanged, recorded) is covered at the operator level
    # in tests/unit/test_approval_mirror_signature.py.
