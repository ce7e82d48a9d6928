"""Runs one local training job under the SageMaker training-container contract.

Started by :class:`~airflow_retrain.training.local.LocalTrainingBackend` as
``python local_runner.py JOB_DIR`` in its own session, so a job outlives a crashed worker and a retry can
reattach to it. Standard library only, and run by file path: the training interpreter need not have
airflow_retrain (or Airflow) installed, exactly like a SageMaker container.

``instance_count`` N > 1 emulates N hosts on loopback: N processes of the script, each with
``SM_HOSTS=["algo-1", ..., "algo-N"]``, its own ``SM_CURRENT_HOST`` and the first host's collective tracker
at ``RETRAIN_TRACKER_HOST``/``RETRAIN_TRACKER_PORT`` (a free loopback port). One host failing fails the
job and stops the others, as on SageMaker. Per-host timings are in ``result.json`` (``hosts``).

It writes ``result.json`` (exit code, state, reason, end time) atomically when the script ends, is
stopped (SIGTERM, forwarded to the script) or exceeds its maximum runtime -- and only after every process
the job started is gone: the runner is the job's subreaper and ends whatever is left (daemons, children
that called ``setsid``) through :mod:`supervisor` (the sibling file), as a container's end would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

KILL_GRACE_SECONDS = 10.0
#: How long what is left of the job after the script ended (daemons, escaped children) gets after SIGTERM.
LEFTOVER_GRACE_SECONDS = 5.0
_REAP_EVERY_SECONDS = 2.0


def _load_supervisor():
    """The sibling ``supervisor.py``, by path: this interpreter need not have airflow_retrain installed."""
    spec = importlib.util.spec_from_file_location("_retrain_supervisor", Path(__file__).with_name("supervisor.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


supervisor = _load_supervisor()


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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(job_dir: str) -> int:
    job_path = Path(job_dir)
    job = json.loads((job_path / "job.json").read_text())
    log_path = job_path / "log.txt"
    argv = [job["python"], job["entry_point"]]
    for key, value in job["hyperparameters"].items():
        argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]

    stop = {"signal": None}
    count = max(1, int(job.get("instance_count") or 1))
    hosts = [f"algo-{i + 1}" for i in range(count)]
    started = time.time()
    # Orphans of the job (a setsid'd child whose parent exited) re-parent to the runner, not to init.
    subreaper = supervisor.become_subreaper()
    token = os.environ.get(supervisor.JOB_TOKEN_VAR)
    marker = supervisor.token_marker(token) if token else None

    with open(log_path, "ab", buffering=0) as log:
        if not subreaper:
            log.write(b"[local-runner] cannot become a subreaper; escaped children are found by their token only\n")
        # The runner's own environment is already the allow-listed one the backend built (contract, PATH,
        # locale, threads, what the spec names); the script gets exactly that, nothing of the worker's.
        procs: list[subprocess.Popen] = []
        tracker_port = _free_port() if count > 1 else None
        for host in hosts:
            # The allow-list the backend chose, by name; anything else in the runner's environment stays out.
            env = {name: os.environ[name] for name in job.get("environment_names", ()) if name in os.environ}
            if count > 1:
                env.update(
                    {
                        "SM_HOSTS": json.dumps(hosts),
                        "SM_CURRENT_HOST": host,
                        "RETRAIN_TRACKER_HOST": "127.0.0.1",
                        "RETRAIN_TRACKER_PORT": str(tracker_port),
                    }
                )
                log.write(f"[local-runner] starting host {host} of {count}\n".encode())
            work = job_path / "work" / (host if count > 1 else "")
            work.mkdir(parents=True, exist_ok=True)
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work))
        ended: dict[str, float] = {}

        def _forward(signum, _frame):
            stop["signal"] = signum
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()

        signal.signal(signal.SIGTERM, _forward)
        signal.signal(signal.SIGINT, _forward)
        deadline = time.time() + job["max_runtime_seconds"]
        timed_out = False
        failed_host: str | None = None
        terminated_at = None
        reaped_at = time.monotonic()
        while any(proc.poll() is None for proc in procs):
            now = time.time()
            if time.monotonic() - reaped_at > _REAP_EVERY_SECONDS:
                supervisor.reap_orphans(keep=[proc.pid for proc in procs])
                reaped_at = time.monotonic()
            for host, proc in zip(hosts, procs, strict=True):
                code = proc.poll()
                if code is not None and host not in ended:
                    ended[host] = now
                    if code != 0 and failed_host is None and stop["signal"] is None:
                        # One host failing fails the job: the others would wait on it in every all-reduce.
                        failed_host = host
                        log.write(f"\n[local-runner] host {host} exited with {code}; stopping the other hosts\n".encode())
                        for other in procs:
                            if other.poll() is None:
                                other.terminate()
            if now > deadline and not timed_out:
                timed_out = True
                log.write(f"\n[local-runner] MaxRuntimeExceeded after {job['max_runtime_seconds']} s\n".encode())
                for proc in procs:
                    if proc.poll() is None:
                        proc.terminate()
            if (timed_out or stop["signal"] is not None or failed_host) and terminated_at is None:
                terminated_at = now
            if terminated_at is not None and now - terminated_at > KILL_GRACE_SECONDS:
                # The script ignored SIGTERM: like SageMaker after its grace period, kill it.
                log.write(b"\n[local-runner] script did not stop after SIGTERM; killing it\n")
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                terminated_at = float("inf")
            time.sleep(0.2)
        now = time.time()
        for host in hosts:
            ended.setdefault(host, now)
        # The script is gone; whatever it started is not the job's output, and holds memory or a GPU.
        left = supervisor.kill_job(
            marker, roots=[os.getpid()], grace_seconds=LEFTOVER_GRACE_SECONDS, keep_reaping=[p.pid for p in procs]
        )
        if left:
            log.write(f"[local-runner] ended {len(left)} process(es) the script left running: {left}\n".encode())
        codes = [proc.returncode for proc in procs]
        if failed_host is not None:
            code = codes[hosts.index(failed_host)]
        else:
            code = next((c for c in codes if c != 0), 0)

    if stop["signal"] is not None:
        state, reason = "Stopped", f"stopped by request (signal {stop['signal']})"
    elif timed_out:
        state, reason = "Failed", f"MaxRuntimeExceeded: ran over {job['max_runtime_seconds']} s"
    elif code == 0:
        state, reason = "Completed", None
    else:
        where = f"host {failed_host} " if count > 1 and failed_host else ""
        state, reason = "Failed", f"AlgorithmError: {where}exit code {code}: {_failure_text(job_path, log_path)}"
    _write_json(
        job_path / "result.json",
        {
            "exit_code": code,
            "state": state,
            "reason": reason,
            "ended_at": time.time(),
            "hosts": {h: {"exit_code": c, "seconds": round(ended[h] - started, 3)} for h, c in zip(hosts, codes, strict=True)},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
