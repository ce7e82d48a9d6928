"""A training job's run on the fake cloud: hosts, states, inputs, logs, outputs, spot interruptions.

The container each host gets (layout, ``resourceconfig.json``, ``SM_*``) is
:mod:`airflow_retrain.training.container`'s, and the hosts run through
:func:`airflow_retrain.training.supervisor.run_hosts`: the local backend's own code. ``InstanceCount: N``
runs N hosts ``algo-1`` .. ``algo-N``, each in its own container root, with the first host's collective
tracker on loopback; one host failing fails the job and stops the others. The model and output data
uploaded are the first host's (distributed scripts write them on rank 0).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_retrain.training import container, supervisor

from .config import ALLOWED_HOST_ENV, LOG_GROUP
from .faults import JobFault
from .storage import JobInputError, JobStorage

if TYPE_CHECKING:
    from .server import FakeCloud


def _now():
    from moto.core.utils import utcnow

    return utcnow()


class TrainingRun(JobStorage):
    """One training job's execution: a thread that drives the job through SageMaker's states."""

    def __init__(self, cloud: FakeCloud, account: str, region: str, job: Any, request: dict[str, Any]):
        self.cloud = cloud
        self.account = account
        self.region = region
        self.job = job  # moto's FakeTrainingJob: describe/list read it, this run writes it
        self.name: str = request["TrainingJobName"]
        self.request = request
        self.hosts = container.host_names((request.get("ResourceConfig") or {}).get("InstanceCount") or 1)
        self.token = supervisor.new_token()
        self.stop_event = threading.Event()
        self.reclaim_event = threading.Event()
        self.stop_reason = "Stopped"
        self.host_pids: dict[str, int] = {}
        self.script_pids: list[int] = []
        self.interruptions = 0
        self.job_dir: Path | None = None
        self.log_streams: dict[str, str] = {}
        self.training_began: float | None = None
        self.started_wall: float | None = None
        self.injected_failure: JobFault | None = None
        self.thread = threading.Thread(target=self._run, name=f"fake-sagemaker-{self.name}", daemon=True)
        self._record_lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._log_lines: list[tuple[str, str]] = []
        self._metric_values: dict[str, float] = {}

    @property
    def root(self) -> Path | None:
        """The first host's container root (``/opt/ml`` of ``algo-1``)."""
        return self.job_dir / self.hosts[0] if self.job_dir else None

    @property
    def marker(self) -> bytes:
        return supervisor.token_marker(self.token)

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

    def kill_host(self, host: str) -> int:
        """SIGKILL one host's script (an instance dying mid-training); returns its pid."""
        import os
        import signal

        pid = self.host_pids[host]
        os.kill(pid, signal.SIGKILL)
        return pid

    def info(self) -> dict[str, Any]:
        first = self.hosts[0]
        return {
            "name": self.name,
            "account": self.account,
            "region": self.region,
            "status": self.job.training_job_status,
            "secondary_status": self.job.secondary_status,
            "pid": self.host_pids.get(first),
            "host_pids": dict(self.host_pids),
            "hosts": list(self.hosts),
            "script_pids": list(self.script_pids),
            "running": self.thread.is_alive(),
            "interruptions": self.interruptions,
            "root": str(self.root) if self.root else None,
            "log_stream": self.log_streams.get(first),
            "log_streams": dict(self.log_streams),
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
            self._kill(0.5)
            try:
                self._flush_logs()
            except Exception:  # noqa: BLE001 - losing log lines must not leave the job InProgress
                traceback.print_exc()
            self._finish(outcome, reason, self.started_wall)
        finally:
            self._kill(0.5)
            if self.job_dir and not self.cloud.config.keep_job_dirs:
                shutil.rmtree(self.job_dir, ignore_errors=True)

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
        """One set of instances' life: provision, download, train, upload. Returns (outcome, reason, start)."""
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
        roots = self._prepare_roots()
        try:
            program = ""
            for root in roots:
                program = self._download_source(root)
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
        outcome = self._train(roots, program)
        if self.reclaim_event.is_set() and not self.stop_event.is_set():
            for root in roots:
                self._upload_checkpoints(root)
            self._transition("Interrupted", "The spot instance was reclaimed; waiting for capacity")
            return "Interrupted", None, began
        self._transition("Uploading", "Uploading generated training model")
        self._upload_outputs(roots)
        if outcome.timed_out:
            self.stop_reason = "MaxRuntimeExceeded"
            return "Stopped", None, began
        if self.stop_event.is_set():
            return "Stopped", None, began
        if outcome.exit_code == 0:
            return "Completed", None, began
        failed = outcome.failed_host or self.hosts[0]
        return "Failed", f"AlgorithmError: {self._failure_text(roots[self.hosts.index(failed)], failed, outcome)}", began

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

    # -- inputs ---------------------------------------------------------------------------------

    def _prepare_roots(self) -> list[Path]:
        """A fresh container root per host (``<job dir>/algo-N``), the last attempt's removed."""
        if self.job_dir:
            shutil.rmtree(self.job_dir, ignore_errors=True)
        jobs = self.cloud.state_dir / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        self.job_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=jobs))
        roots = []
        for host in self.hosts:
            root = container.make_layout(self.job_dir / host)
            for sub in ("code", "tmp", "home"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            roots.append(root)
        return roots

    # -- training ------------------------------------------------------------------------------

    def _hosts(self, roots: list[Path], program: str) -> list[supervisor.Host]:
        raw_hps = self.request.get("HyperParameters") or {}
        hps = {k: container.decode_hyperparameter(v) for k, v in raw_hps.items() if not k.startswith("sagemaker_")}
        instance_type = (self.request.get("ResourceConfig") or {}).get("InstanceType", "")
        data_config = container.input_data_config(self.request.get("InputDataConfig") or [])
        tracker = ("127.0.0.1", container.free_port()) if len(self.hosts) > 1 else None
        command = [self.cloud.config.python, program, *container.hyperparameter_args(hps)]
        hosts = []
        for host, root in zip(self.hosts, roots, strict=True):
            channels = {name: root / "input" / "data" / name for name in data_config}
            env = {k: os.environ[k] for k in ALLOWED_HOST_ENV if k in os.environ}
            env.update(
                container.environment(
                    root, job_name=self.name, hosts=self.hosts, current_host=host, channels=channels,
                    hyperparameters=hps, instance_type=instance_type, num_gpus=container.gpu_count(),
                    data_config=data_config, tracker=tracker,
                )
            )
            container.write_config(root, raw_hps, data_config, container.resource_config(self.hosts, host, instance_type))
            env.update(
                {
                    "HOME": str(root / "home"),
                    "TMPDIR": str(root / "tmp"),
                    "PYTHONDONTWRITEBYTECODE": "1",
                    "TRAINING_JOB_ARN": self.job.arn,
                    "SM_LOG_LEVEL": "20",
                    "SM_USER_ENTRY_POINT": program,
                    "SM_MODULE_NAME": program.rsplit(".", 1)[0],
                    "SM_MODULE_DIR": container.decode_hyperparameter(raw_hps.get("sagemaker_submit_directory", "")) or "",
                    supervisor.JOB_TOKEN_VAR: self.token,
                }
            )
            if (self.request.get("CheckpointConfig") or {}).get("LocalPath"):
                env["SM_CHECKPOINT_LOCAL_PATH"] = str(root / "checkpoints")
            env.update({str(k): str(v) for k, v in (self.request.get("Environment") or {}).items()})
            hosts.append(supervisor.Host(host, command, env, str(root / "code")))
        return hosts

    def _train(self, roots: list[Path], program: str) -> supervisor.HostsOutcome:
        hosts = self._hosts(roots, program)
        logs = self.client("logs")
        try:
            logs.create_log_group(logGroupName=LOG_GROUP)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        for host in self.hosts:
            if host not in self.log_streams:  # an instance restarted after a spot interruption keeps writing here
                self.log_streams[host] = f"{self.name}/{host}-{int(time.time())}"
                logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=self.log_streams[host])
        shown = " ".join(["python", program, *hosts[0].argv[2:]])
        for host in self.hosts:
            self._log_line(host, f"Invoking script with the following command: {shown}")
        self.host_pids = {}
        config = self.cloud.config
        flushed = [time.monotonic()]

        def should_stop() -> tuple[str, float] | None:
            if self.stop_event.is_set():
                return "Stopped", config.stop_grace_seconds
            if self.reclaim_event.is_set():
                return "Interrupted", 0.0  # the instance is gone: no grace
            return None

        def started(host: str, pid: int) -> None:
            self.host_pids[host] = pid
            self.script_pids.append(pid)

        def tick() -> None:
            if time.monotonic() - flushed[0] > 0.5:
                self._flush_logs()
                flushed[0] = time.monotonic()

        outcome = supervisor.run_hosts(
            hosts,
            marker=self.marker,
            max_runtime_seconds=float((self.request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds") or 86400),
            grace_seconds=config.stop_grace_seconds,
            leftover_grace_seconds=config.stop_grace_seconds,
            min_seconds=config.min_training_seconds,
            should_stop=should_stop,
            on_start=started,
            on_line=self._log_line,
            on_event=lambda message: [self._log_line(h, message) for h in self.hosts],
            on_tick=tick,
            new_session=True,
        )
        self._flush_logs()
        return outcome

    def _log_line(self, host: str, line: str) -> None:
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
            self._log_lines.append((host, line))

    def _flush_logs(self) -> None:
        with self._log_lock:
            lines, self._log_lines = self._log_lines, []
        stamp = int(time.time() * 1000)
        logs = self.client("logs")
        for host, stream in self.log_streams.items():
            events = [{"timestamp": stamp, "message": line or " "} for h, line in lines if h == host]
            for start in range(0, len(events), 1000):
                logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events[start : start + 1000])

    def _failure_text(self, root: Path, host: str, outcome: supervisor.HostsOutcome) -> str:
        failure = root / "output" / "failure"
        if failure.is_file() and failure.read_text(errors="replace").strip():
            text = failure.read_text(errors="replace").strip()
        else:
            program = self.request["HyperParameters"].get("sagemaker_program", "")
            text = f'ExecuteUserScriptError: Command "{self.cloud.config.python} {program}" exited with code {outcome.codes[host]}'
        return text[:1000]  # SageMaker's reason does not name the host; the log says which one failed

    # -- outputs -------------------------------------------------------------------------------

    def _kill(self, grace: float) -> None:
        """End every process of the job (the hosts' scripts and whatever they started): the instances are gone."""
        supervisor.kill_job(self.marker, grace_seconds=grace, reap=False)
