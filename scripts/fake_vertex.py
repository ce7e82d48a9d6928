#!/usr/bin/env python3
"""A fake Vertex AI ``JobService`` on loopback: custom jobs that really run, over real gRPC.

Vertex AI has no emulator. This serves ``google.cloud.aiplatform.v1.JobService`` (``CreateCustomJob``,
``GetCustomJob``, ``ListCustomJobs``, ``CancelCustomJob``) with the aiplatform client's own proto-plus
messages, so the real client reaches it through an explicit insecure transport::

    JobServiceClient(transport=JobServiceGrpcTransport(channel=grpc.insecure_channel("127.0.0.1:PORT")))

(``client_options={"api_endpoint": ...}`` alone insists on TLS). ``make fake-cloud`` starts it beside
the fake AWS cloud (``scripts/fake_cloud``); tests import this one file (``from fakes import
fake_vertex``) and call :func:`start_fake_vertex`.

What a custom job does here:

* **Cloud Storage**: a local folder (``gcs_root``) holds every bucket: ``gs://bucket/key`` is
  ``<gcs_root>/bucket/key``, served over the GCS JSON API by ``scripts/fake_gcs.py`` (clients reach it
  through the connection's ``gcs.endpoint``). Vertex mounts buckets at ``/gcs/<bucket>/``; the fake rewrites a ``/gcs/``
  prefix in the container's command, args and env to ``<gcs_root>/`` and tells the contract module where
  the mount is (``RETRAIN_GCS_MOUNT``), so ``gs://`` paths in ``AIP_*`` variables resolve locally.
* **Container contract**: the first worker pool's ``container_spec`` command runs (``python`` is the
  fake's interpreter; the image is not pulled) with Vertex's variables: ``AIP_MODEL_DIR``,
  ``AIP_CHECKPOINT_DIR``, ``AIP_TENSORBOARD_LOG_DIR`` (from ``base_output_directory``),
  ``CLOUD_ML_JOB_ID``, ``CLUSTER_SPEC``, the spec's ``env``; nothing else from the host but an
  allow-list (no secrets). ``replica_count`` N runs N processes (``workerpool0`` replicas, each with
  its own ``CLUSTER_SPEC`` task index); one replica failing fails the job and stops the others.
* **States**: ``JOB_STATE_QUEUED`` → ``PENDING`` → ``RUNNING`` → ``SUCCEEDED`` / ``FAILED`` /
  (``CANCELLING`` →) ``CANCELLED``, with ``create_time``/``start_time``/``end_time``/``update_time``;
  a failed job's ``error`` quotes the replica and the script's last ``ERROR:`` line, like Vertex.
* **Spot**: :meth:`FakeVertex.reclaim` preempts a running job's VMs; a job with
  ``scheduling.strategy = SPOT`` restarts (its checkpoints, kept in the GCS stand-in, survive), an
  on-demand job fails. ``interruptions`` per job are reported by :meth:`FakeVertex.job_info`.
* **Endpoints**: ``scripts/fake_vertex_endpoints.py`` serves a minimal ``EndpointService`` on the same port.
* **Logs**: each line a job prints is a Cloud Logging entry of resource ``ml_job``, served by
  ``ListLogEntries`` (``scripts/fake_logging.py``) on the same gRPC port.
* **Validation** like the API's ``INVALID_ARGUMENT``: unknown machine or accelerator type, an
  accelerator not offered with the machine type, a missing container image; a duplicate display name
  is allowed (Vertex allows it). **Quota**: :meth:`FakeVertex.exceed_quota` makes the next N
  ``CreateCustomJob`` calls fail ``RESOURCE_EXHAUSTED`` with Vertex's quota message.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_retrain.training import container, supervisor

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19051
SERVICE = "google.cloud.aiplatform.v1.JobService"
GCS_MOUNT_ENV = "RETRAIN_GCS_MOUNT"

# What a training script may inherit from the machine that runs the fake: nothing with a secret in it.
ALLOWED_HOST_ENV = (
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
)  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeVertexConfig:
    """Run-time knobs (env ``FAKE_VERTEX_<NAME>``).

    :param pending_seconds: time a job spends in ``JOB_STATE_PENDING`` (provisioning) before running.
    :param min_running_seconds: a job stays ``RUNNING`` at least this long even when its script ends sooner.
    :param stop_grace_seconds: after SIGTERM, how long replicas may take before they are killed.
    :param python: interpreter that runs ``python`` in the container command.
    """

    pending_seconds: float = 0.0
    min_running_seconds: float = 0.0
    stop_grace_seconds: float = 5.0
    python: str = sys.executable

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FakeVertexConfig:
        environ = os.environ if environ is None else environ
        config = cls()
        for name in ("pending_seconds", "min_running_seconds", "stop_grace_seconds"):
            if (value := environ.get(f"FAKE_VERTEX_{name.upper()}")) is not None:
                setattr(config, name, float(value))
        if value := environ.get("FAKE_VERTEX_PYTHON"):
            config.python = value
        return config


def _sibling(name: str):
    """``scripts/<name>.py``, loaded once by path (this file is loaded by path too, not as a package)."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _types():
    from google.cloud.aiplatform_v1.types import custom_job, job_service, job_state

    return custom_job, job_service, job_state


@dataclass
class _Run:
    """One custom job's execution: a thread driving the job record through Vertex's states."""

    name: str
    job: Any  # CustomJob proto-plus message (the record GetCustomJob returns)
    spot: bool
    cancel_event: threading.Event = field(default_factory=threading.Event)
    reclaim_event: threading.Event = field(default_factory=threading.Event)
    processes: list[int] = field(default_factory=list)  # the replicas' pids, in order
    token: str = field(default_factory=lambda: supervisor.new_token())
    interruptions: int = 0
    attempts: int = 0
    log_lines: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None


class FakeVertex:
    """The gRPC server and its jobs. ``start()`` listens; ``stop()`` ends the server and every job.

    :param gcs_root: the GCS stand-in (``gs://bucket/key`` is ``<gcs_root>/bucket/key``).
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        gcs_root: str | os.PathLike | None = None,
        config: FakeVertexConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.gcs_root = Path(gcs_root) if gcs_root else Path(tempfile.mkdtemp(prefix="fake-gcs-"))
        self.gcs_root.mkdir(parents=True, exist_ok=True)
        self.config = config or FakeVertexConfig.from_env()
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._quota_failures = 0
        self.calls: dict[str, int] = {}
        self._server = None
        self.gcs = _sibling("fake_gcs").FakeGcs(self.gcs_root, host)
        self.logging = _sibling("fake_logging").FakeLogging(self._log_sources)
        self.endpoints = _sibling("fake_vertex_endpoints").FakeEndpoints()  # EndpointService, same port

    def _log_sources(self):
        with self._lock:
            runs = list(self._runs.values())
        return [(run.name.split("/")[1], run.name.rsplit("/", 1)[-1], run.log_lines) for run in runs]

    # -- server ------------------------------------------------------------------------------------

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> FakeVertex:
        import grpc
        from google.protobuf import empty_pb2

        custom_job, job_service, _ = _types()
        handlers = {
            "CreateCustomJob": grpc.unary_unary_rpc_method_handler(
                self._create, job_service.CreateCustomJobRequest.deserialize, custom_job.CustomJob.serialize
            ),
            "GetCustomJob": grpc.unary_unary_rpc_method_handler(
                self._get, job_service.GetCustomJobRequest.deserialize, custom_job.CustomJob.serialize
            ),
            "ListCustomJobs": grpc.unary_unary_rpc_method_handler(
                self._list, job_service.ListCustomJobsRequest.deserialize, job_service.ListCustomJobsResponse.serialize
            ),
            "CancelCustomJob": grpc.unary_unary_rpc_method_handler(
                self._cancel, job_service.CancelCustomJobRequest.deserialize, empty_pb2.Empty.SerializeToString
            ),
        }
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(SERVICE, handlers),
                self.logging.generic_handler(),
                self.endpoints.generic_handler(),
            )
        )
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if not bound:
            raise OSError(f"cannot listen on {self.host}:{self.port}")
        self.port = bound
        server.start()
        self._server = server
        self.gcs.start()
        return self

    def stop_all_jobs(self) -> None:
        """End every job now (their processes killed); records stay."""
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.cancel_event.set()
        for run in runs:
            if run.thread:
                run.thread.join(timeout=30)
            self._kill(run, 0)

    def reset(self) -> None:
        """Forget every job (ended first), pending quota faults and call counts."""
        self.stop_all_jobs()
        with self._lock:
            self._runs.clear()
            self.endpoints.reset()
            self._quota_failures = 0
            self.calls = {}

    def stop(self) -> None:
        """Stop serving and end every job (nothing of a job keeps running)."""
        self.stop_all_jobs()
        if self._server is not None:
            self._server.stop(grace=1).wait()
            self._server = None
        self.gcs.stop()

    # -- test controls -------------------------------------------------------------------------------

    def exceed_quota(self, count: int = 1) -> None:
        """The next ``count`` CreateCustomJob calls fail with RESOURCE_EXHAUSTED (quota exceeded)."""
        with self._lock:
            self._quota_failures += count

    def reclaim(self, job_id: str) -> dict[str, Any]:
        """Preempt a running job's VMs (a spot reclaim): SPOT jobs restart from their checkpoints."""
        run = self._find(job_id)
        run.reclaim_event.set()
        return self.job_info(job_id)

    def kill_replica(self, job_id: str, index: int) -> int:
        """SIGKILL replica ``index`` of a running job (a VM dying mid-training); returns its pid."""
        run = self._find(job_id)
        deadline = time.monotonic() + 30
        while len(run.processes) <= index and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = run.processes[index]
        os.kill(pid, signal.SIGKILL)
        return pid

    def job_info(self, job_id: str) -> dict[str, Any]:
        run = self._find(job_id)
        return {
            "name": run.name,
            "state": run.job.state.name,
            "interruptions": run.interruptions,
            "attempts": run.attempts,
            "pids": list(run.processes),
            "running": bool(run.thread and run.thread.is_alive()),
            "log": list(run.log_lines),
        }

    def job_ids(self) -> list[str]:
        with self._lock:
            return [name.rsplit("/", 1)[-1] for name in self._runs]

    def _find(self, job_id: str) -> _Run:
        with self._lock:
            for name, run in self._runs.items():
                if name == job_id or name.rsplit("/", 1)[-1] == job_id:
                    return run
        raise KeyError(f"no custom job {job_id!r}")

    def gcs_path(self, uri: str) -> Path:
        """The local file of ``gs://bucket/key`` in the stand-in."""
        if not uri.startswith("gs://"):
            raise ValueError(f"{uri!r} is not a gs:// URI")
        return self.gcs_root / uri[len("gs://") :]

    # -- handlers ------------------------------------------------------------------------------------

    def _count(self, method: str) -> None:
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1

    def _copy(self, job):
        custom_job, _, _ = _types()
        with self._lock:
            return custom_job.CustomJob.deserialize(custom_job.CustomJob.serialize(job))

    def _create(self, request, context):
        import grpc

        self._count("CreateCustomJob")
        custom_job, _, job_state = _types()
        parent = request.parent
        if not re.fullmatch(r"projects/[^/]+/locations/[^/]+", parent):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid parent {parent!r}")
        with self._lock:
            if self._quota_failures > 0:
                self._quota_failures -= 1
                region = parent.rsplit("/", 1)[-1]
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "The following quota metrics exceed quota limits: "
                    f"aiplatform.googleapis.com/custom_model_training_cpus (region {region})",
                )
        job = custom_job.CustomJob(request.custom_job)
        if problem := self._invalid(job):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        job_id = str(uuid.uuid4().int)[:19]
        job.name = f"{parent}/customJobs/{job_id}"
        job.state = job_state.JobState.JOB_STATE_QUEUED
        job.create_time = job.update_time = _now()
        spot = job.job_spec.scheduling.strategy == custom_job.Scheduling.Strategy.SPOT
        run = _Run(name=job.name, job=job, spot=spot)
        run.thread = threading.Thread(target=self._drive, args=(run,), name=f"fake-vertex-{job_id}", daemon=True)
        with self._lock:
            self._runs[job.name] = run
        run.thread.start()
        return self._copy(job)

    def _invalid(self, job) -> str | None:
        try:
            from airflow_retrain.training.vertex_catalog import machine_problems
        except ImportError:  # run outside the project's environment: no machine validation
            machine_problems = None
        pools = list(job.job_spec.worker_pool_specs)
        if not pools:
            return "CustomJobSpec.worker_pool_specs: at least one worker pool is required"
        for i, pool in enumerate(pools):
            spec = pool.machine_spec
            if not spec.machine_type:
                return f"worker_pool_specs[{i}].machine_spec.machine_type is required"
            accelerator = spec.accelerator_type.name if spec.accelerator_type else None
            if accelerator == "ACCELERATOR_TYPE_UNSPECIFIED":
                accelerator = None
            if machine_problems is not None:
                problems = machine_problems(spec.machine_type, accelerator, spec.accelerator_count, "machine_spec")
                if problems:
                    return f"worker_pool_specs[{i}]: " + "; ".join(problems)
            if not pool.container_spec.image_uri:
                return f"worker_pool_specs[{i}].container_spec.image_uri is required"
            if pool.replica_count < 1:
                return f"worker_pool_specs[{i}].replica_count must be at least 1"
        base = job.job_spec.base_output_directory.output_uri_prefix
        if base and not base.startswith("gs://"):
            return f"base_output_directory.output_uri_prefix {base!r} must be a gs:// URI"
        return None

    def _get(self, request, context):
        import grpc

        self._count("GetCustomJob")
        with self._lock:
            run = self._runs.get(request.name)
        if run is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"The CustomJob does not exist: {request.name}")
        return self._copy(run.job)

    def _list(self, request, context):
        import grpc

        self._count("ListCustomJobs")
        _, job_service, _ = _types()
        try:
            wanted = _parse_label_filter(request.filter)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        with self._lock:
            runs = [r for r in self._runs.values() if r.name.startswith(request.parent + "/")]
            jobs = [
                self._copy(r.job)
                for r in runs
                if all(r.job.labels.get(k) == v for k, v in wanted.items())
            ]
        jobs.sort(key=lambda j: j.create_time)
        start = int(request.page_token or 0)
        size = request.page_size or 100
        page = jobs[start : start + size]
        token = str(start + size) if start + size < len(jobs) else ""
        return job_service.ListCustomJobsResponse(custom_jobs=page, next_page_token=token)

    def _cancel(self, request, context):
        import grpc
        from google.protobuf import empty_pb2

        self._count("CancelCustomJob")
        _, _, job_state = _types()
        with self._lock:
            run = self._runs.get(request.name)
            if run is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"The CustomJob does not exist: {request.name}")
            terminal = run.job.state in _terminal_states()
            if terminal:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Cannot cancel the CustomJob {request.name} in state {run.job.state.name}",
                )
            run.job.state = job_state.JobState.JOB_STATE_CANCELLING
            run.job.update_time = _now()
            run.cancel_event.set()
        return empty_pb2.Empty()

    # -- the run -------------------------------------------------------------------------------------

    def _set_state(self, run: _Run, state: str, **fields: Any) -> None:
        _, _, job_state = _types()
        with self._lock:
            if run.job.state == job_state.JobState.JOB_STATE_CANCELLING and state not in (
                "JOB_STATE_CANCELLED",
                "JOB_STATE_FAILED",
            ):
                return
            run.job.state = getattr(job_state.JobState, state)
            run.job.update_time = _now()
            for key, value in fields.items():
                setattr(run.job, key, value)

    def _wait(self, run: _Run, seconds: float) -> bool:
        """Sleep; ``True`` when a cancel or a reclaim cut it short."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if run.cancel_event.is_set() or run.reclaim_event.is_set():
                return True
            time.sleep(0.05)
        return run.cancel_event.is_set() or run.reclaim_event.is_set()

    def _drive(self, run: _Run) -> None:
        try:
            outcome, message = self._attempts(run)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake must not leave the job running
            traceback.print_exc()
            outcome, message = "JOB_STATE_FAILED", f"Internal error in the fake Vertex AI: {exc}"
        finally:
            self._kill(run, 0)
        fields: dict[str, Any] = {"end_time": _now()}
        if outcome == "JOB_STATE_FAILED":
            fields["error"] = {"code": 3, "message": message}
        elif outcome == "JOB_STATE_CANCELLED":
            fields["error"] = {"code": 1, "message": "CANCELED"}
        with self._lock:
            _, _, job_state = _types()
            run.job.state = getattr(job_state.JobState, outcome)
            run.job.update_time = _now()
            for key, value in fields.items():
                setattr(run.job, key, value)

    def _attempts(self, run: _Run) -> tuple[str, str]:
        while True:
            run.reclaim_event.clear()
            run.attempts += 1
            self._set_state(run, "JOB_STATE_PENDING")
            if not self._wait(run, self.config.pending_seconds):
                if run.attempts == 1:
                    self._set_state(run, "JOB_STATE_RUNNING", start_time=_now())
                else:
                    self._set_state(run, "JOB_STATE_RUNNING")
                outcome, message = self._run_replicas(run)
            else:
                outcome, message = "interrupted", ""
            if run.cancel_event.is_set():
                return "JOB_STATE_CANCELLED", "CANCELED"
            if outcome != "interrupted":
                return outcome, message
            run.interruptions += 1
            run.log_lines.append(f"fake-vertex: the job's VMs were preempted (interruption {run.interruptions})")
            if not run.spot:
                return "JOB_STATE_FAILED", (
                    "The replica workerpool0-0 was preempted: the VM was reclaimed and the job was not "
                    "scheduled on Spot VMs, so it is not restarted"
                )

    def _run_replicas(self, run: _Run) -> tuple[str, str]:
        """Run the first pool's replicas through the local backend's host supervisor (one replica failing
        fails the job and stops the others; nothing of the job outlives it)."""
        pool = run.job.job_spec.worker_pool_specs[0]
        count = max(1, int(pool.replica_count))
        cluster = {"workerpool0": [f"127.0.0.1:{container.free_port()}" for _ in range(count)]}
        run.processes = []
        hosts = []
        try:
            for index in range(count):
                env, command = self._environment(run, cluster, index)
                env[supervisor.JOB_TOKEN_VAR] = run.token
                run.log_lines.append(f"fake-vertex: replica workerpool0-{index}: {shlex.join(command)}")
                hosts.append(supervisor.Host(f"workerpool0-{index}", command, env, env["HOME"]))
        except OSError as exc:
            return "JOB_STATE_FAILED", f"The replica workerpool0-{len(hosts)} could not start: {exc}"

        def should_stop() -> tuple[str, float] | None:
            if run.cancel_event.is_set():
                return "cancelled", self.config.stop_grace_seconds
            if run.reclaim_event.is_set():
                return "interrupted", 0.0  # the VMs are gone: no grace
            return None

        def line(host: str, text: str) -> None:
            with self._lock:
                run.log_lines.append(f"[{host}] {text}")

        try:
            outcome = supervisor.run_hosts(
                hosts,
                marker=supervisor.token_marker(run.token),
                max_runtime_seconds=7 * 86400,
                grace_seconds=self.config.stop_grace_seconds,
                leftover_grace_seconds=self.config.stop_grace_seconds,
                min_seconds=self.config.min_running_seconds,
                should_stop=should_stop,
                on_start=lambda _host, pid: run.processes.append(pid),
                on_line=line,
                new_session=True,
            )
        except OSError as exc:
            return "JOB_STATE_FAILED", f"The replica workerpool0-{len(run.processes)} could not start: {exc}"
        if run.cancel_event.is_set():
            return "JOB_STATE_CANCELLED", "CANCELED"
        if outcome.stopped == "interrupted":
            return "interrupted", ""
        if outcome.failed_host is not None:
            index, code = int(outcome.failed_host.rsplit("-", 1)[1]), outcome.codes[outcome.failed_host]
            reason = _last_error(run.log_lines, index)
            status = f"a non-zero status of {code}" if code > 0 else f"signal {-code}"
            message = (
                f"The replica workerpool0-{index} exited with {status}. Termination reason: Error."
                + (f" {reason}" if reason else "")
            )
            return "JOB_STATE_FAILED", message
        return "JOB_STATE_SUCCEEDED", ""

    def _environment(self, run: _Run, cluster: dict[str, list[str]], index: int) -> tuple[dict[str, str], list[str]]:
        job = run.job
        pool = job.job_spec.worker_pool_specs[0]
        container = pool.container_spec
        mount = str(self.gcs_root)
        home = self.gcs_root.parent / "fake-vertex-home" / job.name.rsplit("/", 1)[-1] / str(index)
        home.mkdir(parents=True, exist_ok=True)

        def local(value: str) -> str:
            return value.replace("/gcs/", mount + "/") if "/gcs/" in value else value

        env = {k: os.environ[k] for k in ALLOWED_HOST_ENV if k in os.environ}
        env.update(
            {
                "HOME": str(home),
                "TMPDIR": str(home),
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                GCS_MOUNT_ENV: mount,
                "CLOUD_ML_JOB_ID": job.name.rsplit("/", 1)[-1],
                "CLOUD_ML_PROJECT_ID": job.name.split("/")[1],
                "CLUSTER_SPEC": json.dumps(
                    {"cluster": cluster, "environment": "cloud", "task": {"type": "workerpool0", "index": index}}
                ),
            }
        )
        if base := job.job_spec.base_output_directory.output_uri_prefix:
            base = base.rstrip("/")
            env["AIP_MODEL_DIR"] = f"{base}/model/"
            env["AIP_CHECKPOINT_DIR"] = f"{base}/checkpoints/"
            env["AIP_TENSORBOARD_LOG_DIR"] = f"{base}/logs/"
        for var in container.env:
            env[var.name] = local(var.value)
        command = [local(c) for c in container.command] + [local(a) for a in container.args]
        if not command:
            raise OSError("container_spec.command is empty (the fake cannot run an image's entrypoint)")
        if command[0] in ("python", "python3"):
            command[0] = self.config.python
        return env, command

    def _kill(self, run: _Run, grace: float) -> None:
        """End every process of the job (its replicas and whatever they started)."""
        supervisor.kill_job(supervisor.token_marker(run.token), grace_seconds=grace, reap=False)


def _terminal_states():
    _, _, job_state = _types()
    s = job_state.JobState
    return (s.JOB_STATE_SUCCEEDED, s.JOB_STATE_FAILED, s.JOB_STATE_CANCELLED)


def _last_error(lines: list[str], index: int) -> str:
    prefix = f"[workerpool0-{index}] ERROR: "
    for line in reversed(lines):
        if line.startswith(prefix):
            return line[len(f"[workerpool0-{index}] ") :]
    return ""


_FILTER_TERM = re.compile(r'^labels\.([a-z0-9_-]+)\s*=\s*"?([^"]*)"?$')


def _parse_label_filter(text: str) -> dict[str, str]:
    """``labels.a="x" AND labels.b="y"`` (the subset of Vertex's filter syntax the fake supports)."""
    wanted: dict[str, str] = {}
    if not text.strip():
        return wanted
    for term in re.split(r"\s+AND\s+", text.strip()):
        match = _FILTER_TERM.match(term.strip())
        if not match:
            raise ValueError(f"unsupported filter term {term!r} (the fake supports labels.KEY=\"VALUE\" AND ...)")
        wanted[match.group(1)] = match.group(2)
    return wanted


def start_fake_vertex(
    port: int = 0, gcs_root: str | os.PathLike | None = None, *, config: dict[str, Any] | None = None
) -> FakeVertex:
    """Start a fake Vertex AI JobService in this process (a gRPC server thread); ``.stop()`` ends it."""
    knobs = FakeVertexConfig.from_env()
    for key, value in (config or {}).items():
        setattr(knobs, key, type(getattr(knobs, key))(value))
    return FakeVertex(DEFAULT_HOST, port, gcs_root, knobs).start()


def connection(fake: FakeVertex, project: str = "fake-project") -> dict[str, Any]:
    """The Airflow Google Cloud connection (JSON form) that points the Vertex backend at ``fake``.

    Only settings a real connection has: the API endpoints (loopback, so plain gRPC is allowed), the
    Cloud Storage endpoint, and anonymous credentials (no key, no ADC; the fake checks none).
    """
    return {
        "conn_type": "google_cloud_platform",
        "extra": {
            "project": project,
            "api_endpoint": fake.target,
            "logging_api_endpoint": fake.target,
            "api_endpoint_insecure": True,
            **_sibling("fake_gcs").connection_extra(fake.gcs),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake Vertex AI JobService (gRPC) on loopback.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("FAKE_VERTEX_PORT", DEFAULT_PORT)))
    parser.add_argument("--gcs-root", default=os.environ.get("FAKE_VERTEX_GCS_ROOT"))
    args = parser.parse_args(argv)
    fake = start_fake_vertex(args.port, args.gcs_root)
    print(f"Fake Vertex AI JobService + Cloud Logging on {fake.target}, Cloud Storage on {fake.gcs.endpoint} "
          f"(buckets in {fake.gcs_root})", flush=True)
    print("  export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false", flush=True)
    print(f"  export AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT='{json.dumps(connection(fake))}'", flush=True)
    return _sibling("fake_gcs").serve_until_signalled(fake)


if __name__ == "__main__":
    sys.exit(main())
