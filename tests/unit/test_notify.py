"""The spec's ``notify:`` block: Airflow's SMTP notifier against a real SMTP server the test starts."""

from __future__ import annotations

import json
import socket
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import yaml

from airflow_retrain.operators.notify import run_event
from airflow_retrain.operators.report import RunReportOperator
from airflow_retrain.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


STAGES = {
    "register": {"model_name": "churn", "version": "3", "run_id": "abc"},
    "promote": {"decision": "promoted", "champion_before": "1", "champion_after": "3", "reason": "v3 beats v1 by 0.01",
                "model_name": "churn"},
    "teardown": {"jobs": [], "stopped_jobs": [], "compute_seconds": 4.0, "cost_usd": 0.0123, "week_usd": 61.0,
                 "weekly_budget_usd": 50.0},
}


def test_a_promotion_over_budget_is_mailed_with_outcome_and_links(smtp_server, make_context, tmp_path, monkeypatch):
    port, inbox = smtp_server
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_ONCALL", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.com"}}))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://localhost:8093")
    monkeypatch.setenv("RETRAIN_MLFLOW_UI_URL", "http://localhost:5093")
    monkeypatch.setenv("RETRAIN_STATE_DIR", str(tmp_path / "state"))
    ctx = make_context(dag_id="churn_retrain", run_id="manual__1", pulled=STAGES)
    ctx["params"] = {"reason": "label fix"}
    from airflow.sdk import DAG

    ctx["dag"] = DAG("churn_retrain", schedule=None)  # the notifier renders the connection's sender with it
    op = RunReportOperator(task_id="report", pipeline="churn", stage_task_ids=list(STAGES),
                           artifact_root=(tmp_path / "store").as_uri(),
                           notify={"on": ["promotion", "budget_exceeded"],
                                   "email": {"to": ["oncall@example.com"], "connection_id": "smtp_oncall"}})
    op.execute(ctx)
    ((to, mail),) = inbox.messages
    assert to == ["oncall@example.com"]
    assert mail["Subject"] == "[retrain] churn: promoted v3 (was v1)"
    body = mail.get_body(preferencelist=("html",)).get_content()
    assert "promotion, budget_exceeded" in body and "promoted: v3 beats v1 by 0.01" in body
    assert "$61.00 spent this week, over $50.00" in body and "label fix" in body
    assert 'href="http://localhost:8093/dags/churn_retrain/runs/manual__1"' in body
    assert 'href="http://localhost:5093/#/models/churn/versions/3"' in body


def test_events_not_asked_for_send_nothing(smtp_server, make_context, tmp_path, monkeypatch):
    port, inbox = smtp_server
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": {"disable_ssl": True, "disable_tls": True}}))
    ctx = make_context(dag_id="churn_retrain", run_id="manual__2", pulled={"promote": {"decision": "kept_champion", "reason": "r", "model_name": "churn", "champion_after": "1"}})
    RunReportOperator(task_id="report", pipeline="churn", stage_task_ids=["promote"],
                      artifact_root=(tmp_path / "store").as_uri(),
                      notify={"on": ["failure"], "email": {"to": ["oncall@example.com"], "from_email": "a@b.c"}}).execute(ctx)
    assert inbox.messages == []


@pytest.mark.parametrize(("stages", "states", "events"), [
    ({"promote": {"decision": "kept_champion"}}, {"promote": "skipped"}, ["kept"]),
    ({}, {"gate_model": "failed", "promote": "upstream_failed"}, ["gate_failure"]),
    ({}, {"train": "failed"}, ["failure"]),
])
def test_each_outcome_is_one_event(stages, states, events):
    assert run_event({"stages": stages, "task_states": states}) == events


def test_the_spec_block_is_checked_naming_the_field(tmp_path):
    data = yaml.safe_load((ROOT / "include" / "pipelines" / "churn.yaml").read_text())
    data["notify"] = {"on": ["promotion", "nightly"], "email": {"to": ["not-an-address"]}}
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert "notify.on" in str(e.value) and "notify.email.to" in str(e.value) and "not an e-mail address" in str(e.value)
    data["notify"] = {"slack": {"channel": "#ml-oncall"}}
    path.write_text(yaml.safe_dump(data))
    assert load_spec(path).notify.on == ["failure", "promotion", "kept", "gate_failure", "budget_exceeded"]
