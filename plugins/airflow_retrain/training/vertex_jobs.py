"""A Vertex AI ``CustomJob`` as the backend interface's :class:`~airflow_retrain.training.base.TrainingJob`.

States map to :class:`~airflow_retrain.training.base.JobState`; a failed job's error becomes a failure
reason in the SageMaker vocabulary the operator judges retries by (``AlgorithmError`` and ``ClientError``
are permanent, ``CapacityError`` -- a preempted VM -- and ``InternalServerError`` are worth a retry).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from airflow_retrain.runs import from_labels
from airflow_retrain.training.base import JobState, TrainingJob
from airflow_retrain.training.vertex_catalog import price_key

#: The label that carries the job's name (Vertex allows duplicate display names).
JOB_NAME_LABEL = "retrain_job-name"
_STATES = {
    "JOB_STATE_QUEUED": JobState.PENDING,
    "JOB_STATE_PENDING": JobState.PENDING,
    "JOB_STATE_RUNNING": JobState.RUNNING,
    "JOB_STATE_SUCCEEDED": JobState.COMPLETED,
    "JOB_STATE_FAILED": JobState.FAILED,
    "JOB_STATE_CANCELLING": JobState.STOPPING,
    "JOB_STATE_CANCELLED": JobState.STOPPED,
    "JOB_STATE_PAUSED": JobState.PENDING,
    "JOB_STATE_EXPIRED": JobState.FAILED,
    "JOB_STATE_UPDATING": JobState.RUNNING,
    "JOB_STATE_PARTIALLY_SUCCEEDED": JobState.FAILED,
}


def timestamp(value: Any) -> float | None:
    if isinstance(value, datetime) and value.timestamp() > 0:
        return value.timestamp()
    return None


def training_job(cj: Any, backend: str, region: str, default_machine: str) -> TrainingJob:
    """The snapshot of custom job ``cj`` (a ``google.cloud.aiplatform_v1.CustomJob``)."""
    state_name = cj.state.name
    state = _STATES.get(state_name, JobState.PENDING)
    pool = cj.job_spec.worker_pool_specs[0] if cj.job_spec.worker_pool_specs else None
    machine = pool.machine_spec.machine_type if pool else default_machine
    accel = pool.machine_spec.accelerator_type.name if pool and pool.machine_spec.accelerator_type else None
    accel = None if accel in (None, "ACCELERATOR_TYPE_UNSPECIFIED") else accel
    replicas = int(pool.replica_count) if pool else 1
    accelerators = int(pool.machine_spec.accelerator_count) if pool else 0
    started, ended = timestamp(cj.start_time), timestamp(cj.end_time)
    seconds = max(0.0, ((ended if state.terminal else time.time()) - started)) if started and (ended or not state.terminal) else 0.0
    reason = None
    if state == JobState.FAILED:
        message = cj.error.message or state_name
        low = message.lower()
        if "preempted" in low or "reclaimed" in low:
            reason = f"CapacityError: {message}"
        elif "exited with" in low:
            reason = f"AlgorithmError: {message}"
        elif cj.error.code in (3, 5, 7, 9):
            reason = f"ClientError: {message}"
        else:
            reason = f"InternalServerError: {message}"
    elif state == JobState.STOPPED:
        reason = "Cancelled: the custom job was cancelled"
    labels = dict(cj.labels)
    job_name = labels.get(JOB_NAME_LABEL) or cj.display_name
    spot = cj.job_spec.scheduling.strategy.name == "SPOT"
    return TrainingJob(
        job_name=job_name,
        backend=backend,
        state=state,
        instance_type=price_key(machine, accel, accelerators),  # the count prices (and counts) every GPU
        instance_count=replicas,
        created_at=timestamp(cj.create_time),
        started_at=started,
        ended_at=ended if state.terminal else None,
        billable_seconds=round(seconds, 3),
        failure_reason=reason,
        tags=from_labels(labels),
        details={
            "status": state_name,
            "resource_name": cj.name,
            "region": region,
            "spot": spot,
            "machine_type": machine,
            "accelerator_type": accel,
            "accelerator_count": accelerators,
            "training_seconds": round(seconds, 3),
            "output_uri": cj.job_spec.base_output_directory.output_uri_prefix,
        },
    )
