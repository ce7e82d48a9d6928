"""The training backend interface: submit / describe / stop / find / fetch outputs / cost.

Every backend (local subprocess today; SageMaker and Vertex AI next) speaks in the same JSON-able
:class:`TrainingJob` snapshots, so one operator, one trigger and one teardown work with all of them.
Jobs are found again by *tags* (pipeline, dag run, owner, ttl) that every launched job carries: that is
how a retry reattaches instead of starting a second job, and how teardown finds what a run left behind.
"""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_retrain.cost import CostEstimate, job_cost

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


class JobState(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.STOPPED)


class TrainingJobNotFound(LookupError):
    pass


class TrainingJobExists(RuntimeError):
    pass


class TrainingOutputsMissing(LookupError):
    """A job completed, but its outputs no longer exist where the backend keeps them (cleaned up or
    expired): they cannot be published again, so the run must train again."""


class TrainingInputError(ValueError):
    """The cloud refused the job for a reason a retry cannot fix (bad input, validation, access denied).

    The operator fails such a task without burning retries; the message quotes the cloud's reason and
    names the spec field or connection to fix.
    """


@dataclass(frozen=True)
class TrainingJobRequest:
    """What to run; the same request means the same job on every backend.

    :param job_name: unique, deterministic per DAG run and attempt (see ``runs.job_name``).
    :param entry_point: the training script (absolute path locally; staged by remote backends).
    :param channels: input channel name -> URI of a prefix in the artifact store (``file://``, ``s3://``,
        ``gs://``; see :mod:`airflow_retrain.artifacts`). The local backend also takes a plain local folder.
    :param hyperparameters: passed as ``SM_HPS`` JSON and ``--key value`` arguments.
    :param tags: pipeline/run/owner/ttl tags every backend attaches to the job.
    :param artifact_conn_id: the Airflow connection of the artifact store the channel URIs are in, for
        backends that read channels through Airflow (the local backend downloads them); ``None``: the
        default connection of the URI's scheme.
    """

    job_name: str
    entry_point: str
    channels: dict[str, str]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    instance_type: str = "local"
    instance_count: int = 1
    max_runtime_seconds: int = 3600
    gpu: str = "auto"  # auto | required | none
    tags: dict[str, str] = field(default_factory=dict)
    artifact_conn_id: str | None = None


@dataclass
class TrainingJob:
    """A JSON-able snapshot of one job, as the backend reports it."""

    job_name: str
    backend: str
    state: JobState
    instance_type: str = "local"
    instance_count: int = 1
    created_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    billable_seconds: float = 0.0
    failure_reason: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingJob:
        return cls(**{**data, "state": JobState(data["state"])})


@dataclass(frozen=True)
class TrainingOutputs:
    """Where a finished job's outputs were published in the artifact store (URIs, JSON-able).

    :param model_uri: prefix holding the files the script wrote to ``SM_MODEL_DIR`` (extracted, not a tarball).
    :param output_uri: prefix holding the files it wrote to ``SM_OUTPUT_DATA_DIR`` (``metrics.json``).
    """

    model_uri: str
    output_uri: str

    @property
    def metrics_uri(self) -> str:
        return f"{self.output_uri.rstrip('/')}/metrics.json"

    def to_dict(self) -> dict[str, str]:
        return {"model_uri": self.model_uri, "output_uri": self.output_uri, "metrics_uri": self.metrics_uri}


class TrainingBackend(ABC):
    """Runs training scripts written for the SageMaker training-container contract."""

    name: ClassVar[str]
    #: Jobs run elsewhere (a cloud): the operator defers while they run instead of holding a worker slot.
    remote: ClassVar[bool] = False

    @abstractmethod
    def submit(self, request: TrainingJobRequest) -> TrainingJob:
        """Start the job; raise :class:`TrainingJobExists` if the name is taken."""

    @abstractmethod
    def describe(self, job_name: str) -> TrainingJob:
        """Current state; raise :class:`TrainingJobNotFound` for an unknown name."""

    @abstractmethod
    def stop(self, job_name: str) -> TrainingJob:
        """Ask the job to stop; a no-op on terminal jobs. Returns the state after asking."""

    @abstractmethod
    def find_jobs(self, tags: dict[str, str]) -> list[TrainingJob]:
        """Jobs carrying all of ``tags``, oldest first."""

    @abstractmethod
    def fetch_outputs(self, job_name: str, destination: ObjectStoragePath) -> TrainingOutputs:
        """Publish a completed job's outputs to the artifact store, under ``destination``.

        The contract every backend keeps (the operator relies on nothing else):

        * ``destination`` is the job's prefix in the run's artifact store
          (``<root>/<dag_id>/<run_key>/training/<job_name>``): an :class:`~airflow.sdk.ObjectStoragePath`
          (``file://``, ``s3://``, ``gs://``) -- or any path-like object with ``/``, ``mkdir``,
          ``write_bytes`` and ``open``. :func:`airflow_retrain.artifacts.upload` copies a local folder there.
        * The files the script wrote to ``SM_MODEL_DIR`` go under ``destination / "model"`` and those it
          wrote to ``SM_OUTPUT_DATA_DIR`` under ``destination / "output"`` -- as plain files, relative paths
          kept (a remote backend extracts ``model.tar.gz``/``output.tar.gz`` first), so ``metrics.json``
          is at ``destination / "output" / "metrics.json"``.
        * It returns ``TrainingOutputs(model_uri, output_uri)``: the plain URIs of those two prefixes
          (:func:`airflow_retrain.artifacts.to_uri`, never the ``conn@bucket`` form).
        * Publishing twice is harmless (same files, overwritten); the caller marks the outputs complete
          (``outputs.json``) only after this returns.

        :raises RuntimeError: the job is not ``Completed``.
        :raises TrainingOutputsMissing: the job completed but its outputs are gone from the backend
            (cleaned up, expired); the caller starts a new attempt.
        """

    def read_logs(self, job_name: str, offset: int = 0) -> tuple[str, int]:
        """New log text since ``offset`` and the next offset; backends without logs return nothing."""
        return "", offset

    async def adescribe(self, job_name: str) -> TrainingJob:
        """:meth:`describe` for the triggerer's event loop.

        The default runs :meth:`describe` in a thread; a cloud backend awaits its async client instead.
        """
        return await asyncio.to_thread(self.describe, job_name)

    async def aread_logs(self, job_name: str, offset: int = 0) -> tuple[str, int]:
        """:meth:`read_logs` for the triggerer's event loop (default: in a thread; same offsets)."""
        return await asyncio.to_thread(self.read_logs, job_name, offset)

    async def astop(self, job_name: str) -> TrainingJob:
        """:meth:`stop` for the triggerer's event loop (default: in a thread)."""
        return await asyncio.to_thread(self.stop, job_name)

    def cleanup(self, job_name: str) -> list[str]:
        """Remove the job's scratch (inputs, model copies); keep its record. Returns what was removed.

        After cleanup, :meth:`fetch_outputs` may raise :class:`TrainingOutputsMissing`.
        """
        return []

    #: FailureReason prefixes (SageMaker's vocabulary, which the local backend speaks too) of failures a
    #: retry reproduces: the script raised (AlgorithmError) or the request/input was wrong (ClientError).
    #: InternalServerError, CapacityError and a lost runner are worth a retry.
    permanent_failure_prefixes: ClassVar[tuple[str, ...]] = ("AlgorithmError", "ClientError")

    def is_permanent_failure(self, job: TrainingJob) -> bool:
        """True when a failed job failed for a reason a retry cannot fix (the script's error, bad input)."""
        return job.state == JobState.FAILED and str(job.failure_reason or "").startswith(
            self.permanent_failure_prefixes
        )

    def log_location(self, job_name: str) -> str | None:
        """Where the job's full log lives (a path, URL or log group), for a task log that copies only part of it."""
        return None

    def job_link_params(self, job_name: str) -> dict[str, str]:
        """The parameters the backend's extra links format their URLs from (region, job id, ...).

        The train task stores them through its links' ``persist`` (``airflow_retrain.links.<backend>``);
        empty when the job has no console page (local jobs, a job this backend does not know).
        """
        return {}

    def config(self) -> dict[str, Any]:
        """The JSON-able settings this backend was built with (names and connection ids, no secrets).

        A trigger rebuilds the backend from ``(name, config())`` in the triggerer.
        """
        return {}

    def cost(self, job: TrainingJob, hourly_price_usd: float | None = None) -> CostEstimate:
        """What ``job`` cost; an unknown price gives ``usd=None`` and a warning, never an error."""
        training = job.details.get("training_seconds")
        return job_cost(
            self.name,
            job.instance_type,
            job.billable_seconds,
            job.instance_count,
            hourly_price_usd,
            region=job.details.get("region"),
            spot=bool(job.details.get("spot", False)),
            training_seconds=training if training is not None else None,
        )
