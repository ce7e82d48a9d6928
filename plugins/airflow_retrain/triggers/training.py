"""TrainingJobTrigger: one trigger that waits for a training job on any backend, in the triggerer.

The train task submits (or reattaches to) its job and defers to this trigger, so no worker slot is held
while the job trains. The trigger serializes only the backend's name, its settings (names, bucket,
region, connection id -- never credentials) and the job's name; in the triggerer it rebuilds the
backend and polls ``describe`` (and the job's log pages) in a thread, so the event loop never blocks on
boto3.

- Status transitions and log lines go to the triggerer's log as they come, and the last
  ``max_log_lines`` of them travel in the final event, so the task re-emits them into its own log.
- ``deadline`` (epoch seconds: job creation + max runtime + grace) survives triggerer restarts: past
  it, the trigger stops the job and reports ``timeout``.
- ``on_kill`` (a user marks the deferred task failed/success or clears it) stops the job. A triggerer
  restart or redistribution does not: the new triggerer resumes polling the same job.
- Transient cloud errors are retried up to ``max_consecutive_errors`` polls in a row.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_retrain.training import get_backend
from airflow_retrain.training.base import JobState, TrainingBackend, TrainingJobNotFound


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
        max_consecutive_errors: int = 10,
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
            },
        )

    @cached_property
    def training_backend(self) -> TrainingBackend:
        return get_backend(self.backend, **self.backend_config)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        backend = self.training_backend
        offset = self.log_offset
        tail: deque[str] = deque(maxlen=self.max_log_lines)
        transitions: list[str] = []
        last_status: tuple[str, str] | None = None
        errors = 0
        while True:
            try:
                job = await asyncio.to_thread(backend.describe, self.job_name)
                if job.state != JobState.PENDING:
                    text, offset = await asyncio.to_thread(backend.read_logs, self.job_name, offset)
                    for line in text.splitlines():
                        self.log.info("[%s] %s", self.job_name, line)
                        tail.append(line)
                errors = 0
            except TrainingJobNotFound as e:
                yield TriggerEvent(self._event("error", None, offset, tail, transitions, message=str(e)))
                return
            except Exception as e:  # noqa: BLE001 - transient cloud trouble: poll again, within limits
                errors += 1
                self.log.warning("Polling training job %s failed (%d/%d): %s", self.job_name, errors,
                                 self.max_consecutive_errors, e)
                if errors >= self.max_consecutive_errors:
                    yield TriggerEvent(
                        self._event("error", None, offset, tail, transitions,
                                    message=f"polling training job {self.job_name} failed {errors} times: {e}")
                    )
                    return
                await asyncio.sleep(self.poll_interval)
                continue
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
                job = await asyncio.to_thread(backend.stop, self.job_name)
                yield TriggerEvent(self._event("timeout", job, offset, tail, transitions))
                return
            await asyncio.sleep(self.poll_interval)

    def _event(self, status, job, offset, tail, transitions, message: str | None = None) -> dict[str, Any]:
        return {
            "status": status,
            "job_name": self.job_name,
            "job": job.to_dict() if job is not None else None,
            "log_offset": offset,
            "log_tail": list(tail),
            "transitions": transitions,
            "message": message,
        }

    async def on_kill(self) -> None:
        """The user acted on the deferred task (mark failed, clear): stop the job it waits for."""
        self.log.warning("Deferred train task killed: stopping training job %s", self.job_name)
        await asyncio.to_thread(self.training_backend.stop, self.job_name)
