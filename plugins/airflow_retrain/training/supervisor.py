"""One way to find and end every process a job started, even those that left its session.

A training script's workers may call ``setsid`` (``subprocess.Popen(..., start_new_session=True)``, a
daemonising grandchild): they leave the job's process group, so ``killpg`` misses them, and when their
parent exits they re-parent away from the job. Two things keep them findable:

* **A token in the environment.** The job's supervisor is started with ``RETRAIN_JOB_TOKEN=<random>``;
  every process the job starts inherits it (``/proc/<pid>/environ`` is the environment a process was
  started with and cannot be changed afterwards from outside). :func:`job_processes` scans ``/proc`` for
  it, so the job's processes are found even after the supervisor itself was SIGKILLed. Only processes of
  the calling user are looked at.
* **A subreaper.** The supervisor calls :func:`become_subreaper` (``prctl(PR_SET_CHILD_SUBREAPER)``), so
  orphans of the job re-parent to it instead of to init, stay its descendants (:func:`descendants`) --
  this catches a child started with a scrubbed environment too, while the supervisor lives -- and it
  reaps them (:func:`reap_orphans`).

A cgroup would also contain processes that scrub their environment after the supervisor is gone, but
creating one needs a delegated, writable cgroup v2 subtree, which an Airflow worker rarely has (this
machine mounts v1 controllers with a v2 hierarchy beside them); the token and the subreaper need nothing.

:func:`run_hosts` runs a job's hosts (one process per SageMaker host or Vertex replica) to their end: one
host failing, a stop, a spot reclaim or the maximum runtime ends the others, and nothing of the job is left
running when it returns. The local runner and both fake clouds run their jobs through it.

:func:`kill_job` is the one kill path: SIGTERM, a bounded grace, then SIGKILL until nothing carrying the
token (or descending from the given roots) is left. Standard library only and no package imports: the
local runner loads this file by path in a training interpreter without Airflow, and other supervisors (the
fake clouds, benchmarks) can reuse it.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

#: The environment variable that marks every process of one job.
JOB_TOKEN_VAR = "RETRAIN_JOB_TOKEN"
_PR_SET_CHILD_SUBREAPER = 36
_PROC = Path("/proc")


def new_token() -> str:
    """A fresh job token (random, so a token never matches a process of another job)."""
    return secrets.token_hex(16)


def become_subreaper() -> bool:
    """Make this process the subreaper of its descendants; ``False`` where the kernel cannot (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, starttime)`` of ``pid``, ``None`` when it is gone."""
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _pids() -> list[int]:
    try:
        return [int(entry.name) for entry in _PROC.iterdir() if entry.name.isdigit()]
    except OSError:
        return []


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and has not exited (a zombie only waits to be reaped: not running)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _owned(pid: int) -> bool:
    try:
        return (_PROC / str(pid)).stat().st_uid == os.getuid()
    except OSError:
        return False


def environ_has(pid: int, marker: bytes) -> bool | None:
    """Whether ``pid`` was started with ``marker`` (``NAME=value``) in its environment; ``None``: unknown.

    Unknown is an unreadable environment (another user) or an empty one: a process that is still inside
    ``execve`` shows an empty ``environ`` for a moment after its parent's ``Popen`` returned (measured here:
    177 of 300 fresh children), and that must not read as "not this job's process".
    """
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return None
    if not environ:
        return None
    return marker in environ.split(b"\0")


def token_marker(token: str) -> bytes:
    return f"{JOB_TOKEN_VAR}={token}".encode()


def job_processes(marker: bytes, exclude: Iterable[int] = ()) -> list[int]:
    """Running processes of this user whose environment holds ``marker`` (see :func:`token_marker`).

    The caller itself is never listed: a supervisor carries its own job's token.
    """
    skip = {os.getpid(), *exclude}
    found = []
    for pid in _pids():
        if pid in skip or not _owned(pid):
            continue
        if environ_has(pid, marker) and is_running(pid):
            found.append(pid)
    return found


def tokens_in_use() -> dict[str, list[int]]:
    """Job token -> running pids of this user carrying it, from one scan of ``/proc`` (for sweeps)."""
    prefix = f"{JOB_TOKEN_VAR}=".encode()
    found: dict[str, list[int]] = {}
    for pid in _pids():
        if pid == os.getpid() or not _owned(pid):
            continue
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for entry in environ:
            if entry.startswith(prefix) and is_running(pid):
                found.setdefault(entry[len(prefix) :].decode(errors="replace"), []).append(pid)
                break
    return found


def descendants(root: int) -> list[int]:
    """Running descendants of ``root`` (orphans re-parented to a subreaper ``root`` included)."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[0] not in ("Z", "X"):
            children.setdefault(stat[1], []).append(pid)
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def reap_orphans(keep: Iterable[int] = ()) -> None:
    """Reap exited children of this process except ``keep`` (pids a :class:`subprocess.Popen` waits for).

    A subreaper inherits the job's orphans; without this their zombies would stay until it exits.
    """
    keep = set(keep)
    me = os.getpid()
    for pid in _pids():
        if pid in keep:
            continue
        stat = _stat(pid)
        if stat is not None and stat[1] == me and stat[0] in ("Z", "X"):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _ancestors() -> set[int]:
    """The caller's own chain of parents up to init: never a job's, whatever a caller passes as roots."""
    chain, pid = set(), os.getpid()
    while pid > 1 and (stat := _stat(pid)) is not None:
        pid = stat[1]
        chain.add(pid)
    return chain | {0, 1}


def _signal(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def kill_job(
    marker: bytes | None,
    roots: Iterable[int] = (),
    grace_seconds: float = 5.0,
    exclude: Iterable[int] = (),
    keep_reaping: Iterable[int] = (),
    include_roots: bool = False,
    reap: bool = True,
) -> list[int]:
    """End every process of a job: SIGTERM, up to ``grace_seconds`` to exit, then SIGKILL.

    :param marker: the job's environment marker (:func:`token_marker`); ``None``: by ``roots`` alone.
    :param roots: pids whose descendants belong to the job too (the supervisor passes itself); a root
        is killed itself only with ``include_roots`` or when it carries the marker.
    :param exclude: pids never to signal (nor are init and the caller's own parents, ever).
    :param keep_reaping: children of the caller it must not reap (its :class:`subprocess.Popen` pids).
    :param reap: reap the caller's exited children (a subreaper's orphans); ``False`` in a process that
        runs other jobs' :class:`subprocess.Popen` children (a fake cloud), whose exit codes it would steal.
    :return: every pid that was signalled.
    """
    skip = {os.getpid(), *exclude, *_ancestors()}
    # A root that is init or one of the caller's parents would make "its descendants" everything here.
    roots = [root for root in roots if root == os.getpid() or root not in skip]

    def targets() -> set[int]:
        found = set(job_processes(marker)) if marker else set()
        for root in roots:
            found.update(descendants(root))
            if include_roots and is_running(root):
                found.add(root)
        return {pid for pid in found - skip if _owned(pid)}

    signalled: set[int] = set()
    alive = targets()
    if not alive:
        return []
    deadline = time.monotonic() + grace_seconds
    while alive and time.monotonic() < deadline:
        _signal(alive - signalled, signal.SIGTERM)  # a process forked meanwhile gets its SIGTERM too
        signalled |= alive
        time.sleep(0.05)
        if reap:
            reap_orphans(keep_reaping)
        alive = targets()
    # What ignored SIGTERM: freeze it first, so nothing can fork a replacement between scan and kill.
    for _ in range(200):
        if not alive:
            break
        _signal(alive, signal.SIGSTOP)
        signalled |= alive
        grown = targets()
        if grown - alive:
            alive = grown
            continue
        _signal(alive, signal.SIGKILL)
        time.sleep(0.02)
        if reap:
            reap_orphans(keep_reaping)
        alive = targets()
    return sorted(signalled)


# ----------------------------------------------------------------------------------------- hosts


class Host:
    """One host of a job: the command it runs, its environment (the job token included) and its folder.

    :param stdout: where its output goes (a binary file); ``None``: to ``on_line`` of :func:`run_hosts`.
    """

    # A plain class, not a dataclass: loaded by path (bench, local_runner) this module is not in sys.modules.
    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: str, stdout: IO[bytes] | None = None):
        self.name, self.argv, self.env, self.cwd, self.stdout = name, argv, env, cwd, stdout


class HostsOutcome:
    """How the hosts ended: each one's exit code and seconds, and what ended the job."""

    def __init__(self, pids: dict[str, int]):
        self.codes: dict[str, int | None] = {}
        self.seconds: dict[str, float] = {}
        self.pids = pids
        self.failed_host: str | None = None
        self.stopped: str | None = None
        self.timed_out = False
        self.leftovers: list[int] = []

    @property
    def exit_code(self) -> int | None:
        """The failed host's code, else the first non-zero one, else 0."""
        if self.failed_host is not None:
            return self.codes[self.failed_host]
        return next((c for c in self.codes.values() if c != 0), 0)


def _read_lines(name: str, stream: IO[bytes], on_line: Callable[[str, str], None]) -> None:
    for raw in iter(stream.readline, b""):
        on_line(name, raw.decode("utf-8", "replace").rstrip("\n"))
    stream.close()


def run_hosts(
    hosts: list[Host],
    *,
    marker: bytes | None,
    max_runtime_seconds: float,
    grace_seconds: float = 10.0,
    leftover_grace_seconds: float = 5.0,
    min_seconds: float = 0.0,
    should_stop: Callable[[], tuple[str, float] | None] = lambda: None,
    on_start: Callable[[str, int], None] = lambda name, pid: None,
    on_line: Callable[[str, str], None] = lambda name, line: None,
    on_event: Callable[[str], None] = lambda message: None,
    on_tick: Callable[[], None] = lambda: None,
    subreaper: bool = False,
    roots: Iterable[int] = (),
    new_session: bool = False,
) -> HostsOutcome:
    """Start every host, wait for the job's end, end whatever of it still runs; return how it ended.

    The job ends when every host exited 0 (and ``min_seconds`` passed: a fake's "train at least this
    long"), when one host fails (the others would wait on it in every all-reduce: they get SIGTERM), when
    ``should_stop`` returns ``(reason, grace)`` (a stop request, a spot reclaim with grace 0) or at
    ``max_runtime_seconds``. Hosts still running get SIGTERM, then SIGKILL after the grace; then
    :func:`kill_job` ends every process carrying ``marker`` (daemons, children that left the session).

    :param subreaper: the caller is the job's subreaper (the local runner): reap its orphans meanwhile.
    :param roots: pids whose descendants belong to the job (the subreaper passes itself).
    :param new_session: start each host in its own session (a fake cloud serving many jobs).
    """
    procs: dict[str, subprocess.Popen] = {}
    readers = []
    started = time.monotonic()
    for host in hosts:
        proc = subprocess.Popen(
            host.argv,
            cwd=host.cwd,
            env=host.env,
            stdin=subprocess.DEVNULL,
            stdout=host.stdout if host.stdout is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
        procs[host.name] = proc
        on_start(host.name, proc.pid)
        if host.stdout is None:
            reader = threading.Thread(target=_read_lines, args=(host.name, proc.stdout, on_line), daemon=True)
            reader.start()
            readers.append(reader)
    outcome = HostsOutcome({n: p.pid for n, p in procs.items()})
    pids = [p.pid for p in procs.values()]
    deadline = started + max_runtime_seconds
    min_until = started + min_seconds
    ending_since: float | None = None
    grace = grace_seconds
    reaped_at = started

    def end(seconds: float) -> None:
        nonlocal ending_since, grace
        if ending_since is None:
            ending_since, grace = time.monotonic(), seconds
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()

    while True:
        now = time.monotonic()
        codes = {name: proc.poll() for name, proc in procs.items()}
        for name, code in codes.items():
            if code is not None and name not in outcome.seconds:
                outcome.seconds[name] = round(now - started, 3)
        running = [name for name, code in codes.items() if code is None]
        failed = next((n for n, c in codes.items() if c not in (None, 0)), None)
        if failed and outcome.failed_host is None and ending_since is None:
            outcome.failed_host = failed
            if running:
                on_event(f"host {failed} exited with {codes[failed]}; stopping the other hosts")
            end(grace_seconds)
        if not running and (ending_since is not None or now >= min_until):
            break
        if ending_since is None and (request := should_stop()) is not None:
            outcome.stopped = request[0]
            end(request[1])
        if ending_since is None and now > deadline:
            outcome.timed_out = True
            on_event(f"MaxRuntimeExceeded after {max_runtime_seconds:g} s: stopping the job")
            end(grace_seconds)
        if ending_since is not None and now - ending_since >= grace and running:
            on_event("the script did not stop after SIGTERM; killing it")
            for name in running:
                procs[name].kill()
            grace = float("inf")
        if subreaper and now - reaped_at > 2.0:
            reap_orphans(keep=pids)
            reaped_at = now
        on_tick()
        time.sleep(0.05)
    for proc in procs.values():
        proc.wait()
    outcome.codes = {name: proc.returncode for name, proc in procs.items()}
    leftover_grace = min(leftover_grace_seconds, grace) if ending_since is not None else leftover_grace_seconds
    outcome.leftovers = kill_job(
        marker, roots=roots, grace_seconds=leftover_grace, keep_reaping=pids, reap=subreaper
    )
    for reader in readers:
        reader.join(timeout=5)
    return outcome
