"""DbtHook: one ``dbt`` invocation in a subprocess, with per-node results as dbt reports them.

A subprocess (not ``dbtRunner`` in the task process) because dbt's dependencies and global logging fight
Airflow's: the executable can live in its own environment (``RETRAIN_DBT_EXECUTABLE``), and the process
gets an allow-listed environment (:func:`airflow_retrain.dbt.profiles.child_env`), so analyst code
calling ``env_var()`` sees only what the profile needs.

Speed: dbt's partial-parsing state (``partial_parse.msgpack``) is kept per project and target between runs
and seeded into each run's own ``--target-path``, so a run parses like a plain ``dbt build`` in a warm
project folder while concurrent runs never read each other's ``run_results.json``.

Per-node progress comes from dbt's JSON log file (``--log-format-file json``, the ``NodeFinished`` events,
the file dbt writes at debug level anyway), tailed while dbt runs; ``run_results.json`` is authoritative
once it exits. A timeout kills dbt and all its children (psutil); :meth:`DbtHook.kill` does the same for
``on_kill``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from airflow_retrain.dbt.profiles import child_env
from airflow_retrain.dbt.results import (
    FAILED,
    node_result_from_event,
    results_from_run_results,
    strip_ansi,
    summarize,
)
from airflow_retrain.dbt.selection import selection_args

_COMPILE_MARKERS = ("Compilation Error", "Parsing Error", "depends on a node named", "Syntax error in")


@dataclass
class DbtRunResult:
    command: list[str]
    returncode: int
    elapsed_seconds: float
    nodes: list[dict[str, Any]] = field(default_factory=list)
    target_path: str = ""
    errors: list[str] = field(default_factory=list)
    unmatched_selectors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [n for n in self.nodes if n["status"] in FAILED]

    @property
    def success(self) -> bool:
        return self.returncode == 0 and not self.failed

    def summary(self) -> dict[str, Any]:
        """JSON-able evidence of what dbt did (for XCom, logs and the run report)."""
        return summarize(self.nodes, self.elapsed_seconds)


class DbtCommandError(RuntimeError):
    """dbt failed for a reason that may pass on retry (a connection, the database); names the cause."""

    retryable = True

    def __init__(self, message: str, result: DbtRunResult | None = None):
        self.result = result
        super().__init__(message)


class DbtNodesFailed(DbtCommandError):
    """Models, seeds, snapshots or tests failed: rerunning cannot fix the data."""

    retryable = False


class DbtCompileError(DbtCommandError):
    """The project does not compile (a bad ``ref``, invalid Jinja or YAML): fix the code, not retry."""

    retryable = False


class DbtSelectionError(DbtCommandError):
    """The selection matched nothing."""

    retryable = False


class DbtTimeoutError(DbtCommandError):
    """dbt ran past its timeout and was killed with its children."""

    retryable = True


def default_dbt_executable() -> str:
    if env := os.environ.get("RETRAIN_DBT_EXECUTABLE"):
        return env
    beside = Path(sys.executable).with_name("dbt")
    if beside.exists():
        return str(beside)
    found = shutil.which("dbt")
    if not found:
        raise FileNotFoundError("no dbt executable: install dbt-core or set RETRAIN_DBT_EXECUTABLE")
    return found


def kill_tree(pid: int, grace_seconds: float = 5.0) -> None:
    """SIGTERM a process and all its descendants, SIGKILL what is left after ``grace_seconds``."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [*parent.children(recursive=True), parent]
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_seconds)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_seconds)


class DbtHook(BaseHook):
    """Run dbt commands against a project.

    :param project_dir: the dbt project folder (holds ``dbt_project.yml``).
    :param profiles_dir: folder of ``profiles.yml``; default the project folder.
    :param env: variables the profile reads (e.g. from :meth:`WarehouseHook.dbt_env`); never logged.
    :param dbt_executable: path of ``dbt``; default the one beside this Python, or ``RETRAIN_DBT_EXECUTABLE``.
    :param env_passthrough: names of further variables of this process to give dbt.
    :param partial_parse_file: where dbt's partial-parsing state is kept between runs; ``None`` disables it.
    """

    hook_name = "dbt (airflow-retrain)"

    def __init__(
        self,
        project_dir: str | os.PathLike,
        profiles_dir: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        dbt_executable: str | None = None,
        env_passthrough: list[str] | tuple[str, ...] = (),
        partial_parse_file: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project_dir = Path(project_dir)
        self.profiles_dir = Path(profiles_dir) if profiles_dir else self.project_dir
        self.env = env or {}
        self.dbt_executable = dbt_executable
        self.env_passthrough = tuple(env_passthrough)
        self.partial_parse_file = Path(partial_parse_file) if partial_parse_file else None
        self._proc: subprocess.Popen | None = None
        self._killed = False

    def child_env(self) -> dict[str, str]:
        return child_env(self.env, self.env_passthrough)

    def kill(self) -> None:
        """Stop the running dbt process and its children (for ``on_kill``)."""
        if self._proc is not None and self._proc.poll() is None:
            self.log.warning("Stopping dbt (pid %s) and its children", self._proc.pid)
            self._killed = True
            kill_tree(self._proc.pid)

    def run(
        self,
        command: str,
        *,
        select: list[str] | None = None,
        exclude: list[str] | None = None,
        selector: str | None = None,
        target: str | None = None,
        target_path: str | os.PathLike,
        extra_args: list[str] | None = None,
        timeout: float | None = None,
        on_node_finished: Callable[[dict[str, Any]], None] | None = None,
        raise_on_failure: bool = True,
    ) -> DbtRunResult:
        """Run ``dbt <command>``; return parsed results.

        :param timeout: seconds before dbt and its children are killed (:class:`DbtTimeoutError`).
        :param on_node_finished: called with each node's result as soon as dbt finishes it.
        :raises DbtCompileError: the project does not compile (names the node and file).
        :raises DbtSelectionError: the selection matched nothing (names the selector).
        :raises DbtNodesFailed: nodes failed (names each and its cause, e.g. the database's message).
        :raises DbtCommandError: anything else, with dbt's error messages.
        """
        target_path = Path(target_path)
        target_path.mkdir(parents=True, exist_ok=True)
        log_path = target_path / "logs"
        for stale in ("run_results.json", "sources.json"):
            (target_path / stale).unlink(missing_ok=True)
        shutil.rmtree(log_path, ignore_errors=True)
        argv = [*command.split(), "--project-dir", str(self.project_dir), "--profiles-dir", str(self.profiles_dir)]
        if command not in ("deps", "clean"):  # they take no --target-path
            argv += ["--target-path", str(target_path)]
        argv += ["--log-path", str(log_path)]
        argv += ["--log-format-file", "json", "--no-use-colors"]
        if target:
            argv += ["--target", target]
        argv += selection_args(select, exclude, selector)
        argv += extra_args or []
        if self.partial_parse_file and self.partial_parse_file.is_file():
            shutil.copyfile(self.partial_parse_file, target_path / "partial_parse.msgpack")
        exe = self.dbt_executable or default_dbt_executable()
        self.log.info("Running: dbt %s", " ".join(argv))
        self._killed = False
        start = time.monotonic()
        self._proc = proc = subprocess.Popen(
            [exe, *argv],
            cwd=self.project_dir,
            env=self.child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        tail: list[str] = []

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = strip_ansi(line.rstrip())
                self.log.info("dbt: %s", line)
                tail.append(line)
                del tail[:-20]

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        events = _EventTail(log_path / "dbt.log")
        nodes_seen: dict[str, dict[str, Any]] = {}

        def drain() -> None:
            for event in events.read():
                result = node_result_from_event(event)
                if result and result["unique_id"]:
                    nodes_seen[result["unique_id"]] = result
                    if on_node_finished:
                        on_node_finished(result)

        timed_out = False
        while proc.poll() is None:
            drain()
            if timeout is not None and time.monotonic() - start > timeout:
                timed_out = True
                self.log.error("dbt ran past its timeout of %s s: killing it and its children", timeout)
                kill_tree(proc.pid)
                break
            time.sleep(0.1)
        returncode = proc.wait()
        reader.join(timeout=5)
        drain()
        elapsed = time.monotonic() - start
        result = DbtRunResult(
            command=argv,
            returncode=returncode,
            elapsed_seconds=elapsed,
            target_path=str(target_path),
            errors=events.errors,
            unmatched_selectors=events.unmatched,
        )
        run_results = target_path / "run_results.json"
        if run_results.is_file():
            result.nodes = results_from_run_results(json.loads(run_results.read_text()))
            relations = {u: n.get("relation_name") for u, n in nodes_seen.items()}
            for node in result.nodes:
                node["relation_name"] = node.get("relation_name") or relations.get(node["unique_id"])
        else:
            result.nodes = list(nodes_seen.values())
        if not timed_out and returncode in (0, 1) and self.partial_parse_file:
            self._keep_partial_parse(target_path)
        if self._killed:
            raise DbtCommandError(f"dbt {command} was stopped (the task was killed) after {elapsed:.0f} s", result)
        if timed_out:
            raise DbtTimeoutError(f"dbt {command} ran past its timeout of {timeout:g} s and was killed", result)
        if raise_on_failure:
            self._raise_for(command, result, tail)
        return result

    def run_freshness(
        self,
        *,
        select: list[str] | None = None,
        target: str | None = None,
        target_path: str | os.PathLike,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run ``dbt source freshness``; return ``sources.json`` (stale sources are results, not exceptions).

        :raises DbtCommandError: dbt could not check at all (names dbt's error).
        """
        target_path = Path(target_path)
        output = target_path / "sources.json"
        result = self.run(
            "source freshness",
            select=select,
            target=target,
            target_path=target_path,
            extra_args=["--output", str(output)],
            timeout=timeout,
            raise_on_failure=False,
        )
        if not output.is_file():
            self._raise_for("source freshness", result, [])
            raise DbtCommandError(f"dbt source freshness wrote no {output} (exit code {result.returncode})", result)
        return json.loads(output.read_text())

    def _keep_partial_parse(self, target_path: Path) -> None:
        produced = target_path / "partial_parse.msgpack"
        if produced.is_file() and self.partial_parse_file:
            self.partial_parse_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.partial_parse_file.with_name(f".pp.{os.getpid()}.tmp")
            shutil.copyfile(produced, tmp)
            os.replace(tmp, self.partial_parse_file)

    @staticmethod
    def _raise_for(command: str, result: DbtRunResult, tail: list[str]) -> None:
        errors = [" ".join(e.replace("Encountered an error:", "").split()) for e in result.errors if e.strip()]
        compile_errors = [e for e in errors if any(m in e for m in _COMPILE_MARKERS)]
        compile_errors += [
            f"{n['resource_type']} {n['name']}: {n['message']}"
            for n in result.failed
            if any(m in (n.get("message") or "") for m in _COMPILE_MARKERS)
        ]
        if compile_errors:
            raise DbtCompileError(f"dbt {command}: the project does not compile: " + " | ".join(compile_errors), result)
        if result.failed:
            parts = []
            for n in result.failed:
                text = f"{n['resource_type']} {n['name']} {n['status']}"
                if n.get("failures"):
                    text += f" ({n['failures']} failing rows)"
                if n.get("message"):
                    text += f": {n['message'].strip()}"
                parts.append(text)
            raise DbtNodesFailed(f"dbt {command} failed: " + "; ".join(parts), result)
        if result.returncode == 0 and not result.nodes and result.unmatched_selectors and command in ("build", "run", "test", "seed", "snapshot"):
            raise DbtSelectionError(
                f"dbt {command}: selection {' '.join(result.unmatched_selectors)!r} matches no node; nothing was built",
                result,
            )
        if result.returncode != 0:
            detail = " | ".join(errors) if errors else " | ".join(tail[-5:])
            raise DbtCommandError(f"dbt {command} exited with code {result.returncode}: {detail}", result)


class _EventTail:
    """Incrementally read dbt's JSON log file; collect error messages and unmatched selectors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None
        self._buffer = ""
        self.errors: list[str] = []
        self.unmatched: list[str] = []

    def read(self) -> list[dict[str, Any]]:
        if self._fh is None:
            try:
                self._fh = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115
            except OSError:
                return []
        chunk = self._fh.read()
        if not chunk:
            return []
        data = self._buffer + chunk
        lines = data.split("\n")
        self._buffer = lines.pop()
        out = []
        for line in lines:
            # dbt logs every SQL statement here at debug level: decode only the events we use
            if '"NodeFinished"' not in line and '"level": "error"' not in line and "NoNodesForSelection" not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            info = event.get("info") or {}
            name = info.get("name")
            if name == "NoNodesForSelectionCriteria":
                self.unmatched.append((event.get("data") or {}).get("spec_raw") or "")
            elif info.get("level") == "error" and name not in ("RunResultError", "CheckNodeTestFailure", "RunResultErrorNoMessage", "EndOfRunSummary", "StatsLine"):
                self.errors.append(strip_ansi(info.get("msg") or ""))
            out.append(event)
        return out
