"""DbtHook: one ``dbt`` invocation in a subprocess, with its results read from dbt's own artifacts.

A subprocess (not ``dbtRunner`` in the task process) because dbt's dependencies and global logging fight
Airflow's: the executable can live in its own environment (``RETRAIN_DBT_EXECUTABLE``). Each invocation
gets its own ``--target-path`` so concurrent runs never read each other's ``run_results.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

_FAILED = {"error", "fail", "runtime error"}


@dataclass
class DbtNodeResult:
    unique_id: str
    resource_type: str
    name: str
    status: str
    failures: int | None
    message: str | None
    execution_time: float
    relation_name: str | None = None


@dataclass
class DbtRunResult:
    command: list[str]
    returncode: int
    elapsed_seconds: float
    nodes: list[DbtNodeResult] = field(default_factory=list)
    target_path: str = ""

    @property
    def failed(self) -> list[DbtNodeResult]:
        return [n for n in self.nodes if n.status in _FAILED]

    @property
    def success(self) -> bool:
        return self.returncode == 0 and not self.failed

    def count(self, resource_type: str, statuses: set[str] | None = None) -> int:
        return sum(
            1 for n in self.nodes if n.resource_type == resource_type and (statuses is None or n.status in statuses)
        )

    def summary(self) -> dict[str, Any]:
        """JSON-able evidence of what dbt did (for XCom, logs and the run report)."""
        return {
            "success": self.success,
            "elapsed_seconds": round(self.elapsed_seconds, 2),
            "models_built": self.count("model", {"success"}),
            "models_total": self.count("model"),
            "tests_passed": self.count("test", {"pass"}),
            "tests_warned": self.count("test", {"warn"}),
            "tests_failed": self.count("test", {"fail", "error"}),
            "tests_total": self.count("test"),
            "failures": [
                {"node": n.unique_id, "status": n.status, "failures": n.failures, "message": n.message}
                for n in self.failed
            ],
            "relations": {n.name: n.relation_name for n in self.nodes if n.relation_name},
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DbtCommandError(RuntimeError):
    def __init__(self, result: DbtRunResult, log_tail: str):
        self.result = result
        if result.failed:
            parts = [
                f"{n.resource_type} {n.name} {n.status}"
                + (f" ({n.failures} failing rows)" if n.failures else "")
                + (f": {n.message}" if n.message and n.resource_type != "test" else "")
                for n in result.failed
            ]
            msg = f"dbt {result.command[0]} failed: " + "; ".join(parts)
        else:
            msg = f"dbt {result.command[0]} exited with code {result.returncode}: {log_tail}"
        super().__init__(msg)


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


class DbtHook(BaseHook):
    """Run dbt commands against a project.

    :param project_dir: the dbt project folder (holds ``dbt_project.yml``).
    :param profiles_dir: folder of ``profiles.yml``; default the project folder (the repo ships one).
    :param env: extra environment (e.g. from :meth:`WarehouseHook.dbt_env`); values are never logged.
    :param dbt_executable: path of ``dbt``; default the one beside this Python, or ``RETRAIN_DBT_EXECUTABLE``.
    """

    hook_name = "dbt (airflow-retrain)"

    def __init__(
        self,
        project_dir: str | os.PathLike,
        profiles_dir: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        dbt_executable: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project_dir = Path(project_dir)
        self.profiles_dir = Path(profiles_dir) if profiles_dir else self.project_dir
        self.env = env or {}
        self.dbt_executable = dbt_executable

    def run(
        self,
        command: str,
        *,
        select: list[str] | None = None,
        exclude: list[str] | None = None,
        target: str | None = None,
        target_path: str | os.PathLike,
        extra_args: list[str] | None = None,
    ) -> DbtRunResult:
        """Run ``dbt <command>``; return parsed results; raise :class:`DbtCommandError` on failure."""
        import time

        target_path = Path(target_path)
        target_path.mkdir(parents=True, exist_ok=True)
        argv = [command, "--project-dir", str(self.project_dir), "--profiles-dir", str(self.profiles_dir)]
        argv += ["--target-path", str(target_path), "--log-path", str(target_path / "logs")]
        if target:
            argv += ["--target", target]
        if select:
            argv += ["--select", *select]
        if exclude:
            argv += ["--exclude", *exclude]
        argv += extra_args or []
        exe = self.dbt_executable or default_dbt_executable()
        env = {**os.environ, **self.env, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}
        self.log.info("Running: dbt %s", " ".join(argv))
        start = time.monotonic()
        proc = subprocess.Popen(
            [exe, *argv],
            cwd=self.project_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            self.log.info("dbt: %s", line)
            tail = (tail + [line])[-5:]
        returncode = proc.wait()
        elapsed = time.monotonic() - start
        result = DbtRunResult(
            command=argv, returncode=returncode, elapsed_seconds=elapsed, target_path=str(target_path)
        )
        result.nodes = self._read_results(target_path)
        if not result.success:
            raise DbtCommandError(result, " | ".join(tail))
        return result

    @staticmethod
    def _read_results(target_path: Path) -> list[DbtNodeResult]:
        run_results = target_path / "run_results.json"
        if not run_results.exists():
            return []
        results = json.loads(run_results.read_text()).get("results", [])
        relations: dict[str, str] = {}
        manifest = target_path / "manifest.json"
        if manifest.exists():
            nodes = json.loads(manifest.read_text()).get("nodes", {})
            relations = {uid: n.get("relation_name") for uid, n in nodes.items() if n.get("relation_name")}
        out = []
        for r in results:
            uid = r["unique_id"]
            parts = uid.split(".")
            out.append(
                DbtNodeResult(
                    unique_id=uid,
                    resource_type=parts[0],
                    name=parts[2] if len(parts) > 2 else uid,
                    status=str(r.get("status")),
                    failures=r.get("failures"),
                    message=r.get("message"),
                    execution_time=float(r.get("execution_time") or 0.0),
                    relation_name=relations.get(uid) if parts[0] in ("model", "seed", "snapshot") else None,
                )
            )
        return out
