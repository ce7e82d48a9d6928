"""RunReportOperator: gather every stage's result into one report, log it, and store it."""

from __future__ import annotations

from typing import Any

from airflow_retrain.operators.base import RetrainBaseOperator
from airflow_retrain.report import format_report, write_report
from airflow_retrain.spec import state_dir


class RunReportOperator(RetrainBaseOperator):
    """Teardown task after the cleanup: a readable summary of the run in its log, and a JSON report.

    :param stage_task_ids: task ids whose results make up the report, in pipeline order.
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
        path = write_report(state_dir(), run.dag_id, run.run_key, report)
        for line in format_report(report).splitlines():
            self.log.info("%s", line)
        self.log.info("Report written to %s", path)
        return {"report_path": str(path)}
