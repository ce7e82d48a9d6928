"""The spec's ``notify:`` block, sent through Airflow's own notifiers (SMTP and Slack providers).

The report task calls :func:`notify` once per run, with the run's outcome: which event it is
(:func:`run_event`), the message (outcome line, what happened, links to the run, the dashboard and the
MLflow version), and one notifier per channel. Server addresses and secrets come from the connections the
spec names, never from the spec.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote


def run_event(report: dict[str, Any]) -> list[str]:
    """The notify events of a finished run: one of promotion / kept / gate_failure / failure, plus
    ``budget_exceeded`` when this week's spend crossed the pipeline's budget."""
    stages = report.get("stages") or {}
    states = report.get("task_states") or {}
    decision = (stages.get("promote") or {}).get("decision")
    events = []
    if decision == "promoted":
        events.append("promotion")
    elif decision in ("kept_champion", "rejected", "already_champion"):
        events.append("kept")
    elif any(t.startswith("gate_") and s == "failed" for t, s in states.items()):
        events.append("gate_failure")
    elif any(s in ("failed", "upstream_failed") for s in states.values()):
        events.append("failure")
    teardown = stages.get("teardown") or {}
    if teardown.get("weekly_budget_usd") and (teardown.get("week_usd") or 0) > teardown["weekly_budget_usd"]:
        events.append("budget_exceeded")
    return events


def links(report: dict[str, Any], airflow_url: str | None, mlflow_version_url: str | None) -> dict[str, str]:
    """Where to click: the run in Airflow's grid, the dashboard, the candidate's MLflow version."""
    out = {}
    if airflow_url:
        base = airflow_url.rstrip("/")
        out["Airflow run"] = f"{base}/dags/{quote(report['dag_id'], safe='')}/runs/{quote(report['run_id'], safe='')}"
        out["Retraining dashboard"] = f"{base}/retrain/"
    if mlflow_version_url:
        out["MLflow version"] = mlflow_version_url
    return out


def message(report: dict[str, Any], outcome: str, events: list[str], where: dict[str, str]) -> tuple[str, str, str]:
    """``(subject, html, text)`` of the notification."""
    subject = f"[retrain] {report.get('pipeline')}: {outcome}"[:200]
    stages = report.get("stages") or {}
    teardown = stages.get("teardown") or {}
    facts = [("Outcome", outcome), ("Events", ", ".join(events)), ("DAG run", f"{report['dag_id']} / {report['run_id']}")]
    if (promote := stages.get("promote") or {}).get("reason"):
        facts.append(("Decision", f"{promote.get('decision')}: {promote['reason']}"))
    if teardown.get("cost_usd") is not None:
        facts.append(("Run cost", f"${teardown['cost_usd']:.4f}"))
    if "budget_exceeded" in events:
        facts.append(("Budget", f"${teardown['week_usd']:.2f} spent this week, over ${teardown['weekly_budget_usd']:.2f}"))
    if reason := (report.get("params") or {}).get("reason"):
        facts.append(("Trigger reason", str(reason)))
    text = "\n".join(f"{k}: {v}" for k, v in facts) + "\n\n" + "\n".join(f"{k}: {v}" for k, v in where.items())
    html = ("<table>" + "".join(f"<tr><th align=left>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
            + "</table><p>" + " · ".join(f'<a href="{escape(u)}">{escape(k)}</a>' for k, u in where.items()) + "</p>")
    return subject, html, text


def notifiers(notify: dict[str, Any], subject: str, html: str, text: str) -> list[Any]:
    """One Airflow notifier per configured channel (built here, so a DAG parse imports no provider)."""
    out: list[Any] = []
    if email := notify.get("email"):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        out.append(SmtpNotifier(to=email["to"], from_email=email.get("from_email"), subject=subject,
                                html_content=html, smtp_conn_id=email.get("connection_id") or "smtp_default"))
    if slack := notify.get("slack"):
        from airflow.providers.slack.notifications.slack import SlackNotifier

        out.append(SlackNotifier(slack_conn_id=slack.get("connection_id") or "slack_api_default",
                                 channel=slack["channel"], text=f"*{subject}*\n{text}"))
    return out
