"""This machine's resources for the sweep: local-backend training jobs and orphaned GPU processes.

**Local training jobs** (:class:`~airflow_retrain.training.local.LocalTrainingBackend` records) that still
run are findings when their TTL tag passed, when they ran past their maximum runtime, or when *their DAG
run has ended*: a run whose worker was killed never runs its teardown, so its job would train on. Tasks
may not read Airflow's database, so "run ended" comes from two honest signals: the run's report (the
``report`` teardown task writes ``<run>/report.json`` to the artifact store as the run's last act), and,
inside a task, the Task SDK's ``get_dagrun_state`` for the run id the run recorded in ``<run>/run.json``
(the deployment's artifact store, ``RETRAIN_ARTIFACT_ROOT``; a pipeline with its own ``artifacts.root``
is judged by its TTL alone). Outside a task (CLI, tests) a ``run_state`` callable can be given instead.

**GPU processes** come from ``nvidia-smi --query-compute-apps`` (skipped, with a note, where it is
absent). A process started by a local job carries ``SM_TRAINING_JOB_NAME`` in its environment: while that
job runs, the process is the job's and is left alone; once the job ended, the process is an orphan of
this package (tagged with the job's tags, so in scope). Any other GPU process is untagged: in scope only
with ``scope: all``, and the default action for the kind is ``report``.

**Ended jobs** are kept tidy on every sweep, without marks (nothing of theirs bills or is anyone's):
processes an ended job left behind (its runner was SIGKILLed, a child escaped with ``setsid``) are ended at
once through the one kill path (:func:`airflow_retrain.training.supervisor.kill_job`); the job's scratch
(``model``, ``input``, ``work``) goes once its DAG run has ended; its whole folder -- record and logs too --
``local.retention`` after it ended (default 7 days). A dry run only notes what it would do.

Marks and claims of local resources live in ``<state dir>/teardown/marks/``; a claim is created with
``O_EXCL``, so two sweeps on one machine can never both hold it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow_retrain.config import state_dir
from airflow_retrain.teardown.base import Clock, Finding, Inventory, Resource, ResourceGone, ttl_expired
from airflow_retrain.teardown.marks import FileMarks, safe_name
from airflow_retrain.training.base import TrainingJobNotFound

RunState = Callable[[str, str], str | None]
_ENDED_RUN_STATES = {"success", "failed"}
NVIDIA_SMI_QUERY = ["--query-compute-apps=pid,process_name,used_memory", "--format=csv"]


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    process_name: str
    used_memory_mib: float | None


def parse_compute_apps(text: str) -> list[GpuProcess]:
    """Parse ``nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv``.

    Tolerates the header, ``[N/A]`` memory, units (``1024 MiB``) and the "No running processes found" line.
    """
    processes = []
    for row in csv.reader(io.StringIO(text)):
        cells = [c.strip() for c in row]
        if len(cells) < 3 or not cells[0].isdigit():
            continue  # the header, blank lines, messages
        memory = re.match(r"^(\d+(?:\.\d+)?)", cells[2])
        processes.append(GpuProcess(int(cells[0]), ",".join(cells[1:-1]), float(memory.group(1)) if memory else None))
    return processes


def task_sdk_run_state(dag_id: str, run_id: str) -> str | None:
    """The DAG run's state through the Task SDK (inside a running task only); ``None`` elsewhere."""
    from airflow.sdk.execution_time import task_runner

    if getattr(task_runner, "SUPERVISOR_COMMS", None) is None:
        return None
    state = task_runner.RuntimeTaskInstance.get_dagrun_state(dag_id=dag_id, run_id=run_id)
    return None if state is None else str(getattr(state, "value", state))  # DagRunState.SUCCESS -> "success"


class LocalInventory(Inventory):
    """Local-backend jobs and GPU processes on the machine the sweep runs on.

    :param run_state: ``(dag_id, run_id) -> state`` for "has this run ended"; default: the Task SDK.
    :param state_root: the package's state dir (default: ``RETRAIN_STATE_DIR`` / ``.local``).
    :param dry_run: overrides the policy's ``dry_run`` for tidying ended jobs (as the sweeper's does).
    """

    name = "local"
    kinds = ("local.training_job", "local.gpu_process")

    def __init__(
        self,
        policy: Any,
        clock: Clock | None = None,
        run_state: RunState | None = None,
        state_root: str | os.PathLike | None = None,
        dry_run: bool | None = None,
    ):
        super().__init__(policy, clock)
        self.state_root = Path(state_root) if state_root else state_dir()
        self.run_state = run_state or task_sdk_run_state
        self.dry_run = dry_run
        self.notes: list[str] = []

    @classmethod
    def from_policy(cls, policy: Any, clock: Clock | None = None) -> list[Inventory]:
        return [cls(policy, clock)] if policy.local.enabled else []

    @property
    def location(self) -> str:
        return "local"

    @cached_property
    def backend(self):
        from airflow_retrain.training.local import LocalTrainingBackend

        return LocalTrainingBackend(jobs_dir=self.policy.local.jobs_dir or self.state_root / "jobs")

    @property
    def marks_dir(self) -> Path:
        return self.state_root / "teardown" / "marks"

    @cached_property
    def marks(self) -> FileMarks:
        """Marks and claims of local resources (they have no tags of their own), one file per kind and name."""
        return FileMarks(self.marks_dir, self.policy.tags.claim,
                         stem=lambda resource: f"{safe_name(resource.kind)}--{safe_name(resource.name)}")

    def set_tag(self, resource: Resource, key: str, value: str) -> None:
        # A claim another sweep holds is not ours: the re-read shows it, so the tag is not set here.
        if self.marks.set(resource, key, value):
            resource.tags[key] = value

    def remove_tag(self, resource: Resource, key: str) -> None:
        self.marks.remove(resource, key)
        resource.tags.pop(key, None)

    def forget(self, resource: Resource) -> None:
        """Drop the marks of a resource that is gone."""
        self.marks.tags_path(resource).unlink(missing_ok=True)
        self.marks.claim_path(resource).unlink(missing_ok=True)

    # -- listing -------------------------------------------------------------------------------------
    def _job_resource(self, job) -> Resource:
        resource = Resource(
            kind="local.training_job",
            name=job.job_name,
            location=self.location,
            state=job.state.value,
            tags=dict(job.tags),
            started_at=job.started_at or job.created_at,
            backend="local",
            instance_type=job.instance_type,
            instance_count=job.instance_count,
            details={"pid": job.details.get("pid"), "gpus": job.details.get("gpus_visible", 0)},
        )
        resource.tags.update(self.marks.read(resource))
        return resource

    def _live_jobs(self) -> list:
        jobs = self.backend.find_jobs({})
        self._tidy_ended([job for job in jobs if job.state.terminal])
        return [job for job in jobs if not job.state.terminal]

    def _tidy_ended(self, ended: list) -> None:
        """End what ended jobs left running; remove their scratch once their run ended; remove their folder
        after ``local.retention``. Outcomes go to :attr:`notes` (they need no mark: nothing of theirs is live).
        """
        if not ended:
            return
        from airflow_retrain.training import supervisor

        dry_run = self.policy.dry_run if self.dry_run is None else self.dry_run
        now, retention = self.clock(), self.policy.local.retention
        in_use = supervisor.tokens_in_use()  # one scan of /proc for every job
        for job in ended:
            name = job.job_name
            try:
                token = json.loads((self.backend.jobs_dir / name / "job.json").read_text()).get("process_token")
            except (OSError, ValueError):
                token = None
            if token and (pids := in_use.get(token)):
                if dry_run:
                    self.notes.append(f"ended job {name}: would end {len(pids)} process(es) it left running {pids}")
                else:
                    killed = self.backend.kill_processes(name)
                    self.notes.append(f"ended job {name}: ended {len(killed)} process(es) it left running {killed}")
            ended_at = job.ended_at or job.created_at or now
            if now - ended_at >= retention:
                age = f"ended {(now - ended_at) / 86400:.1f} d ago, retention {retention / 86400:g} d"
                if dry_run:
                    self.notes.append(f"ended job {name}: would remove its folder ({age})")
                    continue
                try:
                    self.notes.append(f"ended job {name}: removed {self.backend.remove(name)} ({age})")
                except (OSError, RuntimeError, TrainingJobNotFound) as e:
                    self.notes.append(f"ended job {name}: could not remove its folder: {e}")
                continue
            job_dir = self.backend.jobs_dir / name
            if not any((job_dir / sub).exists() for sub in ("model", "input", "work")):
                continue
            run_ended, _ = self._run_ended(job.tags)
            if not run_ended:
                continue  # a retry of a live run may still publish the model from here
            if dry_run:
                self.notes.append(f"ended job {name}: would remove its scratch (its DAG run has ended)")
            else:
                removed = self.backend.cleanup(name)
                self.notes.append(f"ended job {name}: removed its scratch {removed} (its DAG run has ended)")

    def gpu_processes(self) -> list[GpuProcess] | None:
        """GPU compute processes from ``nvidia-smi``, or ``None`` (with a note) where it is absent."""
        smi = shutil.which("nvidia-smi")
        if not smi:
            self.notes.append("nvidia-smi not found: GPU processes not inventoried")
            return None
        try:
            out = subprocess.run([smi, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError) as e:
            self.notes.append(f"nvidia-smi failed ({e}): GPU processes not inventoried")
            return None
        return parse_compute_apps(out.stdout)

    def _drop_stale_marks(self, live_names: set[str]) -> None:
        """Marks of local jobs that ended since (stopped by their own teardown, or finished) go too."""
        prefix = f"{safe_name('local.training_job')}--"
        for path in self.marks_dir.glob(f"{prefix}*") if self.marks_dir.is_dir() else []:
            if path.name.removeprefix(prefix).rsplit(".", 1)[0] not in {safe_name(n) for n in live_names}:
                path.unlink(missing_ok=True)

    def resources(self) -> Iterable[Resource]:
        live = self._live_jobs()
        self._drop_stale_marks({job.job_name for job in live})
        if self.policy.enabled("local.training_job"):
            yield from (self._job_resource(job) for job in live)
        if not (self.policy.enabled("local.gpu_process") and self.policy.local.gpu_processes):
            return
        processes = self.gpu_processes()
        if not processes:
            return
        import psutil

        live_names = {job.job_name for job in live}
        for gpu in processes:
            try:
                proc = psutil.Process(gpu.pid)
                started = proc.create_time()
                try:
                    job_name = proc.environ().get("SM_TRAINING_JOB_NAME")
                except (psutil.AccessDenied, psutil.ZombieProcess):
                    job_name = None
            except psutil.NoSuchProcess:
                continue
            if job_name in live_names:
                continue  # belongs to a live job
            tags: dict[str, str] = {}
            if job_name:
                try:
                    tags = dict(self.backend.describe(job_name).tags)
                except TrainingJobNotFound:
                    pass
                tags["retrain:job"] = job_name
            resource = Resource(
                kind="local.gpu_process",
                name=f"pid-{gpu.pid}-{int(started)}",
                location=self.location,
                state="running",
                tags=tags,
                started_at=started,
                backend="local",
                instance_type="local",
                details={"pid": gpu.pid, "process_name": gpu.process_name, "used_memory_mib": gpu.used_memory_mib, "job": job_name},
            )
            resource.tags.update(self.marks.read(resource))
            yield resource

    # -- judging -------------------------------------------------------------------------------------
    def _run_record(self, dag_id: str, run_key: str, name: str) -> tuple[dict[str, Any] | None, str]:
        """A JSON record of the run (``run.json``, ``report.json``) from the deployment's artifact store."""
        try:
            from airflow_retrain import artifacts

            path = artifacts.ArtifactStore.resolve().run_path(dag_id, run_key) / name
            return artifacts.read_json(path), artifacts.to_uri(path)
        except Exception:  # noqa: BLE001 - no record (or no store) is "unknown", never "ended"
            return None, ""

    def _run_ended(self, tags: dict[str, str]) -> tuple[bool, dict[str, Any]]:
        dag_id, run_key = tags.get("retrain:dag-id"), tags.get("retrain:run-key")
        if not dag_id or not run_key:
            return False, {}
        report, uri = self._run_record(dag_id, run_key, "report.json")
        if report is not None:
            return True, {"run_report": uri}
        run, _ = self._run_record(dag_id, run_key, "run.json")
        if not run or not run.get("run_id"):
            return False, {"run_state": "unknown (no run record)"}
        run_id = str(run["run_id"])
        try:
            state = self.run_state(dag_id, run_id)
        except Exception as e:  # noqa: BLE001 - no answer is "unknown", never "ended"
            state = None
            self.notes.append(f"could not read the state of DAG run {dag_id}/{run_id}: {type(e).__name__}: {e}")
        evidence = {"run_id": run_id, "run_state": state or "unknown"}
        return (state in _ENDED_RUN_STATES), evidence

    def assess(self, resources: list[Resource], refreshed: bool = False) -> dict[str, Finding]:
        now = self.clock()
        findings = {}
        for resource in resources:
            expired, evidence = ttl_expired(resource.tags, self.policy.tags.ttl, now)
            evidence["uptime_seconds"] = round(resource.uptime(now))
            if resource.kind == "local.gpu_process":
                evidence.update({k: resource.details.get(k) for k in ("pid", "process_name", "used_memory_mib", "job")})
                why = f"its job {resource.details['job']} is not running" if resource.details.get("job") else "started by no job of this package"
                findings[resource.key] = Finding(True, f"GPU process that belongs to no live job ({why})", evidence)
                continue
            ended, run_evidence = self._run_ended(resource.tags)
            evidence.update(run_evidence)
            limit = self.policy.kind(resource.kind).max_runtime
            if expired:
                findings[resource.key] = Finding(True, "past its TTL", evidence)
            elif ended:
                findings[resource.key] = Finding(True, "its DAG run has ended (teardown never stopped it)", evidence)
            elif limit and resource.uptime(now) > limit:
                findings[resource.key] = Finding(True, "running longer than its maximum runtime", evidence)
            else:
                findings[resource.key] = Finding(False, "its run is live and within its TTL", evidence)
        return findings

    def refresh(self, resource: Resource) -> Resource:
        if resource.kind == "local.gpu_process":
            import psutil

            try:
                proc = psutil.Process(resource.details["pid"])
                if int(proc.create_time()) != int(resource.started_at or 0) or not proc.is_running():
                    raise ResourceGone(f"process {resource.details['pid']} has exited")
            except psutil.NoSuchProcess:
                raise ResourceGone(f"process {resource.details['pid']} has exited") from None
            fresh = Resource(**{**resource.to_dict(), "details": dict(resource.details)})
            fresh.tags = {**{k: v for k, v in resource.tags.items() if not k.startswith("retrain:teardown")}, **self.marks.read(resource)}
            return fresh
        try:
            job = self.backend.describe(resource.name)
        except TrainingJobNotFound:
            raise ResourceGone(f"local job {resource.name} no longer exists") from None
        if job.state.terminal:
            raise ResourceGone(f"local job {resource.name} is {job.state.value} now")
        return self._job_resource(job)

    def act(self, resource: Resource, action: str) -> str:
        if resource.kind == "local.training_job" and action == "stop":
            job = self.backend.stop(resource.name)
            self.forget(resource)
            return f"stopped local training job ({job.state.value})"
        if resource.kind == "local.gpu_process" and action == "kill":
            from airflow_retrain.training import supervisor

            pid = resource.details["pid"]
            if not supervisor.is_running(pid):
                raise ResourceGone(f"process {pid} has exited")
            # The one kill path: the process and everything it started (a rank's loaders), TERM then KILL.
            killed = supervisor.kill_job(None, roots=[pid], include_roots=True, grace_seconds=10.0)
            self.forget(resource)
            others = len(killed) - 1
            return f"killed GPU process {pid}" + (f" and {others} process(es) it started" if others > 0 else "")
        raise ValueError(f"{resource.kind} has no action {action!r}")
