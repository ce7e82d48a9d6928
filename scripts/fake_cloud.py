#!/usr/bin/env python3
"""A fake AWS cloud on loopback: moto's server, extended so SageMaker training jobs really run.

``python scripts/fake_cloud.py [--port N] [--state-dir D]`` serves S3, SageMaker, CloudWatch,
CloudWatch Logs, IAM and STS (moto 5, in-process ``ThreadedMotoServer``-style) on ``127.0.0.1`` and
prints the ``AIRFLOW_CONN_AWS_DEFAULT`` to export. Where moto falls short for training jobs it is
extended in the same process:

* ``CreateTrainingJob`` runs the job: a background runner downloads ``sourcedir.tar.gz``
  (hyperparameters ``sagemaker_submit_directory`` / ``sagemaker_program``, JSON-encoded like the
  SageMaker SDK writes them) and every ``S3Prefix`` channel from S3 into a SageMaker container layout
  (``<root>/input/data/<channel>``, ``<root>/model``, ``<root>/output``) and runs the program with
  the training toolkit's environment (``SM_CHANNEL_*``, ``SM_HPS``, ``SM_MODEL_DIR`` ...,
  ``--key value`` arguments) and an allow-listed environment (no host secrets). Status moves
  ``InProgress`` → ``Completed`` / ``Failed`` / ``Stopped`` with the secondary statuses and their
  transitions, ``TrainingStartTime``/``TrainingEndTime``, ``TrainingTimeInSeconds`` and
  ``BillableTimeInSeconds``; ``model.tar.gz`` and ``output.tar.gz`` are written to
  ``<S3OutputPath>/<job>/output/``; stdout/stderr go to CloudWatch Logs
  (``/aws/sagemaker/TrainingJobs``, stream ``<job>/algo-1-<epoch>``); ``MetricDefinitions`` are
  matched against the log into ``FinalMetricDataList``.
* ``StopTrainingJob`` (absent from moto) stops the run: SIGTERM to the script and its children,
  then whatever is left of its process tree is killed (psutil) after the grace period; status
  ``Stopped``. A job is never reported terminal while a process of it still runs.
* A duplicate ``CreateTrainingJob`` name, an instance type that is not in botocore's SageMaker
  service model and a role that does not exist in (moto's) IAM are rejected with
  ``ValidationException``, like SageMaker does.
* Test controls under ``/fake-cloud/`` on the same port: API call counts per operation, injected
  faults (``ThrottlingException``, ``ResourceLimitExceeded``, ``AccessDeniedException`` ... N times
  for an operation), job faults (the next jobs end ``Failed`` with a given ``FailureReason``),
  run-time knobs (minimum training time, start-up delay, stop grace period), a spot-instance
  reclaim of a running job, and a reset. See :class:`FakeCloudClient`.

Tests and ``make`` share this one implementation: import it by path (``tests/fakes``) and call
:func:`start_fake_cloud`.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5599
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCESS_KEY = "testing"
CONTROL_PREFIX = "/fake-cloud"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
INTERNAL_HEADER = "x-fake-cloud-internal"
HOST_NAME = "algo-1"

# What a training script may inherit from the machine that runs the fake: nothing with a secret in it.
ALLOWED_HOST_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
)

_ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::(\d{12}):role/?([a-zA-Z_0-9+=,.@\-_/]+)$")
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/")


# --------------------------------------------------------------------------------------------- config


@dataclasses.dataclass
class FakeCloudConfig:
    """Run-time knobs of the fake (``GET``/``POST /fake-cloud/config``; env ``FAKE_CLOUD_<NAME>``).

    :param min_training_seconds: a job stays in ``Training`` at least this long (billed), even when
        its script ends sooner: jobs that "train for a set time" for benchmarks and timing tests.
    :param starting_seconds: time spent in ``Starting`` before downloading (instance provisioning).
    :param stop_grace_seconds: after SIGTERM, how long the script may take before its process tree
        is killed (SageMaker gives 120 s).
    :param spot_billable_fraction: ``BillableTimeInSeconds`` / ``TrainingTimeInSeconds`` for jobs
        with ``EnableManagedSpotTraining`` (0.3 = 70 % spot savings).
    :param validate_role: reject ``RoleArn`` values that are not roles in the fake IAM.
    :param python: interpreter that runs the training program (default: the fake's own).
    :param keep_job_dirs: keep each job's container root under the state dir after it ends.
    """

    min_training_seconds: float = 0.0
    starting_seconds: float = 0.0
    stop_grace_seconds: float = 5.0
    spot_billable_fraction: float = 0.3
    validate_role: bool = True
    python: str = sys.executable
    keep_job_dirs: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FakeCloudConfig:
        environ = os.environ if environ is None else environ
        config = cls()
        config.update(
            {
                f.name: environ[f"FAKE_CLOUD_{f.name.upper()}"]
                for f in dataclasses.fields(cls)
                if f"FAKE_CLOUD_{f.name.upper()}" in environ
            }
        )
        return config

    def update(self, values: dict[str, Any]) -> None:
        """Set knobs from JSON or strings; unknown names and bad values raise ``ValueError``."""
        types = {f.name: f.type for f in dataclasses.fields(self)}
        for name, value in values.items():
            if name not in types:
                raise ValueError(f"unknown fake-cloud setting {name!r}; known: {', '.join(sorted(types))}")
            kind = types[name]
            if kind == "bool":
                parsed: Any = (
                    value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")
                )
            elif kind == "float":
                parsed = float(value)
                if not math.isfinite(parsed) or parsed < 0:
                    raise ValueError(f"fake-cloud setting {name} must be a finite number >= 0, got {value!r}")
            else:
                parsed = str(value)
            setattr(self, name, parsed)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------ calls and faults


class ApiCallLog:
    """Requests received, per ``service:Operation`` (IAM-action style), retries and faults included."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def record(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


_DEFAULT_STATUS = {
    "ThrottlingException": 400,
    "Throttling": 400,
    "ResourceLimitExceeded": 400,
    "AccessDeniedException": 400,
    "AccessDenied": 403,
    "SlowDown": 503,
    "ServiceUnavailable": 503,
    "InternalFailure": 500,
    "InternalServerError": 500,
    "InternalError": 500,
}


@dataclasses.dataclass
class Fault:
    """Answer the next ``count`` calls of ``service:operation`` with an error instead of serving them."""

    service: str
    operation: str
    error: str
    count: int = 1
    message: str | None = None
    status: int | None = None

    def http_status(self) -> int:
        return self.status or _DEFAULT_STATUS.get(self.error, 400)


class FaultPlan:
    """Pending faults; ``FAKE_CLOUD_FAULTS`` seeds it at start-up.

    ``FAKE_CLOUD_FAULTS="sagemaker:CreateTrainingJob=ThrottlingException*2;s3:GetObject=AccessDenied"``
    fails the next two ``CreateTrainingJob`` calls with throttling and the next ``GetObject`` with
    ``AccessDenied`` (``*N`` defaults to 1).
    """

    def __init__(self, spec: str = "") -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        for item in filter(None, (part.strip() for part in spec.split(";"))):
            match = re.fullmatch(r"([a-z0-9-]+):([A-Za-z0-9]+)=([A-Za-z0-9.]+)(?:\*(\d+))?", item)
            if not match:
                raise ValueError(f"FAKE_CLOUD_FAULTS: {item!r} is not service:Operation=ErrorCode[*count]")
            service, operation, error, count = match.groups()
            self.add(Fault(service, operation, error, int(count or 1)))

    def add(self, fault: Fault) -> None:
        if fault.count < 1:
            raise ValueError("fault count must be >= 1")
        if not fault.service or not fault.operation or not fault.error:
            raise ValueError("a fault needs service, operation and error")
        with self._lock:
            self._faults.append(fault)

    def take(self, service: str, operation: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.service == service and fault.operation == operation:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return dataclasses.replace(fault)
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dataclasses.asdict(f) for f in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


JOB_FAULT_PHASES = ("Starting", "Downloading", "Training")


@dataclasses.dataclass
class JobFault:
    """Make the next ``count`` training jobs (whose names start with ``name_prefix``) fail in ``phase``.

    ``failure_reason`` is SageMaker's text, e.g. ``"CapacityError: Unable to provision requested ML
    compute capacity. Please retry using a different ML instance type."`` (a transient failure) or
    ``"AlgorithmError: ..."`` (a deterministic one).
    """

    failure_reason: str
    phase: str = "Training"
    count: int = 1
    name_prefix: str = ""


class JobFaultPlan:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[JobFault] = []

    def add(self, fault: JobFault) -> None:
        if fault.phase not in JOB_FAULT_PHASES:
            raise ValueError(f"job fault phase must be one of {', '.join(JOB_FAULT_PHASES)}, got {fault.phase!r}")
        if fault.count < 1 or not fault.failure_reason:
            raise ValueError("a job fault needs failure_reason and count >= 1")
        with self._lock:
            self._faults.append(fault)

    def take(self, job_name: str) -> JobFault | None:
        with self._lock:
            for fault in self._faults:
                if job_name.startswith(fault.name_prefix):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return dataclasses.replace(fault, count=1)
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dataclasses.asdict(f) for f in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


# ----------------------------------------------------------------------------------- request parsing


@dataclasses.dataclass
class AwsRequest:
    """What the fake needs to know about one HTTP request to an AWS API."""

    service: str
    operation: str
    region: str
    access_key: str
    protocol: str  # json | query | rest-xml | cbor | unknown
    body: bytes
    internal: bool

    @property
    def key(self) -> str:
        return f"{self.service}:{self.operation}"


_S3_SUBRESOURCES = {
    "tagging": "Tagging",
    "policy": "Policy",
    "acl": "Acl",
    "versioning": "Versioning",
    "lifecycle": "LifecycleConfiguration",
    "cors": "Cors",
    "encryption": "Encryption",
    "location": "Location",
    "notification": "NotificationConfiguration",
    "website": "Website",
    "logging": "Logging",
    "publicAccessBlock": "PublicAccessBlock",
    "ownershipControls": "OwnershipControls",
    "object-lock": "ObjectLockConfiguration",
    "replication": "Replication",
}


def _s3_operation(method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "ListBuckets" if method == "GET" else f"{method.title()}Service"
    has_key = len(parts) > 1
    sub = next((v for k, v in _S3_SUBRESOURCES.items() if k in query), None)
    if has_key:
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return {
                "PUT": "UploadPart",
                "POST": "CompleteMultipartUpload",
                "DELETE": "AbortMultipartUpload",
                "GET": "ListParts",
            }.get(method, method)
        if sub:
            return {"GET": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(
                method, method
            ) + sub
        if method == "PUT" and "x-amz-copy-source" in headers:
            return "CopyObject"
        return {
            "GET": "GetObject",
            "PUT": "PutObject",
            "HEAD": "HeadObject",
            "DELETE": "DeleteObject",
            "POST": "PostObject",
        }.get(method, method)
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if sub:
        if sub == "Location":
            return "GetBucketLocation"
        return {"GET": "GetBucket", "PUT": "PutBucket", "DELETE": "DeleteBucket"}.get(method, method) + sub
    if method == "GET":
        if "uploads" in query:
            return "ListMultipartUploads"
        if "versions" in query:
            return "ListObjectVersions"
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(method, method)


def _read_body(environ: dict[str, Any]) -> bytes:
    """Read the request body once and put it back for moto."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def parse_aws_request(environ: dict[str, Any]) -> AwsRequest | None:
    """Name the service and operation of a signed AWS request (``None`` for anything else)."""
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    auth = environ.get("HTTP_AUTHORIZATION", "")
    match = _CREDENTIAL.search(auth)
    if match:
        access_key, region, service = match.groups()
    elif "X-Amz-Credential" in query:
        cred = query["X-Amz-Credential"][0].split("/")
        access_key, region, service = cred[0], cred[2], cred[3]
    else:
        return None
    method = environ.get("REQUEST_METHOD", "GET").upper()
    path = environ.get("PATH_INFO", "/")
    content_type = environ.get("CONTENT_TYPE", "")
    body = b""
    if target := headers.get("x-amz-target"):
        protocol, operation = "json", target.rsplit(".", 1)[-1]
        body = _read_body(environ)
    elif m := re.match(r"^/service/[^/]+/operation/([^/]+)$", path):
        protocol, operation = "cbor", m.group(1)
    elif service == "s3":
        protocol, operation = "rest-xml", _s3_operation(method, path, query, headers)
    elif "Action" in query:
        protocol, operation = "query", query["Action"][0]
    elif content_type.startswith("application/x-www-form-urlencoded"):
        body = _read_body(environ)
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        protocol, operation = "query", form.get("Action", ["Unknown"])[0]
    else:
        protocol, operation = "unknown", f"{method} {path}"
    internal = headers.get(INTERNAL_HEADER) == "1"
    return AwsRequest(service, operation, region, access_key, protocol, body, internal)


def error_response(
    req: AwsRequest, code: str, message: str, status: int = 400
) -> tuple[int, dict[str, str], bytes]:
    """An AWS error in the request's own protocol, so botocore raises ``ClientError`` with ``code``."""
    request_id = str(uuid.uuid4())
    if req.protocol == "json":
        if code == "AccessDenied":
            code = "AccessDeniedException"
        body = json.dumps({"__type": code, "message": message}).encode()
        return status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id}, body
    esc = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if req.protocol == "rest-xml":
        body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{esc}</Message><RequestId>{request_id}</RequestId></Error>'.encode()
    else:
        if code == "AccessDenied" and req.service != "s3":
            code = "AccessDeniedException"
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{esc}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
    return status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, body


def _default_fault_message(fault: Fault, req: AwsRequest, account: str) -> str:
    if fault.message:
        return fault.message
    if fault.error in ("ThrottlingException", "Throttling", "SlowDown"):
        return "Rate exceeded"
    if fault.error == "ResourceLimitExceeded":
        instance = "ml.m5.xlarge"
        if req.body:
            try:
                instance = json.loads(req.body).get("ResourceConfig", {}).get("InstanceType", instance)
            except ValueError:
                pass
        return (
            f"The account-level service limit '{instance} for training job usage' is 0 Instances, with current "
            "utilization of 0 Instances and a request delta of 1 Instances. Please use AWS Service Quotas to "
            "request an increase for this quota."
        )
    if fault.error.startswith("AccessDenied"):
        return (
            f"User: arn:aws:iam::{account}:user/{req.access_key} is not authorized to perform: "
            f"{req.service}:{req.operation} because no identity-based policy allows the "
            f"{req.service}:{req.operation} action"
        )
    return f"{fault.error} (injected by the fake cloud)"


def account_for(environ: dict[str, Any], access_key: str) -> str:
    """The account moto files this request under (same precedence as moto's ``BaseResponse``)."""
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if header := environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
        return header
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key)


# ----------------------------------------------------------------------------------- service model


_SERVICE_MODEL_CACHE: dict[str, Any] = {}


def training_instance_types() -> list[str]:
    """``TrainingInstanceType`` values of botocore's SageMaker service model (no hand-kept list)."""
    if "types" not in _SERVICE_MODEL_CACHE:
        import botocore.session

        model = botocore.session.get_session().get_service_model("sagemaker")
        _SERVICE_MODEL_CACHE["types"] = list(model.shape_for("TrainingInstanceType").enum)
    return _SERVICE_MODEL_CACHE["types"]


# -------------------------------------------------------------------------------------- training run


class JobInputError(Exception):
    """The job cannot run because of its inputs (reported as ``ClientError: ...``)."""


def _decode_hyperparameter(value: str) -> Any:
    """SageMaker's framework convention: hyperparameter values are JSON-encoded strings."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise JobInputError(f"{uri!r} is not an s3:// URI")
    return parsed.netloc, parsed.path.lstrip("/")


def _now():
    from moto.core.utils import utcnow

    return utcnow()


def _gpu_count() -> int:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def kill_process_tree(pid: int, grace_seconds: float) -> list[int]:
    """SIGTERM ``pid`` and every descendant, SIGKILL what is left after ``grace_seconds``.

    :return: the pids that were found (all gone when this returns).
    """
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    procs = [parent, *parent.children(recursive=True)]
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_seconds)
    # Children may have been started during the grace period.
    for proc in list(alive):
        try:
            alive.extend(c for c in proc.children(recursive=True) if c not in alive)
        except psutil.NoSuchProcess:
            pass
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in procs]


class TrainingRun:
    """One training job's execution: a thread that drives the job through SageMaker's states."""

    def __init__(self, cloud: FakeCloud, account: str, region: str, job: Any, request: dict[str, Any]):
        self.cloud = cloud
        self.account = account
        self.region = region
        self.job = job  # moto's FakeTrainingJob: describe/list read it, this run writes it
        self.name: str = request["TrainingJobName"]
        self.request = request
        self.stop_event = threading.Event()
        self.reclaim_event = threading.Event()
        self.stop_reason = "Stopped"
        self.process: subprocess.Popen | None = None
        self.script_pids: list[int] = []
        self.interruptions = 0
        self.root: Path | None = None
        self.log_stream: str | None = None
        self.training_began: float | None = None
        self.started_wall: float | None = None
        self.injected_failure: JobFault | None = None
        self.thread = threading.Thread(target=self._run, name=f"fake-sagemaker-{self.name}", daemon=True)
        self._record_lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._log_lines: list[str] = []
        self._metric_values: dict[str, float] = {}

    # -- job record ---------------------------------------------------------------------------

    def init_record(self) -> None:
        """Turn moto's instantly-``Completed`` record into a fresh ``InProgress`` one."""
        now = _now()
        job = self.job
        spec = dict(self.request.get("AlgorithmSpecification") or {})
        job.algorithm_specification = spec  # moto injects a made-up metric definition
        job.training_job_status = "InProgress"
        job.secondary_status = "Starting"
        job.failure_reason = None
        job.training_start_time = None
        job.training_end_time = None
        job.training_time_in_seconds = None
        job.billable_time_in_seconds = None
        job.model_artifacts = None
        job.final_metric_data_list = None
        job.environment = self.request.get("Environment")
        job.retry_strategy = self.request.get("RetryStrategy")
        job.creation_time = job.last_modified_time = now
        job.secondary_status_transitions = [
            {"Status": "Starting", "StartTime": now, "StatusMessage": "Launching requested ML instances"}
        ]

    def _transition(self, status: str, message: str, *, job_status: str | None = None) -> None:
        with self._record_lock:  # the runner and a StopTrainingJob request both write the record
            now = _now()
            transitions = [dict(t) for t in self.job.secondary_status_transitions]
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = now
            transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})
            self.job.secondary_status_transitions = transitions  # replaced whole: readers never see half a list
            self.job.secondary_status = status
            if job_status:
                self.job.training_job_status = job_status
            self.job.last_modified_time = now

    def _close_transitions(self) -> None:
        with self._record_lock:
            transitions = [dict(t) for t in self.job.secondary_status_transitions]
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = _now()
            self.job.secondary_status_transitions = transitions

    def request_stop(self, reason: str = "Stopped") -> bool:
        """Ask the run to stop; ``False`` when the job is no longer ``InProgress``."""
        with self._record_lock:
            if self.job.training_job_status != "InProgress":
                return False
            self.stop_reason = reason
            self._transition("Stopping", "Stopping the training job", job_status="Stopping")
            self.stop_event.set()
            return True

    def request_reclaim(self) -> None:
        self.reclaim_event.set()

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "account": self.account,
            "region": self.region,
            "status": self.job.training_job_status,
            "secondary_status": self.job.secondary_status,
            "pid": self.process.pid if self.process else None,
            "script_pids": list(self.script_pids),
            "running": self.thread.is_alive(),
            "interruptions": self.interruptions,
            "root": str(self.root) if self.root else None,
            "log_stream": self.log_stream,
        }

    # -- AWS clients (internal: not counted, never faulted) --------------------------------------

    def client(self, service: str):
        return self.cloud.internal_client(service, self.region, self.account)

    # -- the run -------------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> bool:
        """Wait; ``True`` when a stop or a reclaim cut the wait short."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop_event.is_set() or self.reclaim_event.is_set():
                return True
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return self.stop_event.is_set() or self.reclaim_event.is_set()

    def _run(self) -> None:
        try:
            try:
                outcome, reason = self._attempts()
            except Exception as exc:  # noqa: BLE001 - a bug in the fake must not leave the job InProgress
                traceback.print_exc()
                outcome, reason = "Failed", f"InternalServerError: fake cloud error: {exc}"
            # Nothing of the job runs any more once its status is terminal.
            self._kill()
            try:
                self._flush_logs()
            except Exception:  # noqa: BLE001 - losing log lines must not leave the job InProgress
                traceback.print_exc()
            self._finish(outcome, reason, self.started_wall)
        finally:
            self._kill()
            if self.root and not self.cloud.config.keep_job_dirs:
                shutil.rmtree(self.root, ignore_errors=True)

    def _attempts(self) -> tuple[str, str | None]:
        """Run attempts until one is not interrupted (spot instances come back after a reclaim)."""
        while True:
            self.reclaim_event.clear()
            outcome, reason, began = self._attempt()
            self.started_wall = self.started_wall or began
            if outcome != "Interrupted":
                return outcome, reason
            self.interruptions += 1
            if not self.job.enable_managed_spot_training:
                # On-demand capacity is not given back: losing the instance fails the job.
                return "Failed", "InternalServerError: the training instance was lost (reclaimed)"
            max_wait = (self.request.get("StoppingCondition") or {}).get("MaxWaitTimeInSeconds")
            if max_wait and self.started_wall and time.time() - self.started_wall > max_wait:
                self._transition("MaxWaitTimeExceeded", "Training job exceeded its MaxWaitTimeInSeconds")
                return "Stopped", None
            self._transition("Starting", "Launching requested ML instances after the interruption")

    def _attempt(self) -> tuple[str, str | None, float | None]:
        """One instance's life: provision, download, train, upload. Returns (outcome, reason, start)."""
        config = self.cloud.config
        if self._sleep(config.starting_seconds):
            return self._interrupted_or_stopped(None)
        if problem := self._output_bucket_problem():
            return "Failed", problem, None
        if self._injected("Starting"):
            return "Failed", self.injected_failure.failure_reason, None
        began = time.time()
        if self.job.training_start_time is None:
            self.job.training_start_time = _now()
        self._transition("Downloading", "Downloading input data")
        if self._injected("Downloading"):
            return "Failed", self.injected_failure.failure_reason, began
        root = self._prepare_root()
        try:
            program, code_dir = self._download_source(root)
            self._download_channels(root)
            self._download_checkpoints(root)
        except JobInputError as exc:
            return "Failed", f"ClientError: {exc}", began
        if self.stop_event.is_set() or self.reclaim_event.is_set():
            return self._interrupted_or_stopped(began)
        self._transition("Training", "Training image download completed. Training in progress.")
        self.training_began = time.monotonic()
        if self._injected("Training"):
            return "Failed", self.injected_failure.failure_reason, began
        code, timed_out = self._train(root, program, code_dir)
        interrupted = self.reclaim_event.is_set() and not self.stop_event.is_set()
        if interrupted:
            self._upload_checkpoints(root)
            self._transition("Interrupted", "The spot instance was reclaimed; waiting for capacity")
            return "Interrupted", None, began
        self._transition("Uploading", "Uploading generated training model")
        self._upload_outputs(root)
        if timed_out:
            self.stop_reason = "MaxRuntimeExceeded"
            return "Stopped", None, began
        if self.stop_event.is_set():
            return "Stopped", None, began
        if code == 0:
            return "Completed", None, began
        return "Failed", f"AlgorithmError: {self._failure_text(root, code)}", began

    def _injected(self, phase: str) -> bool:
        return self.injected_failure is not None and self.injected_failure.phase == phase

    def _interrupted_or_stopped(self, began: float | None) -> tuple[str, str | None, float | None]:
        if self.stop_event.is_set():
            return "Stopped", None, began
        self._transition("Interrupted", "The spot instance was reclaimed; waiting for capacity")
        return "Interrupted", None, began

    def _finish(self, outcome: str, reason: str | None, began: float | None) -> None:
        with self._record_lock:
            self._finish_record(outcome, reason, began)

    def _finish_record(self, outcome: str, reason: str | None, began: float | None) -> None:
        job = self.job
        now = _now()
        if began is not None:
            job.training_end_time = now
            seconds = max(1, math.ceil(time.time() - began))
            job.training_time_in_seconds = seconds
            if job.enable_managed_spot_training:
                job.billable_time_in_seconds = max(
                    1, math.ceil(seconds * self.cloud.config.spot_billable_fraction)
                )
            else:
                job.billable_time_in_seconds = seconds
        if self._metric_values:
            job.final_metric_data_list = [
                {"MetricName": k, "Value": v, "Timestamp": now}
                for k, v in sorted(self._metric_values.items())
            ]
        job.failure_reason = reason
        if outcome == "Completed":
            self._transition("Completed", "Training job completed", job_status="Completed")
        elif outcome == "Stopped":
            if job.secondary_status != "MaxWaitTimeExceeded":
                if self.stop_reason == "MaxRuntimeExceeded":
                    self._transition(
                        "MaxRuntimeExceeded",
                        "Training job exceeded its MaxRuntimeInSeconds",
                        job_status="Stopped",
                    )
                else:
                    self._transition("Stopped", "Training job stopped", job_status="Stopped")
            job.training_job_status = "Stopped"
        else:
            self._transition("Failed", f"Training job failed. {reason or ''}".strip(), job_status="Failed")
        self._close_transitions()

    # -- inputs --------------------------------------------------------------------------------

    def _prepare_root(self) -> Path:
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
        jobs = self.cloud.state_dir / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=jobs))
        for sub in (
            "input/data",
            "input/config",
            "model",
            "output/data",
            "code",
            "checkpoints",
            "tmp",
            "home",
        ):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.root = root
        return root

    def _output_bucket_problem(self) -> str | None:
        """Checked before any instance time is billed, like SageMaker's own pre-flight checks."""
        uri = (self.request.get("OutputDataConfig") or {}).get("S3OutputPath", "")
        try:
            bucket, _ = _split_s3_uri(uri)
            self.client("s3").head_bucket(Bucket=bucket)
        except JobInputError as exc:
            return f"ClientError: OutputDataConfig.S3OutputPath {exc}"
        except Exception:  # noqa: BLE001 - botocore ClientError
            return f"ClientError: the output bucket of OutputDataConfig.S3OutputPath {uri} does not exist or is not accessible"
        return None

    def _download_prefix(self, uri: str, target: Path) -> int:
        bucket, prefix = _split_s3_uri(uri)
        s3 = self.client("s3")
        count = 0
        try:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):
                        continue
                    relative = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
                    dest = (target / relative).resolve()
                    if not dest.is_relative_to(target.resolve()):
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, key, str(dest))
                    count += 1
        except JobInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - NoSuchBucket and friends
            raise JobInputError(f"Data download failed: cannot read {uri}: {exc}") from None
        return count

    def _download_source(self, root: Path) -> tuple[str, Path]:
        hps = self.request.get("HyperParameters") or {}
        program = _decode_hyperparameter(hps.get("sagemaker_program", ""))
        submit = _decode_hyperparameter(hps.get("sagemaker_submit_directory", ""))
        if not program or not isinstance(program, str):
            raise JobInputError(
                "the fake cloud runs framework-mode jobs only: hyperparameter sagemaker_program "
                "(the entry point, JSON-encoded) is missing"
            )
        code_dir = root / "code"
        if submit:
            if not isinstance(submit, str):
                raise JobInputError(f"hyperparameter sagemaker_submit_directory={submit!r} is not an S3 URI")
            bucket, key = _split_s3_uri(submit)
            archive = root / "tmp" / "sourcedir.tar.gz"
            try:
                self.client("s3").download_file(bucket, key, str(archive))
            except Exception as exc:  # noqa: BLE001
                raise JobInputError(f"cannot download sagemaker_submit_directory {submit}: {exc}") from None
            try:
                with tarfile.open(archive) as tar:
                    tar.extractall(code_dir, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise JobInputError(
                    f"sagemaker_submit_directory {submit} is not a readable tar.gz: {exc}"
                ) from None
        if not (code_dir / program).is_file():
            raise JobInputError(
                f"sagemaker_program {program!r} is not in the source directory {submit or '(none given)'}"
            )
        return program, code_dir

    def _download_channels(self, root: Path) -> None:
        channels = []
        for channel in self.request.get("InputDataConfig") or []:
            name = channel["ChannelName"]
            source = (channel.get("DataSource") or {}).get("S3DataSource")
            if not source:
                raise JobInputError(
                    f"channel {name!r}: only S3DataSource channels are supported by the fake cloud"
                )
            if source.get("S3DataType", "S3Prefix") != "S3Prefix":
                raise JobInputError(
                    f"channel {name!r}: S3DataType {source.get('S3DataType')} is not supported by the fake cloud"
                )
            mode = channel.get("InputMode") or (self.request.get("AlgorithmSpecification") or {}).get(
                "TrainingInputMode", "File"
            )
            if mode == "Pipe":
                raise JobInputError(f"channel {name!r}: InputMode Pipe is not supported by the fake cloud")
            target = root / "input" / "data" / name
            target.mkdir(parents=True, exist_ok=True)
            uri = source["S3Uri"]
            if self._download_prefix(uri, target) == 0:
                bucket, _ = _split_s3_uri(uri)
                raise JobInputError(
                    f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that the '
                    f"bucket exists in the selected region ({self.region}), that objects exist under that S3 "
                    f"prefix, and that the role {self.request.get('RoleArn')} has s3:ListBucket permissions on "
                    f'bucket "{bucket}".'
                )
            channels.append(name)
        self.channels = channels

    def _download_checkpoints(self, root: Path) -> None:
        checkpoint = self.request.get("CheckpointConfig") or {}
        if checkpoint.get("S3Uri"):
            try:
                self._download_prefix(checkpoint["S3Uri"], root / "checkpoints")
            except JobInputError:
                pass  # no checkpoint yet is the normal first start

    # -- training ------------------------------------------------------------------------------

    def _environment(self, root: Path, program: str, code_dir: Path) -> tuple[dict[str, str], list[str]]:
        raw_hps = self.request.get("HyperParameters") or {}
        user_hps = {
            k: _decode_hyperparameter(v) for k, v in raw_hps.items() if not k.startswith("sagemaker_")
        }
        resource = self.request.get("ResourceConfig") or {}
        env = {k: os.environ[k] for k in ALLOWED_HOST_ENV if k in os.environ}
        channels = getattr(self, "channels", [])
        input_config = {
            c["ChannelName"]: {
                "TrainingInputMode": c.get("InputMode") or "File",
                "S3DistributionType": (c.get("DataSource", {}).get("S3DataSource", {})).get(
                    "S3DistributionType", "FullyReplicated"
                ),
                "RecordWrapperType": c.get("RecordWrapperType", "None"),
            }
            for c in self.request.get("InputDataConfig") or []
        }
        resource_config = {"current_host": HOST_NAME, "hosts": [HOST_NAME], "network_interface_name": "eth0"}
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(raw_hps))
        (root / "input" / "config" / "inputdataconfig.json").write_text(json.dumps(input_config))
        (root / "input" / "config" / "resourceconfig.json").write_text(json.dumps(resource_config))
        checkpoint_local = (self.request.get("CheckpointConfig") or {}).get("LocalPath")
        env.update(
            {
                "HOME": str(root / "home"),
                "TMPDIR": str(root / "tmp"),
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "TRAINING_JOB_NAME": self.name,
                "TRAINING_JOB_ARN": self.job.arn,
                "SM_TRAINING_JOB_NAME": self.name,
                "SM_MODEL_DIR": str(root / "model"),
                "SM_OUTPUT_DIR": str(root / "output"),
                "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
                "SM_OUTPUT_FAILURE": str(root / "output" / "failure"),
                "SM_INPUT_DIR": str(root / "input"),
                "SM_INPUT_CONFIG_DIR": str(root / "input" / "config"),
                "SM_INPUT_DATA_CONFIG": json.dumps(input_config),
                "SM_RESOURCE_CONFIG": json.dumps(resource_config),
                "SM_CHANNELS": json.dumps(channels),
                "SM_HPS": json.dumps(user_hps),
                "SM_HOSTS": json.dumps([HOST_NAME]),
                "SM_CURRENT_HOST": HOST_NAME,
                "SM_CURRENT_INSTANCE_TYPE": resource.get("InstanceType", ""),
                "SM_NUM_GPUS": str(_gpu_count()),
                "SM_NUM_CPUS": str(os.cpu_count() or 1),
                "SM_LOG_LEVEL": "20",
                "SM_USER_ENTRY_POINT": program,
                "SM_MODULE_NAME": program.rsplit(".", 1)[0],
                "SM_MODULE_DIR": _decode_hyperparameter(raw_hps.get("sagemaker_submit_directory", '""'))
                or "",
                "SM_CHECKPOINT_DIR": str(root / "checkpoints"),
            }
        )
        for name in channels:
            env[f"SM_CHANNEL_{name.upper()}"] = str(root / "input" / "data" / name)
        for key, value in user_hps.items():
            env[f"SM_HP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        if checkpoint_local:
            env["SM_CHECKPOINT_LOCAL_PATH"] = str(root / "checkpoints")
        env.update({str(k): str(v) for k, v in (self.request.get("Environment") or {}).items()})
        args = []
        for key, value in user_hps.items():
            args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
        return env, args

    def _train(self, root: Path, program: str, code_dir: Path) -> tuple[int | None, bool]:
        env, args = self._environment(root, program, code_dir)
        logs = self.client("logs")
        try:
            logs.create_log_group(logGroupName=LOG_GROUP)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        if self.log_stream is None:  # an instance restarted after a spot interruption keeps writing here
            self.log_stream = f"{self.name}/{HOST_NAME}-{int(time.time())}"
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=self.log_stream)
        command = [self.cloud.config.python, str(code_dir / program), *args]
        shown = " ".join([Path(command[0]).name, program, *args])
        self._log_line(f"Invoking script with the following command: {shown}")
        self.process = subprocess.Popen(
            command,
            cwd=code_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.script_pids.append(self.process.pid)
        reader = threading.Thread(target=self._read_output, args=(self.process.stdout,), daemon=True)
        reader.start()
        max_runtime = (self.request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds") or 86400
        deadline = time.monotonic() + float(max_runtime)
        timed_out = False
        last_flush = time.monotonic()
        min_until = time.monotonic() + self.cloud.config.min_training_seconds
        while True:
            code = self.process.poll()
            now = time.monotonic()
            if code is not None and now >= min_until:
                break
            if self.stop_event.is_set() or self.reclaim_event.is_set():
                break
            if now > deadline:
                timed_out = True
                self._log_line(f"MaxRuntimeExceeded: the job ran over {max_runtime} s; stopping it")
                break
            if now - last_flush > 0.5:
                self._flush_logs()
                last_flush = now
            time.sleep(0.05)
        if self.process.poll() is None:
            grace = (
                0.0
                if self.reclaim_event.is_set() and not self.stop_event.is_set()
                else self.cloud.config.stop_grace_seconds
            )
            kill_process_tree(self.process.pid, grace)
        self.process.wait()
        self._kill_leftovers()
        reader.join(timeout=5)
        self._flush_logs()
        return self.process.returncode, timed_out

    def _read_output(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            self._log_line(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def _log_line(self, line: str) -> None:
        for definition in (self.request.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []:
            try:
                match = re.search(definition["Regex"], line)
            except re.error:
                continue
            if match and match.groups():
                try:
                    self._metric_values[definition["Name"]] = float(match.group(1))
                except ValueError:
                    pass
        with self._log_lock:
            self._log_lines.append(line)

    def _flush_logs(self) -> None:
        with self._log_lock:
            lines, self._log_lines = self._log_lines, []
        if not lines or not self.log_stream:
            return
        stamp = int(time.time() * 1000)
        events = [{"timestamp": stamp, "message": line or " "} for line in lines]
        logs = self.client("logs")
        for start in range(0, len(events), 1000):
            logs.put_log_events(
                logGroupName=LOG_GROUP, logStreamName=self.log_stream, logEvents=events[start : start + 1000]
            )

    def _failure_text(self, root: Path, code: int | None) -> str:
        failure = root / "output" / "failure"
        if failure.is_file() and failure.read_text(errors="replace").strip():
            text = failure.read_text(errors="replace").strip()
        else:
            text = f'ExecuteUserScriptError: Command "{self.cloud.config.python} {self.request["HyperParameters"].get("sagemaker_program", "")}" exited with code {code}'
        return text[:1000]

    # -- outputs -------------------------------------------------------------------------------

    def _output_prefix(self) -> tuple[str, str]:
        bucket, prefix = _split_s3_uri((self.request.get("OutputDataConfig") or {})["S3OutputPath"])
        prefix = "/".join(p for p in (prefix.strip("/"), self.name, "output") if p)
        return bucket, prefix

    def _upload_outputs(self, root: Path) -> None:
        bucket, prefix = self._output_prefix()
        s3 = self.client("s3")
        for name, folder in (("model.tar.gz", root / "model"), ("output.tar.gz", root / "output" / "data")):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                for path in sorted(folder.rglob("*")):
                    tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=buffer.getvalue())
        self.job.model_artifacts = {"S3ModelArtifacts": f"s3://{bucket}/{prefix}/model.tar.gz"}
        self._upload_checkpoints(root)

    def _upload_checkpoints(self, root: Path) -> None:
        uri = (self.request.get("CheckpointConfig") or {}).get("S3Uri")
        if not uri:
            return
        bucket, prefix = _split_s3_uri(uri)
        s3 = self.client("s3")
        for path in sorted((root / "checkpoints").rglob("*")):
            if path.is_file():
                s3.upload_file(
                    str(path),
                    bucket,
                    "/".join(
                        p for p in (prefix.strip("/"), str(path.relative_to(root / "checkpoints"))) if p
                    ),
                )

    def _kill(self) -> None:
        if self.process and self.process.poll() is None:
            kill_process_tree(self.process.pid, 0.5)
            self.process.wait()
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """Kill what the script left behind (daemons, orphans re-parented to init): the instance is gone.

        They are found by the script's process group and the job name in their environment, so a
        recycled group id never takes an unrelated process down.
        """
        import psutil

        if not self.process:
            return
        pgid = self.process.pid
        leftovers = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == pgid and proc.environ().get("TRAINING_JOB_NAME") == self.name:
                    leftovers.append(proc)
            except (psutil.Error, OSError):
                continue
        for proc in leftovers:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(leftovers, timeout=5)


# --------------------------------------------------------------------------------------------- server


def _constraint_problems(shape_name: str, field: str, value: Any) -> list[str]:
    """Check ``value`` against the length and pattern botocore's SageMaker model gives ``shape_name``."""
    import botocore.session

    model = _SERVICE_MODEL_CACHE.get("model")
    if model is None:
        model = _SERVICE_MODEL_CACHE["model"] = botocore.session.get_session().get_service_model("sagemaker")
    meta = model.shape_for(shape_name).metadata
    text = value if isinstance(value, str) else ""
    prefix = f"Value '{value}' at '{field}' failed to satisfy constraint: Member must"
    problems = []
    if "max" in meta and len(text) > meta["max"]:
        problems.append(f"{prefix} have length less than or equal to {meta['max']}")
    if "min" in meta and len(text) < meta["min"]:
        problems.append(f"{prefix} have length greater than or equal to {meta['min']}")
    if "pattern" in meta and not re.fullmatch(meta["pattern"], text):
        problems.append(f"{prefix} satisfy regular expression pattern: {meta['pattern']}")
    return problems


class FakeCloud:
    """The fake cloud server: moto's WSGI app behind a layer that runs training jobs and test controls.

    :param host: interface to bind (loopback by default; the fake has no authentication).
    :param port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
    :param state_dir: where job container roots live (default: a temporary directory).
    :param config: run-time knobs (default: from ``FAKE_CLOUD_*`` environment variables).
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        state_dir: str | os.PathLike | None = None,
        config: FakeCloudConfig | None = None,
    ):
        self.host = host
        self.port = port
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="fake-cloud-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config = config or FakeCloudConfig.from_env()
        self._initial_config = dataclasses.replace(self.config)
        self.calls = ApiCallLog()
        self.faults = FaultPlan(os.environ.get("FAKE_CLOUD_FAULTS", ""))
        self.job_faults = JobFaultPlan()
        self.runs: dict[tuple[str, str, str], TrainingRun] = {}
        self._runs_lock = threading.RLock()
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._clients_lock = threading.Lock()
        self._server = None
        self._thread: threading.Thread | None = None
        self._moto_app = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeCloud:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class _QuietHandler(MotoRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                if os.environ.get("FAKE_CLOUD_LOG_REQUESTS"):
                    super().log_request(code, size)

        self._moto_app = DomainDispatcherApplication(create_backend_app)
        try:
            self._server = make_server(self.host, self.port, self.wsgi, threaded=True, request_handler=_QuietHandler)
        except SystemExit:  # werkzeug prints "Address already in use" and exits; a library must not
            raise OSError(errno.EADDRINUSE, f"port {self.port} on {self.host} is in use") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-cloud", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop every running job (no process is left behind), then the server."""
        self.stop_all_runs()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def stop_all_runs(self) -> None:
        with self._runs_lock:
            runs = list(self.runs.values())
        grace = self.config.stop_grace_seconds
        self.config.stop_grace_seconds = min(grace, 1.0)
        try:
            for run in runs:
                if run.thread.is_alive():
                    run.request_stop()
            for run in runs:
                run.thread.join(timeout=30)
        finally:
            self.config.stop_grace_seconds = grace

    def reset(self) -> None:
        """Forget everything: jobs (stopped first), buckets, roles, logs, call counts, faults, knobs."""
        from moto.moto_api._internal.models import moto_api_backend

        self.stop_all_runs()
        with self._runs_lock:
            self.runs.clear()
        self.calls.reset()
        self.faults.clear()
        self.job_faults.clear()
        self.config = dataclasses.replace(self._initial_config)
        moto_api_backend.reset()

    def internal_client(self, service: str, region: str, account: str):
        """A boto3 client for the fake's own use: its calls are not counted and never faulted."""
        key = (service, region, account)
        with self._clients_lock:
            if key not in self._clients:
                import boto3
                from botocore.config import Config

                client = boto3.session.Session().client(
                    service,
                    region_name=region,
                    endpoint_url=self.url,
                    aws_access_key_id=DEFAULT_ACCESS_KEY,
                    aws_secret_access_key=DEFAULT_ACCESS_KEY,
                    config=Config(retries={"max_attempts": 3, "mode": "standard"}),
                )

                def _mark(request, **_kwargs):
                    request.headers[INTERNAL_HEADER] = "1"
                    request.headers["x-moto-account-id"] = account

                client.meta.events.register("before-sign.*.*", _mark)
                self._clients[key] = client
            return self._clients[key]

    # -- WSGI ----------------------------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response):
        path = environ.get("PATH_INFO", "")
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            return self._control(environ, start_response)
        req = parse_aws_request(environ)
        if req is None:
            return self._moto_app(environ, start_response)
        account = account_for(environ, req.access_key)
        if not req.internal:
            self.calls.record(req.key)
            fault = self.faults.take(req.service, req.operation)
            if fault is not None:
                message = _default_fault_message(fault, req, account)
                return _respond(
                    start_response, *error_response(req, fault.error, message, fault.http_status())
                )
        if req.service == "sagemaker" and req.protocol == "json":
            if req.operation == "CreateTrainingJob":
                return self._create_training_job(environ, start_response, req, account)
            if req.operation == "StopTrainingJob":
                return self._stop_training_job(start_response, req, account)
        return self._moto_app(environ, start_response)

    def _call_moto(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        captured: dict[str, Any] = {}

        def _capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        body = b"".join(self._moto_app(environ, _capture))
        return captured["status"], captured["headers"], body

    def _create_training_job(self, environ, start_response, req: AwsRequest, account: str):
        try:
            request = json.loads(req.body or b"{}")
        except ValueError:
            return _respond(
                start_response, *error_response(req, "SerializationException", "request body is not JSON")
            )
        name = request.get("TrainingJobName", "")
        problems = _constraint_problems("TrainingJobName", "trainingJobName", name)
        problems += _constraint_problems("RoleArn", "roleArn", request.get("RoleArn", ""))
        instance_type = (request.get("ResourceConfig") or {}).get("InstanceType")
        if instance_type not in training_instance_types():
            problems.append(
                f"Value '{instance_type}' at 'resourceConfig.instanceType' failed to satisfy constraint: Member must "
                f"satisfy enum value set: [{', '.join(training_instance_types())}]"
            )
        if problems:
            message = (
                f"{len(problems)} validation error{'s' if len(problems) > 1 else ''} detected: "
                + "; ".join(problems)
            )
            return _respond(start_response, *error_response(req, "ValidationException", message))
        if self.config.validate_role and not self._role_exists(account, request["RoleArn"]):
            message = (
                f"Could not assume role {request['RoleArn']}. Please ensure that the role exists and allows "
                "principal 'sagemaker.amazonaws.com' to assume the role."
            )
            return _respond(start_response, *error_response(req, "ValidationException", message))
        from moto.sagemaker.models import sagemaker_backends

        with self._runs_lock:
            backend = sagemaker_backends[account][req.region]
            if name in backend.training_jobs:
                arn = backend.training_jobs[name].arn
                message = (
                    "Training job names must be unique within an AWS account and region, and a training job "
                    f"with this name already exists ({arn})"
                )
                return _respond(start_response, *error_response(req, "ValidationException", message))
            status, headers, body = self._call_moto(environ)
            if not status.startswith("200"):
                start_response(status, headers)
                return [body]
            run = TrainingRun(self, account, req.region, backend.training_jobs[name], request)
            run.injected_failure = self.job_faults.take(name)
            run.init_record()
            self.runs[(account, req.region, name)] = run
            run.thread.start()
        start_response(status, headers)
        return [body]

    def _role_exists(self, account: str, role_arn: str) -> bool:
        match = _ROLE_ARN.match(role_arn)
        if not match or match.group(1) != account:
            return False
        from moto.iam.models import iam_backends

        iam = iam_backends[account]["global"]
        role_name = match.group(2).rsplit("/", 1)[-1]
        return any(role.name == role_name for role in iam.roles.values())

    def _stop_training_job(self, start_response, req: AwsRequest, account: str):
        try:
            name = json.loads(req.body or b"{}").get("TrainingJobName", "")
        except ValueError:
            return _respond(
                start_response, *error_response(req, "SerializationException", "request body is not JSON")
            )
        with self._runs_lock:
            run = self.runs.get((account, req.region, name))
        if run is None:
            return _respond(
                start_response, *error_response(req, "ValidationException", "Requested resource not found.")
            )
        if not run.request_stop():
            status = run.job.training_job_status
            message = f"The request was rejected because the training job is in status {status}."
            return _respond(start_response, *error_response(req, "ValidationException", message))
        return _respond(start_response, 200, {"Content-Type": "application/x-amz-json-1.1"}, b"{}")

    # -- control API ---------------------------------------------------------------------------

    def find_run(self, name: str, region: str | None = None) -> TrainingRun | None:
        with self._runs_lock:
            matches = [
                r for (a, reg, n), r in self.runs.items() if n == name and (region is None or reg == region)
            ]
        return matches[-1] if matches else None

    def _control(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "")[len(CONTROL_PREFIX) :].strip("/")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        region = query.get("region", [None])[0]
        try:
            payload = json.loads(_read_body(environ) or b"{}") if method in ("POST", "PUT") else {}
            if not isinstance(payload, dict):
                raise ValueError("the request body must be a JSON object")
            status, result = self._control_route(method, path, payload, region)
        except (ValueError, TypeError, KeyError) as exc:
            status, result = 400, {"error": str(exc)}
        body = json.dumps(result, default=str, indent=1).encode()
        return _respond(start_response, status, {"Content-Type": "application/json"}, body)

    def _control_route(
        self, method: str, path: str, payload: dict[str, Any], region: str | None
    ) -> tuple[int, Any]:
        parts = path.split("/") if path else []
        if parts in ([], ["health"]) and method == "GET":
            return 200, {
                "status": "ok",
                "url": self.url,
                "state_dir": str(self.state_dir),
                "endpoints": CONTROL_ENDPOINTS,
            }
        if parts == ["calls"]:
            if method == "GET":
                calls = self.calls.snapshot()
                return 200, {"calls": calls, "total": sum(calls.values())}
            if method == "DELETE":
                calls = self.calls.snapshot()
                self.calls.reset()
                return 200, {"calls": calls, "total": sum(calls.values())}
        if parts == ["faults"]:
            if method == "GET":
                return 200, {"faults": self.faults.pending()}
            if method == "POST":
                fault = Fault(
                    service=str(payload.get("service", "sagemaker")),
                    operation=str(payload["operation"]),
                    error=str(payload["error"]),
                    count=int(payload.get("count", 1)),
                    message=payload.get("message"),
                    status=int(payload["status"]) if payload.get("status") is not None else None,
                )
                if fault.service in ("monitoring", "cloudwatch"):
                    raise ValueError(
                        "faults cannot be injected into CloudWatch (its rpc-v2-cbor protocol is not emulated)"
                    )
                self.faults.add(fault)
                return 200, {"faults": self.faults.pending()}
            if method == "DELETE":
                self.faults.clear()
                return 200, {"faults": []}
        if parts == ["job-faults"]:
            if method == "GET":
                return 200, {"job_faults": self.job_faults.pending()}
            if method == "POST":
                self.job_faults.add(
                    JobFault(
                        failure_reason=str(payload["failure_reason"]),
                        phase=str(payload.get("phase", "Training")),
                        count=int(payload.get("count", 1)),
                        name_prefix=str(payload.get("name_prefix", "")),
                    )
                )
                return 200, {"job_faults": self.job_faults.pending()}
            if method == "DELETE":
                self.job_faults.clear()
                return 200, {"job_faults": []}
        if parts == ["config"]:
            if method == "POST":
                self.config.update(payload)
            if method in ("GET", "POST"):
                return 200, self.config.as_dict()
        if parts == ["reset"] and method == "POST":
            self.reset()
            return 200, {"reset": True}
        if parts == ["training-jobs"] and method == "GET":
            with self._runs_lock:
                runs = list(self.runs.values())
            return 200, {"training_jobs": [r.info() for r in runs if region is None or r.region == region]}
        if len(parts) >= 2 and parts[0] == "training-jobs":
            run = self.find_run(parts[1], region)
            if run is None:
                return 404, {"error": f"no training job {parts[1]!r} was created on this fake cloud"}
            if len(parts) == 2 and method == "GET":
                return 200, run.info()
            if parts[2:] == ["reclaim"] and method == "POST":
                if run.job.training_job_status != "InProgress":
                    return 409, {
                        "error": f"training job {run.name} is {run.job.training_job_status}, not InProgress"
                    }
                run.request_reclaim()
                return 200, run.info()
        return 404, {
            "error": f"no control endpoint {method} {CONTROL_PREFIX}/{path}",
            "endpoints": CONTROL_ENDPOINTS,
        }


CONTROL_ENDPOINTS = [
    "GET    /fake-cloud/health",
    "GET    /fake-cloud/calls                      API calls per service:Operation since the last reset",
    "DELETE /fake-cloud/calls                      return and reset the counts",
    "GET    /fake-cloud/faults                     pending injected faults",
    "POST   /fake-cloud/faults  {operation, error, count=1, service=sagemaker, message?, status?}",
    "DELETE /fake-cloud/faults",
    "POST   /fake-cloud/job-faults {failure_reason, phase=Training, count=1, name_prefix=''}  next jobs fail",
    "GET    /fake-cloud/job-faults ; DELETE /fake-cloud/job-faults",
    "GET    /fake-cloud/config",
    "POST   /fake-cloud/config  {min_training_seconds, starting_seconds, stop_grace_seconds, spot_billable_fraction, validate_role, python, keep_job_dirs}",
    "GET    /fake-cloud/training-jobs[?region=R]   runs with their script pids",
    "GET    /fake-cloud/training-jobs/NAME",
    "POST   /fake-cloud/training-jobs/NAME/reclaim reclaim the job's (spot) instance",
    "POST   /fake-cloud/reset                      stop every job and forget all state",
]


def _respond(start_response, status: int, headers: dict[str, str], body: bytes):
    reasons = {
        200: "OK",
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        409: "Conflict",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }
    start_response(
        f"{status} {reasons.get(status, 'Error')}", [*headers.items(), ("Content-Length", str(len(body)))]
    )
    return [body]


# --------------------------------------------------------------------------------------------- client


class FakeCloudClient:
    """Talk to a running fake cloud: AWS clients pointed at it and its ``/fake-cloud/`` controls.

    :param url: the endpoint, e.g. ``http://127.0.0.1:5599``.
    :param region: region of the clients and of the Airflow connection.
    """

    def __init__(self, url: str, region: str = DEFAULT_REGION):
        self.url = url.rstrip("/")
        self.region = region

    def _control(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"{self.url}{CONTROL_PREFIX}/{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"fake cloud {method} {CONTROL_PREFIX}/{path}: {exc.code} {exc.read().decode(errors='replace')}"
            ) from None

    def health(self) -> dict[str, Any]:
        return self._control("GET", "health")

    def calls(self) -> dict[str, int]:
        """API calls received per ``service:Operation`` (e.g. ``sagemaker:CreateTrainingJob``)."""
        return self._control("GET", "calls")["calls"]

    def reset_calls(self) -> dict[str, int]:
        return self._control("DELETE", "calls")["calls"]

    def inject_fault(
        self,
        operation: str,
        error: str,
        count: int = 1,
        service: str = "sagemaker",
        message: str | None = None,
        status: int | None = None,
    ) -> list[dict[str, Any]]:
        """Answer the next ``count`` calls of ``service:operation`` with the AWS error ``error``."""
        payload = {
            "operation": operation,
            "error": error,
            "count": count,
            "service": service,
            "message": message,
            "status": status,
        }
        return self._control("POST", "faults", payload)["faults"]

    def faults(self) -> list[dict[str, Any]]:
        return self._control("GET", "faults")["faults"]

    def clear_faults(self) -> None:
        self._control("DELETE", "faults")

    def fail_next_jobs(self, failure_reason: str, phase: str = "Training", count: int = 1, name_prefix: str = "") -> list[dict[str, Any]]:
        """Make the next ``count`` training jobs (named ``name_prefix...``) end ``Failed`` in ``phase``
        (``Starting``: nothing billed; ``Downloading``/``Training``: billed up to then) with ``failure_reason``."""
        payload = {"failure_reason": failure_reason, "phase": phase, "count": count, "name_prefix": name_prefix}
        return self._control("POST", "job-faults", payload)["job_faults"]

    def job_faults(self) -> list[dict[str, Any]]:
        return self._control("GET", "job-faults")["job_faults"]

    def clear_job_faults(self) -> None:
        self._control("DELETE", "job-faults")

    def config(self) -> dict[str, Any]:
        return self._control("GET", "config")

    def configure(self, **values: Any) -> dict[str, Any]:
        """Change run-time knobs (see :class:`FakeCloudConfig`); returns the whole configuration."""
        return self._control("POST", "config", values)

    def training_jobs(self) -> list[dict[str, Any]]:
        return self._control("GET", "training-jobs")["training_jobs"]

    def training_job(self, name: str) -> dict[str, Any]:
        """The fake's view of a job: status, the script's pids, its container root, its log stream."""
        return self._control("GET", f"training-jobs/{urllib.parse.quote(name)}")

    def reclaim(self, name: str) -> dict[str, Any]:
        """Take the running job's instance away, like a spot interruption (the spot seam)."""
        return self._control("POST", f"training-jobs/{urllib.parse.quote(name)}/reclaim", {})

    def reset(self) -> None:
        self._control("POST", "reset", {})

    # -- AWS side ------------------------------------------------------------------------------

    def connection(self) -> dict[str, Any]:
        """An Airflow ``aws`` connection (JSON form) that points at this fake."""
        return {
            "conn_type": "aws",
            "login": DEFAULT_ACCESS_KEY,
            "password": DEFAULT_ACCESS_KEY,
            "extra": {"region_name": self.region, "endpoint_url": self.url},
        }

    def airflow_env(self, conn_id: str = "aws_default") -> dict[str, str]:
        """``{"AIRFLOW_CONN_<ID>": <connection JSON>}`` for a child process's environment."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(self.connection())}

    def client(self, service: str):
        """A real boto3 client talking to the fake over HTTP (one per service, reused: clients are thread-safe)."""
        cache = self.__dict__.setdefault("_clients", {})
        if service not in cache:
            cache[service] = self.new_client(service)
        return cache[service]

    def new_client(self, service: str, **client_kwargs: Any):
        """A fresh boto3 client for the fake (e.g. with its own ``config=botocore.config.Config(...)``)."""
        import boto3

        return boto3.session.Session().client(
            service,
            region_name=self.region,
            endpoint_url=self.url,
            aws_access_key_id=DEFAULT_ACCESS_KEY,
            aws_secret_access_key=DEFAULT_ACCESS_KEY,
            **client_kwargs,
        )

    def bootstrap(self, bucket: str, role_name: str = "SageMakerExecutionRole") -> str:
        """Create ``bucket`` and a SageMaker execution role (idempotent); return the role ARN."""
        s3 = self.client("s3")
        try:
            s3.create_bucket(Bucket=bucket)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        iam = self.client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sagemaker.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        try:
            return iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"][
                "Arn"
            ]
        except iam.exceptions.EntityAlreadyExistsException:
            return iam.get_role(RoleName=role_name)["Role"]["Arn"]


class FakeCloudHandle(FakeCloudClient):
    """A fake cloud this process started (in-process or as a child process); :meth:`stop` ends it."""

    def __init__(
        self,
        url: str,
        *,
        server: FakeCloud | None = None,
        process: subprocess.Popen | None = None,
        log_path: Path | None = None,
        region: str = DEFAULT_REGION,
    ):
        super().__init__(url, region)
        self.server = server
        self.process = process
        self.log_path = log_path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """Stop the fake and every job it runs; nothing is left running."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    kill_process_tree(self.process.pid, 1)
                    self.process.wait()
            self.process = None

    def __enter__(self) -> FakeCloudHandle:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()


def start_fake_cloud(
    port: int = 0,
    state_dir: str | os.PathLike | None = None,
    *,
    in_process: bool = False,
    config: dict[str, Any] | None = None,
    host: str = DEFAULT_HOST,
    region: str = DEFAULT_REGION,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> FakeCloudHandle:
    """Start a fake cloud and wait until it answers.

    :param port: TCP port on ``host``; 0 picks a free one.
    :param state_dir: where job container roots (and the child's log) live; default a temporary dir.
    :param in_process: serve from a thread of this process (moto's backends are process-global, so
        ``mock_aws`` in the same process would share them); by default the fake is a child process
        running this file, exactly as ``make fake-cloud`` runs it.
    :param config: run-time knobs (:class:`FakeCloudConfig` field names).
    :param env: extra environment of the child process (the training scripts never see it).
    :return: a handle with ``.url``, the control methods of :class:`FakeCloudClient` and ``.stop()``.
    """
    if in_process:
        knobs = FakeCloudConfig.from_env()
        knobs.update(config or {})
        server = FakeCloud(host, port, state_dir, knobs).start()
        return FakeCloudHandle(server.url, server=server, region=region)
    run_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="fake-cloud-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    ready = run_dir / f"ready-{uuid.uuid4().hex}.json"
    log_path = run_dir / "fake_cloud.log"
    env = {**os.environ, **(env or {})}
    for name, value in (config or {}).items():
        env[f"FAKE_CLOUD_{name.upper()}"] = str(value)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--host",
        host,
        "--port",
        str(port),
        "--state-dir",
        str(run_dir),
        "--ready-file",
        str(ready),
        "--quiet",
        "--exit-with-parent",
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None:
            raise RuntimeError(
                f"the fake cloud exited with code {process.returncode} before it was ready; see {log_path}: "
                + log_path.read_text(errors="replace")[-2000:]
            )
        if time.monotonic() > deadline:
            kill_process_tree(process.pid, 1)
            raise RuntimeError(f"the fake cloud did not start within {timeout} s; see {log_path}")
        time.sleep(0.05)
    url = json.loads(ready.read_text())["url"]
    ready.unlink()
    return FakeCloudHandle(url, process=process, log_path=log_path, region=region)


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A fake AWS cloud (S3, SageMaker training, CloudWatch, Logs, IAM, STS) on loopback."
    )
    parser.add_argument("--host", default=os.environ.get("FAKE_CLOUD_HOST", DEFAULT_HOST))
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FAKE_CLOUD_PORT", DEFAULT_PORT)),
        help=f"TCP port (env FAKE_CLOUD_PORT, default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("FAKE_CLOUD_STATE_DIR"),
        help="where job container roots live (env FAKE_CLOUD_STATE_DIR; default a temporary dir)",
    )
    parser.add_argument("--region", default=os.environ.get("FAKE_CLOUD_REGION", DEFAULT_REGION))
    parser.add_argument(
        "--min-training-seconds", type=float, help="every job trains (and bills) at least this long"
    )
    parser.add_argument("--starting-seconds", type=float, help="time each job spends in Starting")
    parser.add_argument(
        "--vertex-port",
        type=int,
        default=int(os.environ.get("FAKE_VERTEX_PORT", -1)),
        help="also serve the fake Vertex AI JobService (gRPC, scripts/fake_vertex.py) on this port "
        "(env FAKE_VERTEX_PORT; 0 picks a free one; default: not served)",
    )
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    parser.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)

    config = FakeCloudConfig.from_env()
    if args.min_training_seconds is not None:
        config.update({"min_training_seconds": args.min_training_seconds})
    if args.starting_seconds is not None:
        config.update({"starting_seconds": args.starting_seconds})
    try:
        cloud = FakeCloud(args.host, args.port, args.state_dir, config).start()
    except OSError as exc:
        print(f"fake cloud: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    vertex = None
    if args.vertex_port >= 0:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import fake_vertex

        gcs_root = (cloud.state_dir / "gcs") if args.state_dir else None
        vertex = fake_vertex.start_fake_vertex(args.vertex_port, gcs_root)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    if args.exit_with_parent:
        # Started by start_fake_cloud(): a test process that dies (even by SIGKILL) takes its fake along.
        parent = os.getppid()

        def _watch_parent() -> None:
            while not done.wait(1.0):
                if os.getppid() != parent:
                    done.set()

        threading.Thread(target=_watch_parent, name="fake-cloud-parent-watch", daemon=True).start()
    client = FakeCloudClient(cloud.url, args.region)
    if args.ready_file:
        tmp = Path(args.ready_file).with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": cloud.url, "pid": os.getpid()}))
        os.replace(tmp, args.ready_file)
    if not args.quiet:
        print(f"Fake cloud (moto {_moto_version()} + SageMaker training runner) on {cloud.url}", flush=True)
        print("  services: s3, sagemaker, cloudwatch, logs, iam, sts", flush=True)
        print(
            f"  controls: {cloud.url}{CONTROL_PREFIX}/  (calls, faults, config, training-jobs, reset)",
            flush=True,
        )
        print(f"  job dirs: {cloud.state_dir / 'jobs'}", flush=True)
        print("Point Airflow's AWS connection at it:", flush=True)
        print(f"  export AIRFLOW_CONN_AWS_DEFAULT='{json.dumps(client.connection())}'", flush=True)
        print(
            f"or boto3 / the AWS CLI: AWS_ENDPOINT_URL={cloud.url} AWS_ACCESS_KEY_ID={DEFAULT_ACCESS_KEY} "
            f"AWS_SECRET_ACCESS_KEY={DEFAULT_ACCESS_KEY} AWS_DEFAULT_REGION={args.region}",
            flush=True,
        )
        if vertex is not None:
            print(f"Fake Vertex AI JobService + Cloud Logging (gRPC) on {vertex.target}, Cloud Storage (JSON API) "
                  f"on {vertex.gcs.endpoint}, buckets in {vertex.gcs_root}", flush=True)
            print("  export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false", flush=True)
            print(
                f"  export AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT='{json.dumps(fake_vertex.connection(vertex))}'",
                flush=True,
            )
        print("Ctrl-C stops it (and every training job it runs).", flush=True)
    try:
        done.wait()
    finally:
        if vertex is not None:
            vertex.stop()
        cloud.stop()
    return 0


def _moto_version() -> str:
    import moto

    return moto.__version__


if __name__ == "__main__":
    sys.exit(main())
