"""LocalTrainingBackend: the embedded default, a subprocess on the worker's machine.

It runs the training script under the same environment contract SageMaker gives a training container
(``SM_CHANNEL_<NAME>``, ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``SM_HPS`` and ``--key value``
hyperparameters, ``SM_NUM_GPUS``), so a script that trains here trains there unchanged. The job runs
in its own session and keeps its record in ``<jobs_dir>/<job_name>/``; any worker on the same machine
can describe, reattach to or stop it.
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
from typing import Any

from airflow_retrain.training.base import (
    JobState,
    TrainingBackend,
    TrainingJob,
    TrainingJobExists,
    TrainingJobNotFound,
    TrainingJobRequest,
    TrainingOutputs,
)

_RUNNER = Path(__file__).with_name("local_runner.py")
_PRIVATE_ENV_PREFIXES = ("AIRFLOW", "SM_", "MLFLOW_", "RETRAIN_PG_", "AWS_", "GOOGLE_", "DBT_ENV_SECRET")


@lru_cache(maxsize=1)
def local_gpu_count() -> int:
    """GPUs ``nvidia-smi`` can see (0 without a driver); the training script picks the device itself."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


_START_TIMEOUT_SECONDS = 60.0


def _job_processes(pgid: int, job_name: str) -> list[int]:
    """Live processes of the job's session (the runner leads it) that carry the job's name.

    Checking the environment as well as the group guards against a recycled process-group id.
    """
    marker = f"SM_TRAINING_JOB_NAME={job_name}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] in ("Z", "X"):
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _kill_job_processes(pgid: int, job_name: str) -> None:
    """SIGKILL whatever is left of the job: the runner, the script and anything the script started."""
    for pid in _job_processes(pgid, job_name):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # "pid (comm) S ..." -- a zombie has exited and only waits to be reaped.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class LocalTrainingBackend(TrainingBackend):
    """Train in a local subprocess.

    :param jobs_dir: where job records, models and logs live (default ``<state dir>/jobs``).
    :param python: interpreter for the training script (default: this one); point it at a separate
        training environment to keep training dependencies apart from Airflow's.
    """

    name = "local"

    def __init__(self, jobs_dir: str | os.PathLike | None = None, python: str | None = None):
        if jobs_dir is None:
            from airflow_retrain.spec import state_dir

            jobs_dir = state_dir() / "jobs"
        self.jobs_dir = Path(jobs_dir)
        self.python = python or sys.executable
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
        for channel, location in request.channels.items():
            if not Path(location).exists():
                raise FileNotFoundError(f"training job {request.job_name}: channel {channel!r} path {location} missing")
        try:
            job_dir.mkdir(parents=True)
        except FileExistsError:
            raise TrainingJobExists(f"local training job {request.job_name!r} already exists") from None

        for sub in ("model", "output/data", "input/config", "work"):
            (job_dir / sub).mkdir(parents=True, exist_ok=True)
        hps = dict(request.hyperparameters)
        # The script gets no Airflow, registry or warehouse credentials: like a container, it sees only
        # its channels. The environment is handed to the runner, never written into the job record.
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_ENV_PREFIXES)}
        env.update(
            {
                "SM_MODEL_DIR": str(job_dir / "model"),
                "SM_OUTPUT_DATA_DIR": str(job_dir / "output" / "data"),
                "SM_OUTPUT_DIR": str(job_dir / "output"),
                "SM_OUTPUT_FAILURE": str(job_dir / "output" / "failure"),
                "SM_INPUT_DIR": str(job_dir / "input"),
                "SM_INPUT_CONFIG_DIR": str(job_dir / "input" / "config"),
                "SM_CHANNELS": json.dumps(sorted(request.channels)),
                "SM_HPS": json.dumps(hps),
                "SM_NUM_GPUS": "0" if request.gpu == "none" else str(gpus),
                "SM_NUM_CPUS": str(os.cpu_count() or 1),
                "SM_CURRENT_HOST": "algo-1",
                "SM_HOSTS": json.dumps(["algo-1"]),
                "SM_TRAINING_JOB_NAME": request.job_name,
                "TRAINING_JOB_NAME": request.job_name,
                "PYTHONUNBUFFERED": "1",
            }
        )
        for channel, location in request.channels.items():
            env[f"SM_CHANNEL_{channel.upper()}"] = str(location)
        for key, value in hps.items():
            env[f"SM_HP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        if request.gpu == "none":
            env["CUDA_VISIBLE_DEVICES"] = ""
        (job_dir / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hps, indent=2))

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
        if result is not None:
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
        elif _pid_running(pid):
            state = JobState.STOPPING if (job_dir / "stop_requested").exists() else JobState.RUNNING
        elif (job_dir / "stop_requested").exists():
            state, reason = JobState.STOPPED, "stopped by request (killed)"
            ended = (job_dir / "stop_requested").stat().st_mtime
        else:
            state, reason = JobState.FAILED, "local runner died without a result (machine restart or kill -9)"
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
            details={"pid": pid, "job_dir": str(job_dir), "gpus_visible": record.get("gpus_visible", 0)},
        )

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
            _kill_job_processes(pid, job_name)  # what the script started (loaders, ranks) dies too
            time.sleep(0.1)
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

    def fetch_outputs(self, job_name: str, destination: Path | None = None) -> TrainingOutputs:
        job = self.describe(job_name)
        if job.state != JobState.COMPLETED:
            raise RuntimeError(f"training job {job_name} is {job.state.value}, not Completed: no outputs")
        job_dir = self._dir(job_name)
        return TrainingOutputs(model_dir=job_dir / "model", output_dir=job_dir / "output" / "data")

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
        if (pid := self._record(job_name).get("pid")) and self.describe(job_name).state.terminal:
            _kill_job_processes(pid, job_name)  # stragglers of a finished job hold no GPU after teardown
        removed = []
        for sub in ("model", "work", "input"):
            path = job_dir / sub
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
        return removed
