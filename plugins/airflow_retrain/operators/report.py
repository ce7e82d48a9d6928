"""RunReportOperator: gather every stage's result into one report, log it, and store it."""

from __future__ import annotations

from typing import Any

from airflow_retrain import artifacts
from airflow_retrain.operators.base import RetrainBaseOperator
from airflow_retrain.report import format_report, report_summary


class RunReportOperator(RetrainBaseOperator):
    """Teardown task after the cleanup: a readable summary of the run in its log, and a JSON report in the
    artifact store (``<run>/report.json``, and ``<root>/<dag_id>/latest_report.json``).

    :param stage_task_ids: task ids whose results make up the report, in pipeline order.
    :return: ``{"report_uri": ..., "summary": {...}}`` -- the URI and a few facts, not the report itself.
    """

    ui_color = "#eeeeee"

    def __init__(self, *, stage_task_ids: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage_task_ids = stage_task_ids

    def execute(self, context) -> dict[str, Any]:
        run = self.run_identity(context)
        ti = context["ti"]
        stages = {tid: ti.xcom_pull(task_ids=tid, default=None) for tid in self.stage_task_ids}
        try:
            states = ti.get_task_states(dag_id=run.dag_id, task_ids=self.stage_task_ids, run_ids=[run.run_id])
            states = {k: str(v) if v is not None else None for k, v in states.get(run.run_id, {}).items()}
        except Exception:  # noqa: BLE001 - states are a nicety; results are the report
            states = {}
        # Gate tasks push their verdicts before failing, so a failed gate's evidence is in the report too.
        gate_verdicts = {
            tid: ti.xcom_pull(task_ids=tid, key="verdicts", default=None)
            for tid in self.stage_task_ids
            if tid.startswith("gate_")
        }
        report = {
            "pipeline": self.pipeline,
            "dag_id": run.dag_id,
            "run_id": run.run_id,
            "run_key": run.run_key,
            "task_states": states,
            "stages": stages,
            "gate_verdicts": {k: v for k, v in gate_verdicts.items() if v},
        }
        store = self.artifact_store
        # Not strict: a stray NaN in some stage's result must not cost the run its report.
        uri = artifacts.write_json(store.run_path(run.dag_id, run.run_key) / "report.json", report, strict=False)
        artifacts.write_json(store.root / run.dag_id / "latest_report.json", report, strict=False)
        for line in format_report(report).splitlines():
            self.log.info("%s", line)
        self.log.info("Report written to %s", uri)
        return {"report_uri": uri, "summary": report_summary(report)}
