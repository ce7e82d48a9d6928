"""The fake cloud's server: moto's WSGI app behind a thin layer for call counts, faults and test controls."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from . import sagemaker
from .config import CONTROL_PREFIX, DEFAULT_ACCESS_KEY, DEFAULT_HOST, INTERNAL_HEADER, FakeCloudConfig
from .faults import (
    ApiCallLog,
    Fault,
    FaultPlan,
    JobFault,
    JobFaultPlan,
    _default_fault_message,
    _read_body,
    account_for,
    error_response,
    parse_aws_request,
)
from .jobs import TrainingRun


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
        self.runs_lock = threading.RLock()
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
        sagemaker.install(self)
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
        sagemaker.uninstall(self)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def start_run(self, account: str, region: str, job: Any, request: dict[str, Any]) -> TrainingRun:
        """Run a training job moto has just recorded (called by the moto extension, under :attr:`runs_lock`)."""
        run = TrainingRun(self, account, region, job, request)
        run.injected_failure = self.job_faults.take(run.name)
        run.init_record()
        self.runs[(account, region, run.name)] = run
        run.thread.start()
        return run

    def stop_all_runs(self) -> None:
        with self.runs_lock:
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
        with self.runs_lock:
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
        return self._moto_app(environ, start_response)

    # -- control API ---------------------------------------------------------------------------

    def find_run(self, name: str, region: str | None = None) -> TrainingRun | None:
        with self.runs_lock:
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
            with self.runs_lock:
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
            if parts[2:] == ["kill-host"] and method == "POST":
                host = str(payload.get("host", run.hosts[0]))
                if host not in run.host_pids:
                    return 409, {"error": f"training job {run.name} has no running host {host!r}"}
                return 200, {"host": host, "pid": run.kill_host(host)}
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
    "POST   /fake-cloud/training-jobs/NAME/kill-host {host=algo-1}  SIGKILL one host's script",
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
