"""A moto server whose SageMaker training jobs take time, fail on request, stop, and leave outputs and logs.

Plain moto 5.2.5 completes a training job the moment it is created, reports no
``BillableTimeInSeconds``, has no ``StopTrainingJob`` and silently overwrites a duplicate name. This
small patch of moto's in-process backends (the server runs in this process) gives the SageMaker backend,
the trigger and the benchmark a cloud that behaves like the real one where they depend on it. It does
not run the training script: ``scripts/fake_cloud.py`` (the fake users run) does; this stays a test
double steered by hyperparameters of the job:

- ``fake_duration_s`` (default 0): seconds the job stays ``InProgress`` (``Starting`` for the first
  fifth, then ``Training``);
- ``fake_outcome``: ``Completed`` (default), ``Failed`` or ``NoOutputs`` (completes, writes nothing);
- ``fake_failure_reason``: the ``FailureReason`` of a failed job;
- ``fake_spot_billable_fraction``: with managed spot, the billed share of the training seconds.

On completion it writes ``output/model.tar.gz`` and ``output/output.tar.gz`` (``metrics.json``) under
the job's ``S3OutputPath`` and a few CloudWatch log lines; ``StopTrainingJob`` moves the job through
``Stopping`` to ``Stopped``. Every HTTP request the server answers is counted in :data:`API_CALLS`.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import threading
import time
from collections import Counter
from typing import Any

API_CALLS: Counter[str] = Counter()
# The same, per server port: several servers in one process share moto's state but count apart.
API_CALLS_BY_PORT: dict[str, Counter[str]] = {}
_LOCK = threading.RLock()
_PATCHED = False
LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _hp(job, key: str, default: Any = None) -> Any:
    raw = (job.hyper_parameters or {}).get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _log(job, lines: list[str]) -> None:
    from moto.logs.models import logs_backends

    logs = logs_backends[job._fake["account"]][job._fake["region"]]
    with contextlib.suppress(Exception):
        logs.create_log_group(LOG_GROUP, {})
    stream = f"{job.training_job_name}/algo-1-{int(job._fake['created'])}"
    with contextlib.suppress(Exception):
        logs.create_log_stream(LOG_GROUP, stream)
    now = int(time.time() * 1000)
    logs.put_log_events(LOG_GROUP, stream, [{"timestamp": now, "message": line} for line in lines])


def _write_outputs(job) -> None:
    from moto.s3.models import s3_backends

    s3 = s3_backends[job._fake["account"]]["aws"]
    output = job.output_data_config["S3OutputPath"].removeprefix("s3://").rstrip("/")
    bucket, _, prefix = output.partition("/")
    base = f"{prefix}/{job.training_job_name}/output" if prefix else f"{job.training_job_name}/output"
    metrics = {"metrics": {"roc_auc": 0.91, "accuracy": 0.83, "log_loss": 0.41}, "info": {"device": "fake"}}
    s3.put_object(bucket, f"{base}/model.tar.gz", _tar({"model.json": b'{"trees": 3}', "sub/extra.txt": b"x"}))
    s3.put_object(bucket, f"{base}/output.tar.gz", _tar({"metrics.json": json.dumps(metrics).encode()}))


def _utc(epoch: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC).replace(tzinfo=None)


def _transition(job, status: str, message: str) -> None:
    now = _utc(time.time())
    if job.secondary_status_transitions:
        job.secondary_status_transitions[-1]["EndTime"] = now
    job.secondary_status_transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})


def _refresh(job) -> None:
    fake = getattr(job, "_fake", None)
    if fake is None or fake["final"]:
        return
    now = time.time()
    started = fake["created"]
    if fake["stop_requested"] is not None:
        job.training_job_status, job.secondary_status = "Stopped", "Stopped"
        end = fake["stop_requested"]
        outcome_reason = None
    elif now - started < fake["duration"]:
        job.training_job_status = "InProgress"
        job.secondary_status = "Starting" if now - started < fake["duration"] / 5 else "Training"
        if job.secondary_status == "Training" and not fake["logged_start"]:
            fake["logged_start"] = True
            job.training_start_time = _utc(started + fake["duration"] / 5)
            _transition(job, "Training", "Training image download completed. Training in progress.")
            _log(job, ["Invoking script with the following command:", "epoch 1 loss 0.52"])
        return
    else:
        end = started + fake["duration"]
        outcome = fake["outcome"]
        outcome_reason = fake["failure_reason"] if outcome == "Failed" else None
        job.training_job_status = "Failed" if outcome == "Failed" else "Completed"
        job.secondary_status = job.training_job_status
        if outcome == "Completed":
            _write_outputs(job)
        _log(job, ["epoch 2 loss 0.41", "ERROR: " + outcome_reason if outcome_reason else "Training complete"])
    fake["final"] = True
    trained = max(1, round(end - started))
    if job.training_start_time is None:
        job.training_start_time = job.creation_time
    job.training_end_time = job.last_modified_time = _utc(end)
    _transition(job, job.secondary_status, f"Training job {job.secondary_status.lower()}")
    job.training_time_in_seconds = trained
    billable = trained
    if job.enable_managed_spot_training:
        billable = max(1, round(trained * fake["spot_fraction"]))
    job.billable_time_in_seconds = billable
    if outcome_reason:
        job.failure_reason = outcome_reason


def install() -> None:
    """Patch moto's SageMaker backend (idempotent)."""
    global _PATCHED
    with _LOCK:
        if _PATCHED:
            return
        _PATCHED = True
    from moto.core.responses import ActionResult, EmptyResult
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import FakeTrainingJob, SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    create = SageMakerModelBackend.create_training_job
    describe = SageMakerModelBackend.describe_training_job
    search = SageMakerModelBackend.search
    list_jobs = SageMakerModelBackend.list_training_jobs

    def create_training_job(self, training_job_name, *args, **kwargs):
        with _LOCK:
            if training_job_name in self.training_jobs:
                raise ValidationError(message="Training job names must be unique within an AWS account and region")
            job = create(self, training_job_name, *args, **kwargs)
            job._fake = {
                "account": self.account_id,
                "region": self.region_name,
                "created": time.time(),
                "duration": float(_hp(job, "fake_duration_s", 0)),
                "outcome": _hp(job, "fake_outcome", "Completed"),
                "failure_reason": _hp(job, "fake_failure_reason", "AlgorithmError: the script exited with 1"),
                "spot_fraction": float(_hp(job, "fake_spot_billable_fraction", 0.3)),
                "stop_requested": None,
                "logged_start": False,
                "final": False,
            }
            job.training_job_status, job.secondary_status = "InProgress", "Starting"
            for attr in ("training_end_time", "training_start_time"):
                setattr(job, attr, None)
            _refresh(job)
            return job

    def refresh_all(self):
        with _LOCK:
            for job in list(self.training_jobs.values()):
                _refresh(job)

    def describe_training_job(self, training_job_name):
        refresh_all(self)
        return describe(self, training_job_name)

    def search_(self, *args, **kwargs):
        refresh_all(self)
        return search(self, *args, **kwargs)

    def list_training_jobs(self, *args, **kwargs):
        refresh_all(self)
        return list_jobs(self, *args, **kwargs)

    def stop_training_job(self, training_job_name):
        with _LOCK:
            job = self.training_jobs.get(training_job_name)
            if job is None:
                arn = FakeTrainingJob.arn_formatter(training_job_name, self.account_id, self.region_name)
                raise ValidationError(message=f"Could not find training job '{arn}'.")
            _refresh(job)
            if job.training_job_status != "InProgress":
                raise ValidationError(
                    message=f"The request was rejected because the training job is in status {job.training_job_status}."
                )
            job._fake["stop_requested"] = time.time()
            job.training_job_status, job.secondary_status = "Stopping", "Stopping"

    def stop_training_job_response(self) -> ActionResult:
        self.sagemaker_backend.stop_training_job(self._get_param("TrainingJobName"))
        return EmptyResult()

    SageMakerModelBackend.create_training_job = create_training_job
    SageMakerModelBackend.describe_training_job = describe_training_job
    SageMakerModelBackend.search = search_
    SageMakerModelBackend.list_training_jobs = list_training_jobs
    SageMakerModelBackend.stop_training_job = stop_training_job
    SageMakerResponse.stop_training_job = stop_training_job_response

    dispatch = DomainDispatcherApplication.__call__

    def counting_call(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET") or f"{environ.get('REQUEST_METHOD')} s3"
        if not environ.get("PATH_INFO", "").startswith("/moto-api"):
            kind = target.rsplit(".", 1)[-1]
            API_CALLS[kind] += 1
            API_CALLS_BY_PORT.setdefault(str(environ.get("SERVER_PORT")), Counter())[kind] += 1
        return dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = counting_call


class FakeCloud:
    """A threaded moto server on a free loopback port, with :func:`install` applied."""

    def __init__(self, port: int = 0):
        from moto.server import ThreadedMotoServer

        install()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def __enter__(self) -> FakeCloud:
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    @property
    def calls(self) -> Counter[str]:
        """Requests this server answered, by API."""
        return API_CALLS_BY_PORT.setdefault(str(self.server.get_host_and_port()[1]), Counter())

    def reset(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"))
        API_CALLS.clear()

    def connection_uri(self, region: str = "us-east-1") -> str:
        """An Airflow AWS connection (JSON) with dummy keys, pointing every client at this server."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": self.endpoint_url, "region_name": region},
            }
        )
