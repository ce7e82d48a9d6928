"""TrainModelOperator: run the training script on a backend; reattach on retry; stop on kill; defer."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowTaskTimeout

from airflow_retrain import artifacts
from airflow_retrain.operators.base import TrainingBackendOperator
from airflow_retrain.report import SKIP_REASON_KEY
from airflow_retrain.teardown.ledger import last_known_usage
from airflow_retrain.training.base import (
    JobState,
    TrainingInputError,
    TrainingJob,
    TrainingJobExists,
    TrainingJobRequest,
    TrainingOutputs,
    TrainingOutputsMissing,
)

# Seconds past the job's own max runtime before the operator (or its trigger) stops the job itself.
RUNTIME_GRACE_SECONDS = 300
#: Bytes of a job's log copied into the task log by default: the first half as it comes, the last half at
#: the end. A chatty script (50 MB of progress bars) must not bloat the task log or the log server.
DEFAULT_TASK_LOG_MAX_BYTES = 2 * 1024 * 1024
_FALSE = ("0", "false", "no", "off")
# Per backend, the module with its extra links; imported only for that backend (each needs its provider).
_LINK_MODULES = {"sagemaker": "airflow_retrain.links.sagemaker", "vertex": "airflow_retrain.links.vertex"}


def _retired_deferrable_switch() -> bool | None:
    """The retired switches ``RETRAIN_DEFERRABLE`` and ``[retrain] deferrable``, with a warning; None when unset.

    Still read for one release so a deployment without a triggerer keeps polling in place until it moves to
    ``[operators] default_deferrable``.
    """
    from airflow.exceptions import AirflowProviderDeprecationWarning
    from airflow.sdk import conf

    if (env := os.environ.get("RETRAIN_DEFERRABLE")) is not None:
        source, value = "the environment variable RETRAIN_DEFERRABLE", env.strip().lower() not in _FALSE
    elif conf.has_option("retrain", "deferrable"):
        source, value = "[retrain] deferrable", conf.getboolean("retrain", "deferrable")
    else:
        return None
    warnings.warn(
        f"{source} is deprecated and will be removed in the next release: set [operators] default_deferrable "
        f"(AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE={value}) instead, the switch every provider's operators read",
        AirflowProviderDeprecationWarning,
        stacklevel=3,
    )
    return value


class TrainingJobFailed(AirflowException):
    pass


class TrainingJobFailedPermanently(TrainingJobFailed, AirflowFailException):
    """The job failed for a reason a retry reproduces (the script's error, bad input): no retries."""


class EmptyModelOutput(TrainingJobFailedPermanently):
    """The job completed, but its script saved nothing to ``SM_MODEL_DIR``: there is no model to register."""


def _has_files(path: Any) -> bool:
    """Whether the artifact-store prefix ``path`` holds at least one file."""
    fs = getattr(path, "fs", None)
    if fs is None:  # another path-like object (see TrainingBackend.fetch_outputs)
        return path.exists() and any(p.is_file() for p in path.rglob("*"))
    try:
        return bool(fs.find(path.path))
    except FileNotFoundError:
        return False


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


class CappedLogCopy:
    """Copies a job's log lines into the task log within a byte budget.

    The first half of the budget is copied as it arrives; after that only the newest lines (the other
    half) are kept, and :meth:`finish` logs one line saying how much was left out and where the full
    log is, then those last lines -- usually the ones that explain a failure.

    :param emit: logs one line (``lambda line: log.info("[%s] %s", job, line)``).
    :param max_bytes: the budget; ``0`` or less copies everything.
    """

    def __init__(self, emit: Callable[[str], None], max_bytes: int) -> None:
        self.emit = emit
        self.max_bytes = max_bytes
        self.head_left = max_bytes - max_bytes // 2
        self.tail_budget = max_bytes // 2
        self.tail: deque[str] = deque()
        self.tail_bytes = 0
        self.omitted_lines = 0
        self.omitted_bytes = 0
        self.capped = False

    def feed(self, text: str, where: str | None = None) -> None:
        for line in text.splitlines():
            size = len(line.encode(errors="replace")) + 1
            if self.max_bytes <= 0 or (not self.capped and size <= self.head_left):
                self.head_left -= size
                self.emit(line)
                continue
            if not self.capped:
                self.capped = True
                self.emit(
                    f"[task log capped at {_size(self.max_bytes)}: the last {_size(self.tail_budget)} follow when "
                    f"the job ends; full log: {where or 'the backend keeps none'}]"
                )
            self.tail.append(line)
            self.tail_bytes += size
            while self.tail_bytes > self.tail_budget and self.tail:
                dropped = len(self.tail.popleft().encode(errors="replace")) + 1
                self.tail_bytes -= dropped
                self.omitted_lines += 1
                self.omitted_bytes += dropped

    def finish(self, where: str | None = None) -> None:
        if self.omitted_lines:
            self.emit(
                f"[{self.omitted_lines} lines ({_size(self.omitted_bytes)}) of the job's log omitted from this task "
                f"log; full log: {where or 'the backend keeps none'}]"
            )
        while self.tail:
            self.emit(self.tail.popleft())
        self.tail_bytes = 0


def _usd(cost: Any) -> str:
    return f"${cost.usd:.4f}" if cost.usd is not None else "unknown (no price)"


class TrainModelOperator(TrainingBackendOperator):
    """Train a model through a :class:`~airflow_retrain.training.base.TrainingBackend`.

    Job names are deterministic per DAG run and attempt. Before submitting, the operator looks for this
    run's jobs by tag: a running one is reattached to, a completed one is reused while its outputs still
    exist (in the artifact store, or publishable from the backend), and only after a failed or stopped
    one -- or a completed one whose outputs the run's teardown removed (a cleared run) -- does it start a
    new attempt: a retry never runs two jobs at once, and a name already taken (a job the tag search did
    not show yet) is reattached to as well. A job that failed for a
    reason a retry reproduces (SageMaker's ``AlgorithmError``/``ClientError``, a refused request) fails
    the task without burning retries.

    Waiting: with ``deferrable`` on a remote backend the task defers to
    :class:`~airflow_retrain.triggers.training.TrainingJobTrigger` after submitting, so no worker slot is
    held while the job trains. As with the providers' operators, ``deferrable`` defaults to
    ``[operators] default_deferrable`` (off unless the deployment, which knows whether it runs a triggerer,
    turns it on). The local backend never defers: its job is a process on the worker. Without deferral the
    task polls in place and ``on_kill`` stops the job. A deferred task
    that is marked failed or cleared is stopped by the trigger's ``on_kill``; one that times out by the
    trigger's deadline; anything else the run left running by the run's ``teardown`` task.

    Outputs are published to ``<run>/training/<job_name>/{model,output}/`` in the artifact store
    (:meth:`~airflow_retrain.training.base.TrainingBackend.fetch_outputs`), then ``outputs.json`` beside
    them marks them complete; metrics are read from the store's ``metrics.json``.

    :param entry_point: training script (SageMaker training-container contract).
    :param channels: channel name -> URI in the artifact store (from :class:`ExportTrainingDatasetOperator`).
    :param hyperparameters: passed to the script as ``SM_HPS`` and ``--key value``.
    :param backend: backend name (``local``, ``sagemaker``); ``backend_config`` holds its settings (see
        :class:`~airflow_retrain.operators.base.TrainingBackendOperator`).
    :param poll_interval: seconds between status checks.
    :param deferrable: defer while a remote job runs; ``None`` (default): ``[operators] default_deferrable``
        of the worker running the task (see above).
    :param max_cost_usd: refuse to launch when hourly price x instances x max runtime exceeds it.
    :param max_task_log_bytes: how much of the job's log is copied into the task log (see
        :class:`CappedLogCopy`; ``0``: all of it); one line names how much was left out and where the
        full log is (:meth:`~airflow_retrain.training.base.TrainingBackend.log_location`).
    :param warehouse_conn_id: the warehouse of the cost ledger: a submitted job is recorded there at once
        (and again with its last known time if the task loses the cloud), so no job that ran escapes the
        ledger; the run's teardown writes its final cost. ``None``: no ledger row from this task.
    :param data_fingerprint: the exported data's content fingerprint (``export_dataset``'s ``fingerprint``).
    :param skip_unchanged: ``{"model_name", "mlflow_conn_id", "force_param", "config"}``: skip (no job) when
        this run's training inputs equal those recorded on the champion, unless the Param ``force_param`` is
        true (:mod:`airflow_retrain.registry.inputs`); the result's ``inputs`` are then recorded on the version.
    :return: job name, backend, state, metrics and info from ``metrics.json``, ``model_uri``,
        ``output_uri``, ``metrics_uri``, compute seconds and cost (``usd`` is ``None`` when no price is known).
    """

    template_fields = ("entry_point", "channels", "hyperparameters", "data_fingerprint")
    ui_color = "#76b900"
    operator_extra_links = ()  # the backend's own, set per task (see __init__)

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
        deferrable: bool | None = None,
        max_cost_usd: float | None = None,
        max_task_log_bytes: int = DEFAULT_TASK_LOG_MAX_BYTES,
        warehouse_conn_id: str | None = "retrain_warehouse",
        hyperparameters_param: str | None = None,
        data_fingerprint: str | None = None,
        skip_unchanged: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_fingerprint = data_fingerprint
        self.skip_unchanged = skip_unchanged
        self.warehouse_conn_id = warehouse_conn_id
        self.hyperparameters_param = hyperparameters_param
        self.entry_point = entry_point
        self.channels = channels
        self.hyperparameters = hyperparameters
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.max_runtime_seconds = max_runtime_seconds
        self.gpu = gpu
        self.poll_interval = poll_interval
        self.deferrable = deferrable
        self.max_cost_usd = max_cost_usd
        self.max_task_log_bytes = max_task_log_bytes
        self._job_name: str | None = None
        if links := self._job_links_module():  # the links of the backend's console, not the other cloud's
            self.operator_extra_links = tuple(link() for link in links.JOB_LINKS)

    def _job_links_module(self) -> Any:
        """The backend's links module (``airflow_retrain.links.<backend>``); None for a backend without links."""
        import importlib

        module = _LINK_MODULES.get(self.backend)
        return importlib.import_module(module) if module else None

    def should_defer(self) -> bool:
        """Whether this task defers while its job runs (see the class docstring)."""
        if not self.training_backend.remote:
            if self.deferrable:
                self.log.info("Not deferring: a local training job runs on this worker; polling in place")
            return False
        if self.deferrable is not None:
            return bool(self.deferrable)
        if (retired := _retired_deferrable_switch()) is not None:
            return retired
        from airflow.sdk import conf

        return conf.getboolean("operators", "default_deferrable", fallback=False)

    def check_budget(self) -> None:
        """Refuse to launch when the job's worst case (price x instances x max runtime) exceeds the budget."""
        if self.max_cost_usd is None:
            return
        from airflow_retrain.cost import UnknownPriceError, max_job_cost

        config = self.training_backend.config()
        try:
            worst = max_job_cost(
                self.training_backend.name,
                self.instance_type,
                self.instance_count,
                self.max_runtime_seconds,
                self.hourly_price_usd,
                region=config.get("region"),
                spot=bool(config.get("spot", False)),
            )
        except UnknownPriceError as e:
            raise AirflowFailException(f"training.max_cost_usd is set but the price is unknown: {e}") from None
        if worst.usd > self.max_cost_usd:
            raise AirflowFailException(
                f"training.max_cost_usd: not launching -- {self.instance_count} x {self.instance_type} at "
                f"${worst.hourly_price_usd}/h for up to {self.max_runtime_seconds} s may cost ${worst.usd:.2f}, "
                f"above the budget of ${self.max_cost_usd:.2f}"
            )

    def _overrides(self, context) -> dict[str, Any]:
        """The trigger form's hyperparameter overrides (the Param ``hyperparameters_param``), if any."""
        if not self.hyperparameters_param:
            return {}
        overrides = dict((context.get("params") or {}).get(self.hyperparameters_param) or {})
        if overrides:
            self.log.info("Hyperparameters overridden by the run's Param %r: %s", self.hyperparameters_param, overrides)
        return overrides

    def _inputs(self, context) -> dict[str, str]:
        """This run's training inputs as fingerprints (data, code, resolved hyperparameters, config)."""
        from airflow_retrain.registry.inputs import training_inputs

        config = {k: getattr(self, k) for k in ("backend", "backend_config", "gpu", "instance_type", "instance_count")}
        return training_inputs(data=self.data_fingerprint, entry_point=self.entry_point,
                               config={**config, **self.skip_unchanged.get("config", {})},
                               hyperparameters={**(self.hyperparameters or {}), **self._overrides(context)})

    def _skip_if_unchanged(self, context) -> None:
        """Skip (no job; downstream skipped) when the champion was trained on these very inputs."""
        from airflow.sdk.exceptions import AirflowSkipException

        from airflow_retrain.hooks.mlflow import MlflowHook
        from airflow_retrain.registry.inputs import skip_reason

        if self.skip_unchanged and (reason := skip_reason(
            self.skip_unchanged, context.get("params"), lambda: self._inputs(context),
            lambda: MlflowHook(self.skip_unchanged["mlflow_conn_id"]), self.log,
        )):
            context["ti"].xcom_push(key=SKIP_REASON_KEY, value=reason)
            raise AirflowSkipException(reason)

    def execute(self, context) -> dict[str, Any]:
        backend = self.training_backend
        self.check_budget()
        job = self._submit_or_reattach(context)
        self._job_name = job.job_name
        context["ti"].xcom_push(key="job_name", value=job.job_name)
        if (links := self._job_links_module()) and (params := backend.job_link_params(job.job_name)):
            links.persist_job_links(context, self, **params)
        if not job.state.terminal and self.should_defer():
            from airflow_retrain.triggers.training import TrainingJobTrigger

            deadline = (job.created_at or time.time()) + self.max_runtime_seconds + RUNTIME_GRACE_SECONDS
            self.log.info("Deferring while training job %s runs (no worker slot is held)", job.job_name)
            self.defer(
                trigger=TrainingJobTrigger(
                    backend=backend.name,
                    backend_config=backend.config(),
                    job_name=job.job_name,
                    poll_interval=self.poll_interval,
                    deadline=deadline,
                ),
                method_name="execute_complete",
                # Airflow's own timeout is the last resort: the trigger's deadline fires first and stops the job.
                timeout=timedelta(seconds=max(60.0, deadline - time.time()) + 600),
            )
        self._last_seen = (job, time.time())
        try:
            job = self._wait(job)
        except AirflowTaskTimeout:
            # The task's execution_timeout is a budget for the job too: a retry must not inherit it.
            self.log.error("Task timed out: stopping training job %s", job.job_name)
            backend.stop(job.job_name)
            raise
        except Exception as e:
            # Lost the cloud (or it forgot the job) while polling in place: ledger the last known time.
            seen, seen_at = self._last_seen
            self._ledger(context, last_known_usage(seen, seen_at), "lost", f"waiting for training job "
                         f"{seen.job_name} failed: {type(e).__name__}: {e}")
            raise
        return self._finish(context, job)

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: re-emit its status transitions and log lines, then finish."""
        name = event.get("job_name") or self._job_name
        self._job_name = name
        for line in event.get("transitions") or []:
            self.log.info("%s", line)
        for line in event.get("log_tail") or []:
            self.log.info("[%s] %s", name, line)
        status = event.get("status")
        if status == "error" or not event.get("job"):
            message = f"waiting for training job {name} failed: {event.get('message')}"
            if last := event.get("last_job"):
                seen = TrainingJob.from_dict(last)
                self._ledger(context, last_known_usage(seen, event.get("last_seen_at") or time.time()), "lost", message)
            raise TrainingJobFailed(message)
        job = TrainingJob.from_dict(event["job"])
        if status == "timeout":
            raise TrainingJobFailed(
                f"training job {name} outlived its max runtime ({self.max_runtime_seconds} s + "
                f"{RUNTIME_GRACE_SECONDS} s grace) and was stopped ({job.state.value})"
            )
        return self._finish(context, job)

    def _submit_or_reattach(self, context) -> TrainingJob:
        run = self.run_identity(context)
        backend = self.training_backend
        jobs = backend.find_jobs(run.run_tags())
        job = next((j for j in reversed(jobs) if not j.state.terminal), None)
        if job is not None:
            self.log.info("Reattaching to training job %s (%s) from an earlier attempt", job.job_name, job.state.value)
            return job
        if (done := next((j for j in reversed(jobs) if j.state == JobState.COMPLETED), None)) is not None:
            if self._reusable_outputs(done, self._training_path(run) / done.job_name) is not None:
                self.log.info("Training job %s of this run already completed; reusing its outputs", done.job_name)
                return done
        self._skip_if_unchanged(context)  # after reattaching: a job this run started is always finished
        attempt = len(jobs) + 1
        for attempt in range(len(jobs) + 1, len(jobs) + 11):
            request = TrainingJobRequest(
                job_name=run.job_name(attempt),
                entry_point=self.entry_point,
                channels=dict(self.channels),
                hyperparameters={**(self.hyperparameters or {}), **self._overrides(context)},
                instance_type=self.instance_type,
                instance_count=self.instance_count,
                max_runtime_seconds=self.max_runtime_seconds,
                gpu=self.gpu,
                tags=run.job_tags(ttl_seconds=self.max_runtime_seconds + 3600),
                artifact_conn_id=self.artifact_store.conn_id,
            )
            try:
                job = backend.submit(request)
            except TrainingJobExists:
                # The name is taken by a job the tag search missed (eventually consistent search).
                job = backend.describe(request.job_name)
                if job.state == JobState.COMPLETED or not job.state.terminal:
                    self.log.info("Training job %s already exists (%s); reattaching", job.job_name, job.state.value)
                    return job
                continue
            except TrainingInputError as e:
                raise AirflowFailException(str(e)) from None
            self.log.info(
                "Submitted training job %s on %s (%s x%d)",
                job.job_name,
                backend.name,
                self.instance_type,
                self.instance_count,
            )
            self._ledger(context, job, "submitted")
            return job
        raise TrainingJobFailed(f"no free training job name for run {run.run_key} up to attempt {attempt}")

    def _finish(self, context, job: TrainingJob) -> dict[str, Any]:
        backend = self.training_backend
        run = self.run_identity(context)
        cost = backend.cost(job, self.hourly_price_usd)
        if job.state != JobState.COMPLETED:
            message = (
                f"training job {job.job_name} {job.state.value}: {job.failure_reason or 'no reason given'} "
                f"(compute {job.billable_seconds:.0f} s, est. {_usd(cost)})"
            )
            if backend.is_permanent_failure(job):
                raise TrainingJobFailedPermanently(message + "; not retrying: a retry would fail the same way")
            raise TrainingJobFailed(message)
        outputs = self._reusable_outputs(job, self._training_path(run) / job.job_name, reuse=False)
        if outputs is None:
            raise TrainingJobFailed(
                f"training job {job.job_name} completed but its outputs are gone from the backend and the "
                "artifact store; retry the task to train again"
            )
        report = self._read_metrics(job, outputs.metrics_uri)
        self.log.info(
            "Training job %s completed in %.1f s on %s; cost %s%s; metrics %s",
            job.job_name,
            job.billable_seconds,
            report.get("info", {}).get("device", "?"),
            _usd(cost),
            f" (spot saved ${cost.spot_savings_usd:.4f})" if cost.spot and cost.spot_savings_usd else "",
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
            **({"inputs": self._inputs(context)} if self.skip_unchanged else {}),
        }

    def _training_path(self, run):
        return self.artifact_store.run_path(run.dag_id, run.run_key) / "training"

    def _publish_outputs(self, job: TrainingJob, destination) -> TrainingOutputs:
        """Have the backend publish the job's outputs to the store, then mark them complete.

        :raises EmptyModelOutput: the script wrote no model (every backend's outputs end up here, so this
            is the one check; a completed job without a model must fail ``train``, not ``register``).
        """
        outputs = self.training_backend.fetch_outputs(job.job_name, destination)
        if not _has_files(self.artifact_store.path(outputs.model_uri)):
            local = f" ({job.details['job_dir']}/model on the worker)" if job.details.get("job_dir") else ""
            raise EmptyModelOutput(
                f"training job {job.job_name} completed, but its script {self.entry_point} wrote no model: the "
                f"model folder {outputs.model_uri}{local} is empty. The script must save its model under the "
                "folder in the SM_MODEL_DIR environment variable; not retrying: a retry would fail the same way"
            )
        artifacts.write_json(destination / "outputs.json", {"job_name": job.job_name, **outputs.to_dict()})
        self.log.info("Training outputs of %s published to %s", job.job_name, artifacts.to_uri(destination))
        return outputs

    def _reusable_outputs(self, job: TrainingJob, destination, reuse: bool = True) -> TrainingOutputs | None:
        """The completed job's outputs if they still exist (published, or publishable from the backend).

        ``None`` when the run's teardown removed them and the backend no longer has them: the run was
        cleared after it ended, and must train again rather than hand on URIs of deleted files.

        :param reuse: looking for an earlier attempt to reuse: one without a model is not reusable (the
            script may have been fixed since); otherwise :class:`EmptyModelOutput` fails the task.
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
        except EmptyModelOutput as e:
            if not reuse:
                raise
            self.log.warning("%s; not reusing %s: training again", e, job.job_name)
            return None

    def _ledger(self, context, job: TrainingJob, phase: str, note: str | None = None) -> None:
        """Record ``job`` in the cost ledger (one row per job, replaced by each later write).

        Best effort: the job runs whether or not the row was written, and failing the task for it would
        not stop the job; the run's teardown writes the row again.
        """
        if self.warehouse_conn_id is None:
            return
        from airflow_retrain.teardown.ledger import CostLedger, training_run_entry

        run = self.run_identity(context)
        where = f"warehouse connection {self.warehouse_conn_id!r}"
        try:
            ledger = CostLedger.from_connection(self.warehouse_conn_id)
            where = ledger.describe()
            cost = self.training_backend.cost(job, self.hourly_price_usd)
            ledger.write([training_run_entry(self.pipeline, run.dag_id, run.run_key, job, cost, time.time(),
                                             phase=phase, note=note)])
        except Exception as e:  # noqa: BLE001 - see the docstring
            self.log.warning("Cost ledger (%s): could not record training job %s as %s: %s: %s",
                             where, job.job_name, phase, type(e).__name__, e)
            return
        self.log.info("Cost ledger: training job %s recorded as %s in %s", job.job_name, phase, where)

    def _wait(self, job: TrainingJob) -> TrainingJob:
        backend = self.training_backend
        offset = 0
        name = job.job_name
        where = backend.log_location(name)
        copy = CappedLogCopy(lambda line: self.log.info("[%s] %s", name, line), self.max_task_log_bytes)
        # The backend enforces max_runtime itself; this is the safety net if it does not.
        deadline = time.monotonic() + self.max_runtime_seconds + RUNTIME_GRACE_SECONDS
        try:
            while True:
                text, offset = backend.read_logs(name, offset)
                copy.feed(text, where)
                if job.state.terminal:
                    return job
                if time.monotonic() > deadline:
                    self.log.error("Training job %s outlived its max runtime; stopping it", name)
                    job = backend.stop(name)
                    copy.feed(backend.read_logs(name, offset)[0], where)
                    return job
                time.sleep(self.poll_interval)
                job = backend.describe(name)
                self._last_seen = (job, time.time())
        finally:
            copy.finish(where)  # the last lines, also when the task is killed or times out while waiting

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
