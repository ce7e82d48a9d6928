"""LocalTrainingBackend: the embedded default, a subprocess on the worker's machine.

It runs the training script under the same environment contract SageMaker gives a training container
(``SM_CHANNEL_<NAME>``, ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``SM_HPS`` and ``--key value``
hyperparameters, ``SM_NUM_GPUS``), so a script that trains here trains there unchanged. The job runs
in its own session and keeps its record in ``<jobs_dir>/<job_name>/``; any worker on the same machine
can describe, reattach to or stop it. Every process of the job carries the job's token in its environment
(:mod:`~airflow_retrain.training.supervisor`): stopping the job, its maximum runtime, a runner that died and
the teardown sweep all end the job's processes through :func:`~airflow_retrain.training.supervisor.kill_job`,
children that left the job's session included.

Inputs and outputs go through the artifact store like a cloud backend's: channels given as URIs are
downloaded into ``<job>/input/data/<channel>`` at submit, and :meth:`LocalTrainingBackend.fetch_outputs`
uploads ``<job>/model`` and ``<job>/output/data`` to the run's prefix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_retrain.config import state_dir
from airflow_retrain.training import container, supervisor
from airflow_retrain.training.base import (
    JobState,
    TrainingBackend,
    TrainingJob,
    TrainingJobExists,
    TrainingJobNotFound,
    TrainingJobRequest,
    TrainingOutputs,
    TrainingOutputsMissing,
)

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

_RUNNER = Path(__file__).with_name("local_runner.py")

#: Worker environment variables a training script may see (an allow-list: anything else, however it is
#: named -- PGPASSWORD, DATABASE_URL, *_TOKEN, AIRFLOW_CONN_* -- stays with the worker). A spec adds names
#: with ``training.environment`` and values with ``training.env``.
BASE_ENVIRONMENT_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TEMP", "TMP", "TZ", "LANG", "LANGUAGE",
        # thread pools: the script should size them as the worker's operator intended
        "OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "OMP_PROC_BIND", "OMP_PLACES", "OMP_DYNAMIC",
        "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS",
        # the GPU runtime
        "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH",
        # Python, minimally: no PYTHONPATH/PYTHONSTARTUP (the script runs as it would in a container)
        "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS",
    }
)  # fmt: skip
BASE_ENVIRONMENT_PREFIXES = ("LC_", "MKL_", "OPENBLAS_")
# Never from the worker, even when a spec names them: Airflow's own variables (connections, config,
# secrets) and the container contract, which the backend writes itself.
_FORBIDDEN_ENVIRONMENT_PREFIXES = ("AIRFLOW", "_AIRFLOW", "SM_")


def training_environment(
    worker_env: dict[str, str] | os._Environ,
    pass_environment: list[str] | tuple[str, ...] = (),
    environment: dict[str, str] | None = None,
) -> dict[str, str]:
    """The base environment of a training script: the allow-listed part of the worker's environment.

    :param worker_env: the worker's environment (``os.environ``).
    :param pass_environment: more names to take from the worker (``training.environment`` of the spec).
    :param environment: values to set (``training.env``); they win over the worker's.
    """
    allowed = set(BASE_ENVIRONMENT_NAMES) | set(pass_environment)
    env = {
        name: value
        for name, value in worker_env.items()
        if (name in allowed or name.startswith(BASE_ENVIRONMENT_PREFIXES))
        and not name.upper().startswith(_FORBIDDEN_ENVIRONMENT_PREFIXES)
    }
    for name, value in (environment or {}).items():
        if name.upper().startswith(_FORBIDDEN_ENVIRONMENT_PREFIXES):
            raise ValueError(f"training environment: {name!r} is reserved (Airflow's variables, SM_* contract)")
        env[name] = value
    return env


@lru_cache(maxsize=1)
def local_gpu_count() -> int:
    """:func:`container.gpu_count`, asked once per process (``nvidia-smi`` is slow to answer)."""
    return container.gpu_count()


_START_TIMEOUT_SECONDS = 60.0


def _is_uri(location: str) -> bool:
    return bool(urlsplit(str(location)).scheme)


def _marker(record: dict[str, Any]) -> bytes:
    """What marks the job's processes: its token; records from before tokens carry only the job name."""
    if token := record.get("process_token"):
        return supervisor.token_marker(token)
    return f"SM_TRAINING_JOB_NAME={record['job_name']}".encode()


def _runner_running(record: dict[str, Any]) -> bool:
    """Whether the job's runner still runs (its pid alive *and* carrying the job's marker: pids recycle)."""
    pid = record.get("pid")
    if not pid or not supervisor.is_running(pid):
        return False
    return supervisor.environ_has(pid, _marker(record)) is not False  # unreadable (another user): trust the pid


class LocalTrainingBackend(TrainingBackend):
    """Train in a local subprocess.

    :param jobs_dir: where job records, models and logs live (default ``<state dir>/jobs``).
    :param python: interpreter for the training script (default: this one); point it at a separate
        training environment to keep training dependencies apart from Airflow's.
    :param pass_environment: names of worker environment variables the script may see besides
        :data:`BASE_ENVIRONMENT_NAMES` (the spec's ``training.environment``).
    :param environment: variables set for the script (the spec's ``training.env``).
    """

    name = "local"

    def __init__(
        self,
        jobs_dir: str | os.PathLike | None = None,
        python: str | None = None,
        pass_environment: list[str] | None = None,
        environment: dict[str, str] | None = None,
    ):
        if jobs_dir is None:
            jobs_dir = state_dir() / "jobs"
        self.jobs_dir = Path(jobs_dir)
        self.python = python or sys.executable
        self.pass_environment = list(pass_environment or [])
        self.environment = dict(environment or {})
        self._procs: dict[str, subprocess.Popen] = {}

    def config(self) -> dict[str, Any]:
        return {"jobs_dir": str(self.jobs_dir), "python": self.python}

    def _dir(self, job_name: str) -> Path:
        return self.jobs_dir / job_name

    def _record(self, job_name: str) -> dict[str, Any]:
        try:
            return json.loads((self._dir(job_name) / "job.json").read_text())
        except FileNotFoundError:
            raise TrainingJobNotFound(f"no local training job {job_name!r} in {self.jobs_dir}") from None

    def submit(self, request: TrainingJobRequest) -> TrainingJob:
        job_dir = self._dir(request.job_name)
        gpus = local_gpu_count()
        if request.gpu == "required" and gpus == 0:
            raise RuntimeError(f"training job {request.job_name}: resources.gpu is 'required' but no GPU is visible")
        entry = Path(request.entry_point)
        if not entry.is_file():
            raise FileNotFoundError(f"training job {request.job_name}: entry point {entry} does not exist")
        for key, value in request.hyperparameters.items():
            # Checked before anything exists: a job that cannot start must not leave a record to wait on.
            if not isinstance(key, str) or not key.isidentifier() or not key.isascii():
                raise ValueError(f"training job {request.job_name}: hyperparameter {key!r} is not a valid identifier")
            if "\0" in (value if isinstance(value, str) else json.dumps(value)):
                raise ValueError(f"training job {request.job_name}: hyperparameter {key!r} contains a NUL byte")
        for channel, location in request.channels.items():
            if not _is_uri(location) and not Path(location).exists():
                raise FileNotFoundError(f"training job {request.job_name}: channel {channel!r} path {location} missing")
        base_env = training_environment(os.environ, self.pass_environment, self.environment)
        try:
            job_dir.mkdir(parents=True)
        except FileExistsError:
            raise TrainingJobExists(f"local training job {request.job_name!r} already exists") from None

        container.make_layout(job_dir)
        (job_dir / "work").mkdir(exist_ok=True)
        try:
            channel_dirs = self._stage_channels(request, job_dir)
        except Exception:
            shutil.rmtree(job_dir, ignore_errors=True)  # no half-made job for a retry to trip over
            raise
        hps = dict(request.hyperparameters)
        token = supervisor.new_token()
        hosts = container.host_names(request.instance_count)
        channels = {name: channel_dirs[name] for name in sorted(channel_dirs)}
        # The script gets no Airflow, registry or warehouse credentials: like a container, it sees only
        # its channels and an allow-listed environment. The environment is handed to the runner, never
        # written into the job record. The runner gives each host its own SM_CURRENT_HOST.
        env = base_env
        env.update(
            container.environment(
                job_dir,
                job_name=request.job_name,
                hosts=hosts,
                current_host=hosts[0],
                channels=channels,
                hyperparameters=hps,
                instance_type=request.instance_type or "",
                num_gpus=0 if request.gpu == "none" else gpus,
            )
        )
        env[supervisor.JOB_TOKEN_VAR] = token
        if request.gpu == "none":
            env["CUDA_VISIBLE_DEVICES"] = ""
        container.write_config(
            job_dir,
            hps,
            container.input_data_config(list(channels)),
            container.resource_config(hosts, hosts[0], request.instance_type or ""),
        )

        now = time.time()
        record = {
            "job_name": request.job_name,
            "entry_point": str(entry.resolve()),
            "python": self.python,
            "channels": request.channels,
            "hyperparameters": hps,
            "instance_type": request.instance_type,
            "instance_count": request.instance_count,
            "max_runtime_seconds": request.max_runtime_seconds,
            "gpu": request.gpu,
            "gpus_visible": 0 if request.gpu == "none" else gpus,
            "tags": request.tags,
            "created_at": now,
            # Names only (values never reach the record): the runner hands the script exactly these.
            "environment_names": sorted(env),
            # Marks every process of the job (not a secret): how stop and the sweep find them all.
            "process_token": token,
        }
        (job_dir / "job.json").write_text(json.dumps(record, indent=2))
        proc = subprocess.Popen(
            [self.python, str(_RUNNER), str(job_dir)],
            stdin=subprocess.DEVNULL,
            stdout=open(job_dir / "runner.log", "ab"),  # noqa: SIM115 - handed to the child
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the worker; stopped by stop()/teardown, never orphaned untagged
            close_fds=True,
            env=env,
        )
        self._procs[request.job_name] = proc
        record.update({"pid": proc.pid, "started_at": time.time()})
        tmp = job_dir / "job.json.tmp"
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, job_dir / "job.json")
        return self.describe(request.job_name)

    @staticmethod
    def _stage_channels(request: TrainingJobRequest, job_dir: Path) -> dict[str, Path]:
        """Download URI channels into the job's ``input/data/<channel>`` (as a container gets them)."""
        from airflow_retrain.artifacts import ArtifactNotFound, artifact_path, download

        staged = {}
        for channel, location in request.channels.items():
            if not _is_uri(location):
                staged[channel] = Path(location)
                continue
            try:
                source = artifact_path(location, request.artifact_conn_id)
                staged[channel] = download(source, job_dir / "input" / "data" / channel)
            except ArtifactNotFound:
                raise FileNotFoundError(
                    f"training job {request.job_name}: channel {channel!r} {location} does not exist"
                ) from None
        return staged

    def describe(self, job_name: str) -> TrainingJob:
        record = self._record(job_name)
        job_dir = self._dir(job_name)
        result_path = job_dir / "result.json"
        if proc := self._procs.get(job_name):
            proc.poll()  # reap our own child so it never looks alive as a zombie
        result = json.loads(result_path.read_text()) if result_path.exists() else None
        pid = record.get("pid")
        started = record.get("started_at")
        ended = None
        reason = None
        if result is not None and not (pid and _runner_running(record)):
            # Terminal only once the runner is gone too: it writes the result just before it exits, and a
            # job is never reported ended while a process carrying its token still runs.
            state = JobState(result["state"])
            ended = result["ended_at"]
            reason = result.get("reason")
        elif pid is None:
            # The submitting worker died between writing the record and starting the runner.
            if (job_dir / "stop_requested").exists():
                state, reason = JobState.STOPPED, "stopped before it started"
            elif time.time() - record["created_at"] > _START_TIMEOUT_SECONDS:
                state, reason = JobState.FAILED, "never started (the submitting worker died)"
            else:
                state = JobState.PENDING
        elif _runner_running(record):
            state = JobState.STOPPING if (job_dir / "stop_requested").exists() else JobState.RUNNING
        else:
            # Read again: a runner that wrote its result and exited between the first read and the liveness
            # check is a finished job, not an orphan (settling it would overwrite a real result).
            result = json.loads(result_path.read_text()) if result_path.exists() else self._settle_orphaned(record)
            state, ended, reason = JobState(result["state"]), result["ended_at"], result.get("reason")
        billable = 0.0
        if started:
            billable = max(0.0, (ended or time.time()) - started)
        return TrainingJob(
            job_name=job_name,
            backend=self.name,
            state=state,
            instance_type=record["instance_type"],
            instance_count=record["instance_count"],
            created_at=record["created_at"],
            started_at=started,
            ended_at=ended,
            billable_seconds=round(billable, 3),
            failure_reason=reason,
            tags=record["tags"],
            details={
                "pid": pid,
                "job_dir": str(job_dir),
                "gpus_visible": record.get("gpus_visible", 0),
                **({"hosts": result["hosts"]} if result and result.get("hosts") else {}),
            },
        )

    def _settle_orphaned(self, record: dict[str, Any]) -> dict[str, Any]:
        """The runner died without a result (kill -9, machine restart): end what it left, record the end.

        Nothing supervises those processes any more and a retry would train beside them, so they are
        ended here, once: the result written afterwards makes the job terminal for every later reader.
        """
        job_dir = self._dir(record["job_name"])
        stop_file = job_dir / "stop_requested"
        left = supervisor.kill_job(_marker(record), grace_seconds=2.0)
        if stop_file.exists():
            state, reason, ended = "Stopped", "stopped by request (killed)", stop_file.stat().st_mtime
        else:
            state, reason, ended = "Failed", "local runner died without a result (machine restart or kill -9)", time.time()
        result = {"exit_code": None, "state": state, "reason": reason, "ended_at": ended, "ended_leftovers": left}
        tmp = job_dir / f"result.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, job_dir / "result.json")
        return result

    def kill_processes(self, job_name: str, grace_seconds: float = 5.0) -> list[int]:
        """End every process of the job that still runs (the runner, the script, whatever they started)."""
        return supervisor.kill_job(_marker(self._record(job_name)), grace_seconds=grace_seconds)

    def stop(self, job_name: str, grace_seconds: float = 15.0) -> TrainingJob:
        job = self.describe(job_name)
        if job.state.terminal:
            return job
        job_dir = self._dir(job_name)
        (job_dir / "stop_requested").write_text(str(time.time()))
        pid = job.details.get("pid")
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)  # the runner forwards it and records the stop
            except ProcessLookupError:
                pass
            deadline = time.time() + grace_seconds
            while time.time() < deadline and not self.describe(job_name).state.terminal:
                time.sleep(0.2)
            # Whatever ignored the runner, or outlived it (loaders, ranks, setsid'd children), dies too.
            self.kill_processes(job_name, grace_seconds=2.0)
        return self.describe(job_name)

    def find_jobs(self, tags: dict[str, str]) -> list[TrainingJob]:
        jobs = []
        if not self.jobs_dir.is_dir():
            return jobs
        for record_path in self.jobs_dir.glob("*/job.json"):
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError):
                continue
            if all(record.get("tags", {}).get(k) == v for k, v in tags.items()):
                jobs.append(self.describe(record["job_name"]))
        return sorted(jobs, key=lambda j: j.created_at or 0)

    def fetch_outputs(self, job_name: str, destination: ObjectStoragePath) -> TrainingOutputs:
        """Upload ``<job>/model`` and ``<job>/output/data`` to ``destination/model`` and ``destination/output``."""
        from airflow_retrain.artifacts import upload

        job = self.describe(job_name)
        if job.state != JobState.COMPLETED:
            raise RuntimeError(f"training job {job_name} is {job.state.value}, not Completed: no outputs")
        job_dir = self._dir(job_name)
        model, output = job_dir / "model", job_dir / "output" / "data"
        if not model.is_dir() or not output.is_dir():
            raise TrainingOutputsMissing(
                f"training job {job_name} completed, but its outputs in {job_dir} were cleaned up"
            )
        return TrainingOutputs(
            model_uri=upload(model, destination / "model"), output_uri=upload(output, destination / "output")
        )

    def read_logs(self, job_name: str, offset: int = 0) -> tuple[str, int]:
        path = self._dir(job_name) / "log.txt"
        if not path.exists():
            return "", offset
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        return data.decode(errors="replace"), offset + len(data)

    def cleanup(self, job_name: str) -> list[str]:
        job_dir = self._dir(job_name)
        if self.describe(job_name).state.terminal:
            self.kill_processes(job_name)  # stragglers of a finished job hold no GPU after teardown
        removed = []
        for sub in ("model", "work", "input"):
            path = job_dir / sub
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
        return removed

    def remove(self, job_name: str) -> str:
        """Delete an ended job's folder: record, logs and scratch (the sweep's retention does this)."""
        job = self.describe(job_name)
        if not job.state.terminal:
            raise RuntimeError(f"local training job {job_name} is {job.state.value}: stop it before removing it")
        self.kill_processes(job_name)
        job_dir = self._dir(job_name)
        shutil.rmtree(job_dir, ignore_errors=True)
        return str(job_dir)

    def log_location(self, job_name: str) -> str | None:
        return str(self._dir(job_name) / "log.txt")
