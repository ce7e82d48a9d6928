"""TrainingJobTrigger: one trigger that waits for a training job on any backend, in the triggerer.

The train task submits (or reattaches to) its job and defers to this trigger, so no worker slot is held
while the job trains. The trigger serializes only the backend's name, its settings (names, bucket,
region, connection id -- never credentials) and the job's name; in the triggerer it rebuilds the
backend and awaits its async methods (``adescribe``, ``aread_logs``, ``astop``): a cloud backend answers
them with its async client (SageMaker: the Amazon provider's aiobotocore clients), the local backend in a
thread, so the event loop never blocks on a network call.

- Status transitions and log lines go to the triggerer's log as they come, and the last
  ``max_log_lines`` of them travel in the final event, so the task re-emits them into its own log.
- ``deadline`` (epoch seconds: job creation + max runtime + grace) survives triggerer restarts: past
  it, the trigger stops the job and reports ``timeout``.
- ``on_kill`` (a user marks the deferred task failed/success or clears it) stops the job. A triggerer
  restart or redistribution does not: the new triggerer resumes polling the same job.
- A lost cloud is bounded: each poll's ``describe`` fails within the backend's call bound (SageMaker:
  ``CALL_BOUND_SECONDS``, 78 s; Vertex: ``call_timeout``, 30 s), and after ``max_consecutive_errors``
  failed polls in a row (``poll_interval`` apart) the trigger fails the task with a message naming the job
  and the outage. So the task fails at most ``max_consecutive_errors x (call bound + poll_interval)``
  after the cloud went away (docs/outages.md). A job the cloud no longer knows after the trigger saw it
  ("forgotten") fails the task the same way. Both events carry the job's last seen snapshot
  (``last_job``), so the task can ledger its last known billable time.
- A failed log read is logged and retried at the next read; it never counts as a lost cloud.

Polling backs off as the job ages: the next poll comes after ``backoff_fraction`` of the job's age,
never sooner than ``poll_interval`` nor later than ``max_poll_interval``. A job that has trained for
an hour rarely ends in the next 30 s, and SageMaker's describe calls share an account-wide rate limit
with every other pipeline; the price is that the end of a job is noticed up to ``max_poll_interval``
late (``bench/training_wait.py`` reports that latency next to the API calls saved). Log pages are read
every ``log_interval`` seconds and once more at the end, so no line is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_retrain.training import get_backend
from airflow_retrain.training.base import JobState, TrainingBackend, TrainingJob, TrainingJobNotFound


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if epoch else "an unknown time"


class TrainingJobTrigger(BaseTrigger):
    """Poll a training job until it ends; yield one event with its final snapshot.

    :param backend: training backend name (``sagemaker``, ``local``, ...).
    :param backend_config: the backend's settings (``TrainingBackend.config()``; no secrets).
    :param job_name: the job to wait for.
    :param poll_interval: seconds between polls.
    :param deadline: epoch seconds after which the job is stopped and ``timeout`` reported.
    :param log_offset: where the job's log was read up to before deferring.
    :param max_log_lines: how many of the last log lines the final event carries to the task.
    :param max_consecutive_errors: polls in a row that may fail (network, throttling) before giving up.
    :param max_poll_interval: the longest wait between polls (default: the larger of 30 s and
        ``poll_interval``).
    :param backoff_fraction: the wait between polls as a share of the job's age (0 polls evenly).
    :param log_interval: seconds between log reads while the job runs (default: the larger of 30 s and
        ``poll_interval``); logs are always read once more when the job ends.
    """

    def __init__(
        self,
        *,
        backend: str,
        backend_config: dict[str, Any] | None,
        job_name: str,
        poll_interval: float = 30.0,
        deadline: float | None = None,
        log_offset: int = 0,
        max_log_lines: int = 500,
        max_consecutive_errors: int = 5,
        max_poll_interval: float | None = None,
        backoff_fraction: float = 0.1,
        log_interval: float | None = None,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.backend_config = dict(backend_config or {})
        self.job_name = job_name
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.log_offset = log_offset
        self.max_log_lines = max_log_lines
        self.max_consecutive_errors = max_consecutive_errors
        self.max_poll_interval = max_poll_interval
        self.backoff_fraction = backoff_fraction
        self.log_interval = log_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "backend": self.backend,
                "backend_config": self.backend_config,
                "job_name": self.job_name,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "log_offset": self.log_offset,
                "max_log_lines": self.max_log_lines,
                "max_consecutive_errors": self.max_consecutive_errors,
                "max_poll_interval": self.max_poll_interval,
                "backoff_fraction": self.backoff_fraction,
                "log_interval": self.log_interval,
            },
        )

    @cached_property
    def training_backend(self) -> TrainingBackend:
        return get_backend(self.backend, **self.backend_config)

    def next_poll_in(self, job_created_at: float | None) -> float:
        """Seconds until the next poll: a share of the job's age, within the poll bounds."""
        ceiling = self.max_poll_interval if self.max_poll_interval is not None else max(30.0, self.poll_interval)
        age = time.time() - job_created_at if job_created_at else 0.0
        wait = min(max(self.poll_interval, self.backoff_fraction * age), max(ceiling, self.poll_interval))
        if self.deadline is not None:
            wait = min(wait, max(self.poll_interval, self.deadline - time.time()))
        return wait

    async def run(self) -> AsyncIterator[TriggerEvent]:
        backend = self.training_backend
        offset = self.log_offset
        tail: deque[str] = deque(maxlen=self.max_log_lines)
        transitions: list[str] = []
        last_status: tuple[str, str] | None = None
        errors = 0
        outage_since: float | None = None
        log_every = self.log_interval if self.log_interval is not None else max(30.0, self.poll_interval)
        logs_read_at = 0.0
        self._last_job: TrainingJob | None = None
        self._last_seen_at: float | None = None
        while True:
            try:
                job = await backend.adescribe(self.job_name)
            except TrainingJobNotFound as e:
                if self._last_job is not None:  # it existed: the cloud forgot it
                    message = (
                        f"training job {self.job_name} vanished from the {self.backend} backend after it was last "
                        f"seen {self._last_job.state.value} at {_when(self._last_seen_at)} ({e}); its last known "
                        "state is in the cost ledger"
                    )
                else:
                    message = str(e)
                yield TriggerEvent(self._event("error", None, offset, tail, transitions, message=message))
                return
            except Exception as e:  # noqa: BLE001 - transient cloud trouble: poll again, within limits
                errors += 1
                outage_since = outage_since or time.time()
                self.log.warning("Polling training job %s failed (%d/%d): %s", self.job_name, errors,
                                 self.max_consecutive_errors, e)
                if errors >= self.max_consecutive_errors:
                    yield TriggerEvent(
                        self._event(
                            "error", None, offset, tail, transitions,
                            message=(
                                f"lost the {self.backend} cloud while waiting for training job {self.job_name}: "
                                f"{errors} polls in a row failed over {time.time() - outage_since:.0f} s "
                                f"(last error: {e}). The job may still be running and billing: the run's "
                                "teardown stops it once the cloud answers, the gpu_teardown sweep otherwise; "
                                + (
                                    f"it was last seen {self._last_job.state.value} at {_when(self._last_seen_at)}"
                                    if self._last_job is not None
                                    else "it was never seen running"
                                )
                            ),
                        )
                    )
                    return
                await asyncio.sleep(self.poll_interval)
                continue
            errors, outage_since = 0, None
            self._last_job, self._last_seen_at = job, time.time()
            if job.state.terminal or (job.state != JobState.PENDING and time.monotonic() - logs_read_at >= log_every):
                try:
                    text, offset = await backend.aread_logs(self.job_name, offset)
                except Exception as e:  # noqa: BLE001 - logs are best effort; the job's state is what counts
                    self.log.warning("Reading the log of training job %s failed: %s", self.job_name, e)
                else:
                    logs_read_at = time.monotonic()
                    for line in text.splitlines():
                        self.log.info("[%s] %s", self.job_name, line)
                        tail.append(line)
            status = (job.state.value, str(job.details.get("secondary_status", "")))
            if status != last_status:
                line = f"Training job {self.job_name}: {status[0]}" + (f" ({status[1]})" if status[1] else "")
                self.log.info("%s", line)
                transitions.append(line)
                last_status = status
            if job.state.terminal:
                yield TriggerEvent(self._event("done", job, offset, tail, transitions))
                return
            if self.deadline is not None and time.time() > self.deadline:
                self.log.error("Training job %s is past its deadline: stopping it", self.job_name)
                job = await backend.astop(self.job_name)
                yield TriggerEvent(self._event("timeout", job, offset, tail, transitions))
                return
            await asyncio.sleep(self.next_poll_in(job.created_at))

    def _event(self, status, job, offset, tail, transitions, message: str | None = None) -> dict[str, Any]:
        return {
            "status": status,
            "job_name": self.job_name,
            "job": job.to_dict() if job is not None else None,
            "log_offset": offset,
            "log_tail": list(tail),
            "transitions": transitions,
            "message": message,
            # The job as last seen, and when: what the task ledgers for a job the cloud lost or forgot.
            "last_job": last.to_dict() if (last := getattr(self, "_last_job", None)) is not None else None,
            "last_seen_at": getattr(self, "_last_seen_at", None),
        }

    async def on_kill(self) -> None:
        """The user acted on the deferred task (mark failed, clear): stop the job it waits for."""
        self.log.warning("Deferred train task killed: stopping training job %s", self.job_name)
        await self.training_backend.astop(self.job_name)
