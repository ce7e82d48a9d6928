"""TrainModelOperator: run the training script on a backend; reattach on retry; stop on kill."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowTaskTimeout

from airflow_retrain.operators.base import TrainingBackendOperator
from airflow_retrain.training.base import JobState, TrainingJob, TrainingJobRequest


class TrainingJobFailed(AirflowException):
    pass


class TrainModelOperator(TrainingBackendOperator):
    """Train a model through a :class:`~airflow_retrain.training.base.TrainingBackend`.

    Job names are deterministic per DAG run and attempt. Before submitting, the operator looks for this
    run's jobs by tag: a running one is reattached to, a completed one is reused, and only after a failed
    or stopped one does it start a new attempt -- a retry never runs two jobs at once. ``on_kill`` stops
    the job; whatever is still running when the run ends is stopped by the teardown task.

    :param entry_point: training script (SageMaker training-container contract).
    :param channels: channel name -> data location (e.g. from :class:`ExportTrainingDatasetOperator`).
    :param hyperparameters: passed to the script as ``SM_HPS`` and ``--key value``.
    :param backend: backend name (``local``); ``backend_config`` holds its settings (see
        :class:`~airflow_retrain.operators.base.TrainingBackendOperator`).
    :param poll_interval: seconds between status checks.
    :return: job name, state, metrics and info from ``metrics.json``, model/output locations, compute
        seconds and estimated cost.
    """

    template_fields = ("entry_point", "channels", "hyperparameters")
    ui_color = "#76b900"

    def __init__(
        self,
        *,
        entry_point: str,
        channels: dict[str, str] | Any,
        hyperparameters: dict[str, Any] | None = None,
        instance_type: str = "local",
        instance_count: int = 1,
        max_runtime_seconds: int = 3600,
        gpu: str = "auto",
        poll_interval: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.entry_point = entry_point
        self.channels = channels
        self.hyperparameters = hyperparameters
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.max_runtime_seconds = max_runtime_seconds
        self.gpu = gpu
        self.poll_interval = poll_interval
        self._job_name: str | None = None

    def execute(self, context) -> dict[str, Any]:
        run = self.run_identity(context)
        backend = self.training_backend
        jobs = backend.find_jobs(run.run_tags())
        job = next((j for j in reversed(jobs) if not j.state.terminal), None)
        if job is not None:
            self.log.info("Reattaching to training job %s (%s) from an earlier attempt", job.job_name, job.state.value)
        elif (done := next((j for j in reversed(jobs) if j.state == JobState.COMPLETED), None)) is not None:
            job = done
            self.log.info("Training job %s of this run already completed; reusing its outputs", job.job_name)
        else:
            request = TrainingJobRequest(
                job_name=run.job_name(len(jobs) + 1),
                entry_point=self.entry_point,
                channels=dict(self.channels),
                hyperparameters=dict(self.hyperparameters or {}),
                instance_type=self.instance_type,
                instance_count=self.instance_count,
                max_runtime_seconds=self.max_runtime_seconds,
                gpu=self.gpu,
                tags=run.job_tags(ttl_seconds=self.max_runtime_seconds + 3600),
            )
            job = backend.submit(request)
            self.log.info(
                "Submitted training job %s on %s (%s x%d)",
                job.job_name,
                backend.name,
                self.instance_type,
                self.instance_count,
            )
        self._job_name = job.job_name
        context["ti"].xcom_push(key="job_name", value=job.job_name)
        try:
            job = self._wait(job)
        except AirflowTaskTimeout:
            # The task's execution_timeout is a budget for the job too: a retry must not inherit it.
            self.log.error("Task timed out: stopping training job %s", job.job_name)
            backend.stop(job.job_name)
            raise
        cost = backend.cost(job, self.hourly_price_usd)
        if job.state != JobState.COMPLETED:
            raise TrainingJobFailed(
                f"training job {job.job_name} {job.state.value}: {job.failure_reason or 'no reason given'} "
                f"(compute {job.billable_seconds:.0f} s, est. ${cost.usd:.4f})"
            )
        outputs = backend.fetch_outputs(job.job_name, run.scratch_dir() / "outputs" / job.job_name)
        report = self._read_metrics(job, outputs.metrics_path)
        self.log.info(
            "Training job %s completed in %.1f s on %s; est. cost $%.4f; metrics %s",
            job.job_name,
            job.billable_seconds,
            report.get("info", {}).get("device", "?"),
            cost.usd,
            report["metrics"],
        )
        context["ti"].xcom_push(key="metrics", value=report["metrics"])
        return {
            "job_name": job.job_name,
            "backend": backend.name,
            "state": job.state.value,
            "metrics": report["metrics"],
            "info": report.get("info", {}),
            "model_dir": str(outputs.model_dir),
            "output_dir": str(outputs.output_dir),
            "compute_seconds": job.billable_seconds,
            "cost": cost.to_dict(),
        }

    def _wait(self, job: TrainingJob) -> TrainingJob:
        backend = self.training_backend
        offset = 0
        # The backend enforces max_runtime itself; this is the safety net if it does not.
        deadline = time.monotonic() + self.max_runtime_seconds + 300
        while True:
            text, offset = backend.read_logs(job.job_name, offset)
            for line in text.splitlines():
                self.log.info("[%s] %s", job.job_name, line)
            if job.state.terminal:
                return job
            if time.monotonic() > deadline:
                self.log.error("Training job %s outlived its max runtime; stopping it", job.job_name)
                return backend.stop(job.job_name)
            time.sleep(self.poll_interval)
            job = backend.describe(job.job_name)

    @staticmethod
    def _read_metrics(job: TrainingJob, path) -> dict[str, Any]:
        try:
            report = json.loads(path.read_text())
        except FileNotFoundError:
            raise TrainingJobFailed(f"training job {job.job_name} wrote no metrics.json ({path})") from None
        except ValueError as e:
            raise TrainingJobFailed(f"training job {job.job_name}: metrics.json is not JSON: {e}") from None
        metrics = report.get("metrics") if isinstance(report, dict) else None
        if not isinstance(metrics, dict):
            raise TrainingJobFailed(f"training job {job.job_name}: metrics.json has no 'metrics' object")
        # Only finite real numbers survive; anything else (true, "0.9", NaN, inf, null, {...}) becomes None:
        # JSON-able, and the gate fails closed on it with the metric's name.
        clean = {}
        for key, value in metrics.items():
            number = None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                try:
                    number = float(value)
                except OverflowError:  # an int too large for a float
                    number = None
            clean[key] = number if number is not None and math.isfinite(number) else None
        report["metrics"] = clean
        return report

    def on_kill(self) -> None:
        if self._job_name:
            self.log.info("Task killed: stopping training job %s", self._job_name)
            self.training_backend.stop(self._job_name)
