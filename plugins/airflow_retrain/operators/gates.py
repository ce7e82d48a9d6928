"""MetricGateOperator: the candidate's metrics against the spec's thresholds, recorded in MLflow."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain.gates.metrics import MetricThresholdGate
from airflow_retrain.hooks.mlflow import MlflowHook
from airflow_retrain.operators.base import RetrainBaseOperator
from airflow_retrain.operators.registry import GATE_TAG


class MetricGateOperator(RetrainBaseOperator):
    """Fail (without retry) unless every metric is present, finite and within its bounds.

    The verdict is written to the candidate's model version (``retrain.gate.metrics`` = passed/failed,
    plus the message) and to its run (``gates/metrics.json``), so the registry shows why a version was or
    was not eligible for promotion.

    :param thresholds: metric -> ``{"min": .., "max": ..}``.
    :param metrics: the candidate's metrics (``TrainModelOperator`` result ``["metrics"]``).
    :param candidate: the result of :class:`RegisterModelOperator`; ``None`` to gate without recording.
    :return: the verdict as a dict.
    """

    template_fields = ("thresholds", "metrics", "candidate")
    ui_color = "#c6e2ff"

    def __init__(
        self,
        *,
        thresholds: dict[str, dict[str, float | None]],
        metrics: dict[str, Any] | Any,
        candidate: dict[str, Any] | Any = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.thresholds = thresholds
        self.metrics = metrics
        self.candidate = candidate
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id)

    def execute(self, context) -> dict[str, Any]:
        gate = MetricThresholdGate(self.thresholds)
        verdict = gate.evaluate(self.metrics or {})
        for check in verdict.checks:
            self.log.info("%s %s", "PASS" if check.passed else "FAIL", check.reason)
        if self.candidate:
            name, version = self.candidate["model_name"], self.candidate["version"]
            self.hook.set_version_tags(
                name,
                version,
                {
                    f"{GATE_TAG}.{gate.name}": "passed" if verdict.passed else "failed",
                    f"{GATE_TAG}.{gate.name}.message": verdict.message[:4000],
                },
            )
            self.hook.log_dict(self.candidate["run_id"], verdict.to_dict(), f"gates/{gate.name}.json")
        if not verdict.passed:
            where = f" ({self.candidate['model_name']} v{self.candidate['version']})" if self.candidate else ""
            raise AirflowFailException(verdict.message + where)
        return verdict.to_dict()
