"""Runs one local training job under the SageMaker training-container contract.

Started by :class:`~airflow_retrain.training.local.LocalTrainingBackend` as
``python local_runner.py JOB_DIR`` in its own session, so a job outlives a crashed worker and a retry can
reattach to it. Standard library only, and run by file path: the training interpreter need not have
airflow_retrain (or Airflow) installed, exactly like a SageMaker container.

It writes ``result.json`` (exit code, state, reason, end time) atomically when the script ends, is
stopped (SIGTERM, forwarded to the script) or exceeds its maximum runtime.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

KILL_GRACE_SECONDS = 10.0


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


def main(job_dir: str) -> int:
    job_path = Path(job_dir)
    job = json.loads((job_path / "job.json").read_text())
    log_path = job_path / "log.txt"
    argv = [job["python"], job["entry_point"]]
    for key, value in job["hyperparameters"].items():
        argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]

    stop = {"signal": None}

    with open(log_path, "ab", buffering=0) as log:
        # The runner's own environment is already the allow-listed one the backend built (contract, PATH,
        # locale, threads, what the spec names); the script gets exactly that, nothing of the worker's.
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), cwd=job_path / "work"
        )

        def _forward(signum, _frame):
            stop["signal"] = signum
            proc.terminate()

        signal.signal(signal.SIGTERM, _forward)
        signal.signal(signal.SIGINT, _forward)
        deadline = time.time() + job["max_runtime_seconds"]
        timed_out = False
        terminated_at = None
        while proc.poll() is None:
            now = time.time()
            if now > deadline and not timed_out:
                timed_out = True
                log.write(f"\n[local-runner] MaxRuntimeExceeded after {job['max_runtime_seconds']} s\n".encode())
                proc.terminate()
            if (timed_out or stop["signal"] is not None) and terminated_at is None:
                terminated_at = now
            if terminated_at is not None and now - terminated_at > KILL_GRACE_SECONDS:
                # The script ignored SIGTERM: like SageMaker after its grace period, kill it.
                log.write(b"\n[local-runner] script did not stop after SIGTERM; killing it\n")
                proc.kill()
                terminated_at = float("inf")
            time.sleep(0.2)
        code = proc.returncode

    if stop["signal"] is not None:
        state, reason = "Stopped", f"stopped by request (signal {stop['signal']})"
    elif timed_out:
        state, reason = "Failed", f"MaxRuntimeExceeded: ran over {job['max_runtime_seconds']} s"
    elif code == 0:
        state, reason = "Completed", None
    else:
        state, reason = "Failed", f"AlgorithmError: exit code {code}: {_failure_text(job_path, log_path)}"
    _write_json(job_path / "result.json", {"exit_code": code, "state": state, "reason": reason, "ended_at": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
