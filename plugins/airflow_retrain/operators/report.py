"""RunReportOperator: gather every stage's result into one report, log it, and store it."""

from __future__ import annotations

from typing import Any

from airflow_retrain import artifacts
from airflow_retrain.failure import ERROR_XCOM_KEY, error_text
from airflow_retrain.monitoring.drift import drift_trigger
from airflow_retrain.operators.base import RetrainBaseOperator
from airflow_retrain.report import SKIP_REASON_KEY, format_report, report_summary, run_outcome
from airflow_retrain.spec.models import NOTIFY_EVENTS
from airflow_retrain.urls import redact_value

REPORT_XCOM_KEY = "run_report"


class RunReportOperator(RetrainBaseOperator):
    """Teardown task after the cleanup: a readable summary of the run in its log, and a JSON report in the
    artifact store (``<run>/report.json``, and ``<root>/<dag_id>/latest_report.json``).

    The run's outcome (``promoted v3 (was v1)``, ``kept v1 ...``, ``gate failed: metrics ...``; headed by
    ``drift-triggered (score_<pipeline> run ...: <reason>)`` when the drift Asset started it) becomes the DAG
    run's note through Airflow's REST API when the ``airflow_api_conn_id`` connection exists, so the run list
    and grid tell runs apart; the whole report is also pushed as XCom ``run_report`` (readable in the UI's
    XCom tab and on the dashboard), not only a path.

    :param stage_task_ids: task ids whose results make up the report, in pipeline order.
    :param airflow_api_conn_id: the connection to Airflow's REST API for the run note (skipped if undefined).
    :return: ``{"report_uri": ..., "summary": {...}}`` -- the URI and a few facts, not the report itself.
    """

    ui_color = "#eeeeee"

    def __init__(
        self, *, stage_task_ids: list[str], airflow_api_conn_id: str = "retrain_airflow_api",
        notify: dict[str, Any] | None = None, mlflow_conn_id: str = "mlflow_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.stage_task_ids = stage_task_ids
        self.airflow_api_conn_id = airflow_api_conn_id
        self.notify = notify
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context) -> dict[str, Any]:
        run = self.run_identity(context)
        ti = context["ti"]
        stages = {tid: ti.xcom_pull(task_ids=tid, default=None) for tid in self.stage_task_ids}
        try:
            states = ti.get_task_states(dag_id=run.dag_id, task_ids=self.stage_task_ids, run_ids=[run.run_id])
            states = {k: str(v) if v is not None else None for k, v in states.get(run.run_id, {}).items()}
            # Pipeline order, so "failed at" names the first stage that failed, not the API's order.
            states = {t: states[t] for t in [*self.stage_task_ids, *sorted(states)] if t in states}
        except Exception:  # noqa: BLE001 - states are a nicety; results are the report
            states = {}
        # Gate tasks push their verdicts before failing, so a failed gate's evidence is in the report too.
        gate_verdicts = {
            tid: ti.xcom_pull(task_ids=tid, key="verdicts", default=None)
            for tid in self.stage_task_ids
            if tid.startswith("gate_")
        }
        # Stored in three places and shown on the dashboard: no URL in it keeps a user-info or a token.
        report = redact_value({
            "pipeline": self.pipeline,
            "dag_id": run.dag_id,
            "run_id": run.run_id,
            "run_key": run.run_key,
            "task_states": states,
            "params": {k: v for k, v in dict(context.get("params") or {}).items()},
            # why the run started when the scoring DAG's drift Asset started it (None: cron, manual, dbt)
            "trigger": drift_trigger(context, self.pipeline),
            "stages": stages,
            "gate_verdicts": {k: v for k, v in gate_verdicts.items() if v},
            "errors": self._errors(ti, states),
            # why train skipped itself (inputs unchanged since the champion): the run's outcome says so
            "skipped": {t: r for t in self.stage_task_ids if t == "train"
                        and (r := ti.xcom_pull(task_ids=t, key=SKIP_REASON_KEY, default=None))},
        })
        store = self.artifact_store
        # Not strict: a stray NaN in some stage's result must not cost the run its report.
        uri = artifacts.write_json(store.run_path(run.dag_id, run.run_key) / "report.json", report, strict=False)
        artifacts.write_json(store.root / run.dag_id / "latest_report.json", report, strict=False)
        for line in format_report(report).splitlines():
            self.log.info("%s", line)
        self.log.info("Report written to %s", uri)
        outcome = run_outcome(report)
        ti.xcom_push(key=REPORT_XCOM_KEY, value=report)
        self._set_note(run.dag_id, run.run_id, outcome)
        if self.notify:
            self._notify(context, report, outcome)
        return {"report_uri": uri, "outcome": outcome, "summary": report_summary(report)}

    def _errors(self, ti, states: dict[str, str | None]) -> dict[str, str]:
        """``task_id -> error line`` of the failed stages, as each pushed it when it failed
        (:func:`~airflow_retrain.failure.record_failure`); every stage's when the states are unknown."""
        failed = [t for t, s in states.items() if s == "failed"] if states else self.stage_task_ids
        errors = {}
        for task_id in failed:
            try:
                pushed = ti.xcom_pull(task_ids=task_id, key=ERROR_XCOM_KEY, default=None)
            except Exception:  # noqa: BLE001 - the reason is a nicety; the report is what matters
                continue
            if text := error_text(pushed if isinstance(pushed, str) else None):  # bounded again, whoever pushed it
                errors[task_id] = text
        return errors

    def _set_note(self, dag_id: str, run_id: str, outcome: str) -> None:
        from airflow.sdk.exceptions import AirflowNotFoundException

        from airflow_retrain.hooks.airflow_api import AirflowApiHook

        hook = AirflowApiHook(self.airflow_api_conn_id)
        try:
            hook.get_connection(self.airflow_api_conn_id)
        except AirflowNotFoundException:
            self.log.info("Run outcome: %s (connection %r not defined: no run note)", outcome, self.airflow_api_conn_id)
            return
        try:
            hook.set_dag_run_note(dag_id, run_id, outcome)
        except Exception as e:  # noqa: BLE001 - the note is a nicety; the report is stored already
            self.log.warning("Could not set the run note %r through %s: %s", outcome, hook.base_url, e)
            return
        self.log.info("Run note set: %s", outcome)

    def _notify(self, context, report: dict[str, Any], outcome: str) -> None:
        """Send the spec's ``notify:`` messages for this run's events; a failed send is logged, never fatal."""
        from airflow_retrain.operators import notify

        events = [e for e in notify.run_event(report) if e in self.notify.get("on", NOTIFY_EVENTS)]
        if not events:
            self.log.info("Notify: no event of %s for this run (outcome: %s)", self.notify.get("on"), outcome)
            return
        subject, html, text = notify.message(report, outcome, events, notify.links(
            report, self._airflow_url(), self._version_url(report)))
        for notifier in notify.notifiers(self.notify, subject, html, text):
            try:
                notifier.notify(context)
            except Exception as e:  # noqa: BLE001 - the report is stored already; say why nobody heard
                self.log.warning("Notify via %s failed: %s: %s", type(notifier).__name__, type(e).__name__, e)
            else:
                self.log.info("Notified via %s: %s", type(notifier).__name__, subject)

    @staticmethod
    def _airflow_url() -> str | None:
        from airflow.sdk import conf

        base = conf.get("api", "base_url", fallback="") or ""
        return base if base.startswith("http") else None

    def _version_url(self, report: dict[str, Any]) -> str | None:
        register = (report.get("stages") or {}).get("register") or {}
        if not register.get("version"):
            return None
        try:
            from airflow_retrain.hooks.mlflow import MlflowHook

            return MlflowHook(self.mlflow_conn_id).version_url(register["model_name"], register["version"])
        except Exception:  # noqa: BLE001 - a link is a nicety
            return None

