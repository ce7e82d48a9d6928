"""TrainModelOperator: run the training script on a backend; reattach on retry; stop on kill."""

from __future__ import annotations

import math
import time
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowTaskTimeout

from airflow_retrain import artifacts
from airflow_retrain.operators.base import TrainingBackendOperator
from airflow_retrain.training.base import (
    JobState,
    TrainingJob,
    TrainingJobRequest,
    TrainingOutputs,
    TrainingOutputsMissing,
)


class TrainingJobFailed(AirflowException):
    pass


class TrainModelOperator(TrainingBackendOperator):
    """Train a model through a :class:`~airflow_retrain.training.base.TrainingBackend`.

    Job names are deterministic per DAG run and attempt. Before submitting, the operator looks for this
    run's jobs by tag: a running one is reattached to, a completed one is reused while its outputs still
    exist (in the artifact store, or publishable from the backend), and only after a failed or stopped
    one -- or a completed one whose outputs the run's teardown removed (a cleared run) -- does it start a
    new attempt: a retry never runs two jobs at once. ``on_kill`` stops the job; whatever is still running
    when the run ends is stopped by the teardown task.

    Outputs are published to ``<run>/training/<job_name>/{model,output}/`` in the artifact store
    (:meth:`~airflow_retrain.training.base.TrainingBackend.fetch_outputs`), then ``outputs.json`` beside
    them marks them complete; metrics are read from the store's ``metrics.json``.

    :param entry_point: training script (SageMaker training-container contract).
    :param channels: channel name -> URI in the artifact store (from :class:`ExportTrainingDatasetOperator`).
    :param hyperparameters: passed to the script as ``SM_HPS`` and ``--key value``.
    :param backend: backend name (``local``); ``backend_config`` holds its settings (see
        :class:`~airflow_retrain.operators.base.TrainingBackendOperator`).
    :param poll_interval: seconds between status checks.
    :return: job name, backend, state, metrics and info from ``metrics.json``, ``model_uri``,
        ``output_uri``, ``metrics_uri``, compute seconds and estimated cost.
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
        training_path = self.artifact_store.run_path(run.dag_id, run.run_key) / "training"
        jobs = backend.find_jobs(run.run_tags())
        job = next((j for j in reversed(jobs) if not j.state.terminal), None)
        outputs: TrainingOutputs | None = None
        if job is not None:
            self.log.info("Reattaching to training job %s (%s) from an earlier attempt", job.job_name, job.state.value)
        elif (done := next((j for j in reversed(jobs) if j.state == JobState.COMPLETED), None)) is not None:
            outputs = self._reusable_outputs(done, training_path / done.job_name)
            if outputs is not None:
                job = done
                self.log.info("Training job %s of this run already completed; reusing its outputs", job.job_name)
        if job is None:
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
                artifact_conn_id=self.artifact_store.conn_id,
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
        if outputs is None:
            outputs = self._publish_outputs(job, training_path / job.job_name)
        report = self._read_metrics(job, outputs.metrics_uri)
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
            **outputs.to_dict(),
            "compute_seconds": job.billable_seconds,
            "cost": cost.to_dict(),
        }

    def _publish_outputs(self, job: TrainingJob, destination) -> TrainingOutputs:
        """Have the backend publish the job's outputs to the store, then mark them complete."""
        outputs = self.training_backend.fetch_outputs(job.job_name, destination)
        artifacts.write_json(destination / "outputs.json", {"job_name": job.job_name, **outputs.to_dict()})
        self.log.info("Training outputs of %s published to %s", job.job_name, artifacts.to_uri(destination))
        return outputs

    def _reusable_outputs(self, job: TrainingJob, destination) -> TrainingOutputs | None:
        """The completed job's outputs if they still exist (published, or publishable from the backend).

        ``None`` when the run's teardown removed them and the backend no longer has them: the run was
        cleared after it ended, and must train again rather than hand on URIs of deleted files.
        """
        store = self.artifact_store
        try:
            marker = artifacts.read_json(destination / "outputs.json")
            outputs = TrainingOutputs(model_uri=marker["model_uri"], output_uri=marker["output_uri"])
            if store.path(outputs.model_uri).exists() and store.path(outputs.metrics_uri).exists():
                return outputs
        except (artifacts.ArtifactNotFound, KeyError, ValueError):
            pass
        try:
            return self._publish_outputs(job, destination)
        except TrainingOutputsMissing as e:
            self.log.warning("%s; not reusing %s: training again", e, job.job_name)
            return None

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

    def _read_metrics(self, job: TrainingJob, uri: str) -> dict[str, Any]:
        try:
            report = artifacts.read_json(self.artifact_store.path(uri))
        except artifacts.ArtifactNotFound:
            raise TrainingJobFailed(f"training job {job.job_name} wrote no metrics.json ({uri})") from None
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
