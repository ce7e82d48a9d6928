"""What the fake adds in front of moto: API call counts, injected faults (in each request's own protocol)
and the job fault plan (the next training jobs fail in a chosen phase)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import threading
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from .config import INTERNAL_HEADER

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/")


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


class _Plan:
    """Pending faults, each used up by ``count`` matching calls; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Any] = []

    def _take(self, matches: Callable[[Any], bool], **changes: Any) -> Any:
        """A copy (with ``changes``) of the first pending fault that ``matches``, one of its uses spent."""
        with self._lock:
            for fault in self._faults:
                if matches(fault):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return dataclasses.replace(fault, **changes)
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dataclasses.asdict(f) for f in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


class FaultPlan(_Plan):
    """Pending faults; ``FAKE_CLOUD_FAULTS`` seeds it at start-up.

    ``FAKE_CLOUD_FAULTS="sagemaker:CreateTrainingJob=ThrottlingException*2;s3:GetObject=AccessDenied"``
    fails the next two ``CreateTrainingJob`` calls with throttling and the next ``GetObject`` with
    ``AccessDenied`` (``*N`` defaults to 1).
    """

    def __init__(self, spec: str = "") -> None:
        super().__init__()
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
        return self._take(lambda f: f.service == service and f.operation == operation)


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


class JobFaultPlan(_Plan):
    """Pending job faults: each fails the next ``count`` training jobs whose names it matches."""

    def add(self, fault: JobFault) -> None:
        if fault.phase not in JOB_FAULT_PHASES:
            raise ValueError(f"job fault phase must be one of {', '.join(JOB_FAULT_PHASES)}, got {fault.phase!r}")
        if fault.count < 1 or not fault.failure_reason:
            raise ValueError("a job fault needs failure_reason and count >= 1")
        with self._lock:
            self._faults.append(fault)

    def take(self, job_name: str) -> JobFault | None:
        return self._take(lambda f: job_name.startswith(f.name_prefix), count=1)





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
