"""Helpers shared by the tests that drive real subprocesses."""

from __future__ import annotations

import time
from pathlib import Path


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def stop_running_jobs(backend) -> None:
    """Never leave a job running behind a failed test."""
    for job in backend.find_jobs({}):
        if not job.state.terminal:
            backend.stop(job.job_name, grace_seconds=2)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone: it has exited and only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
