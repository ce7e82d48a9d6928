"""Talking to a fake cloud, and starting one: :class:`FakeCloudClient`, :func:`start_fake_cloud`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from airflow_retrain.training import supervisor

from .config import CONTROL_PREFIX, DEFAULT_ACCESS_KEY, DEFAULT_HOST, DEFAULT_REGION, FakeCloudConfig
from .server import FakeCloud


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

    def kill_host(self, name: str, host: str = "algo-1") -> int:
        """SIGKILL one host's script of a running job (an instance dying mid-training); returns its pid."""
        return self._control("POST", f"training-jobs/{urllib.parse.quote(name)}/kill-host", {"host": host})["pid"]

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
                    supervisor.kill_job(None, roots=[self.process.pid], grace_seconds=1, include_roots=True, reap=False)
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
        str(Path(__file__).resolve().parent),  # the package folder: what `make fake-cloud` runs
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
            supervisor.kill_job(None, roots=[process.pid], grace_seconds=1, include_roots=True, reap=False)
            raise RuntimeError(f"the fake cloud did not start within {timeout} s; see {log_path}")
        time.sleep(0.05)
    url = json.loads(ready.read_text())["url"]
    ready.unlink()
    return FakeCloudHandle(url, process=process, log_path=log_path, region=region)
