"""Runs one local training job under the SageMaker training-container contract.

Started by :class:`~airflow_retrain.training.local.LocalTrainingBackend` as
``python local_runner.py JOB_DIR`` in its own session, so a job outlives a crashed worker and a retry can
reattach to it. Standard library only, and run by file path: the training interpreter need not have
airflow_retrain (or Airflow) installed, exactly like a SageMaker container.

``instance_count`` N > 1 emulates N hosts on loopback: N processes of the script, each with
``SM_HOSTS=["algo-1", ..., "algo-N"]``, its own ``SM_CURRENT_HOST`` and the first host's collective tracker
at ``RETRAIN_TRACKER_HOST``/``RETRAIN_TRACKER_PORT`` (a free loopback port). One host failing fails the
job and stops the others, as on SageMaker. Per-host timings are in ``result.json`` (``hosts``).

The container (environment, config files) comes from :mod:`container` and the hosts run through
:func:`supervisor.run_hosts`, the same code the fake clouds run their jobs with.

It writes ``result.json`` (exit code, state, reason, end time) atomically when the script ends, is
stopped (SIGTERM, forwarded to the script) or exceeds its maximum runtime -- and only after every process
the job started is gone: the runner is the job's subreaper and ends whatever is left (daemons, children
that called ``setsid``) through :mod:`supervisor` (the sibling file), as a container's end would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

KILL_GRACE_SECONDS = 10.0
#: How long what is left of the job after the script ended (daemons, escaped children) gets after SIGTERM.
LEFTOVER_GRACE_SECONDS = 5.0


def _load(name: str):
    """A sibling module (``supervisor.py``, ``container.py``) by path: this interpreter need not have
    airflow_retrain installed."""
    spec = importlib.util.spec_from_file_location(f"_retrain_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


supervisor = _load("supervisor")
container = _load("container")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _failure_text(job_dir: Path, log_path: Path) -> str:
    failure = job_dir / "output" / "failure"
    if failure.is_file() and failure.read_text().strip():
        return failure.read_text().strip()[-1000:]
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()] if log_path.exists() else []
    return " | ".join(lines[-3:])[-1000:] or "no output"


def _hosts(job_path: Path, job: dict, log) -> list:
    """One :class:`supervisor.Host` per emulated instance, each with its own ``SM_CURRENT_HOST``."""
    argv = [job["python"], job["entry_point"], *container.hyperparameter_args(job["hyperparameters"])]
    names = container.host_names(job.get("instance_count") or 1)
    tracker = ("127.0.0.1", container.free_port()) if len(names) > 1 else None
    # The allow-list the backend chose, by name; anything else in the runner's environment stays out.
    base = {name: os.environ[name] for name in job.get("environment_names", ()) if name in os.environ}
    hosts = []
    for name in names:
        work = job_path / "work" / (name if len(names) > 1 else "")
        work.mkdir(parents=True, exist_ok=True)
        config_dir = None
        if len(names) > 1:
            # Each host reads its own resourceconfig.json (current_host differs), as on SageMaker.
            config_dir = job_path / "hosts" / name / "config"
            shutil.copytree(job_path / "input" / "config", config_dir, dirs_exist_ok=True)
            log.write(f"[local-runner] starting host {name} of {len(names)}\n".encode())
        env = container.host_environment(
            base, hosts=names, current_host=name, instance_type=job.get("instance_type") or "", tracker=tracker,
            config_dir=config_dir,
        )
        hosts.append(supervisor.Host(name, argv, env, str(work), stdout=log))
    return hosts


def main(job_dir: str) -> int:
    job_path = Path(job_dir)
    job = json.loads((job_path / "job.json").read_text())
    log_path = job_path / "log.txt"
    stop = {"signal": None}

    def _stop_requested(signum, _frame):
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, _stop_requested)
    signal.signal(signal.SIGINT, _stop_requested)
    # Orphans of the job (a setsid'd child whose parent exited) re-parent to the runner, not to init.
    subreaper = supervisor.become_subreaper()
    token = os.environ.get(supervisor.JOB_TOKEN_VAR)
    marker = supervisor.token_marker(token) if token else None

    with open(log_path, "ab", buffering=0) as log:
        if not subreaper:
            log.write(b"[local-runner] cannot become a subreaper; escaped children are found by their token only\n")
        hosts = _hosts(job_path, job, log)
        outcome = supervisor.run_hosts(
            hosts,
            marker=marker,
            max_runtime_seconds=job["max_runtime_seconds"],
            grace_seconds=KILL_GRACE_SECONDS,
            leftover_grace_seconds=LEFTOVER_GRACE_SECONDS,
            should_stop=lambda: (f"signal {stop['signal']}", KILL_GRACE_SECONDS) if stop["signal"] else None,
            on_event=lambda message: log.write(f"\n[local-runner] {message}\n".encode()),
            subreaper=subreaper,
            roots=[os.getpid()],
        )
        if outcome.leftovers:
            log.write(
                f"[local-runner] ended {len(outcome.leftovers)} process(es) the script left running: "
                f"{outcome.leftovers}\n".encode()
            )

    code = outcome.exit_code
    if outcome.stopped is not None:
        state, reason = "Stopped", f"stopped by request ({outcome.stopped})"
    elif outcome.timed_out:
        state, reason = "Failed", f"MaxRuntimeExceeded: ran over {job['max_runtime_seconds']} s"
    elif code == 0:
        state, reason = "Completed", None
    else:
        where = f"host {outcome.failed_host} " if len(hosts) > 1 and outcome.failed_host else ""
        state, reason = "Failed", f"AlgorithmError: {where}exit code {code}: {_failure_text(job_path, log_path)}"
    _write_json(
        job_path / "result.json",
        {
            "exit_code": code,
            "state": state,
            "reason": reason,
            "ended_at": time.time(),
            "hosts": {h.name: {"exit_code": outcome.codes[h.name], "seconds": outcome.seconds[h.name]} for h in hosts},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
