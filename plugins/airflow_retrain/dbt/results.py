"""dbt's results as evidence: per-node status files for the group's nodes, and a data-quality Verdict.

The ``dbt_build`` task writes one small JSON file per finished node (``<status dir>/<unique_id>.json``) as
dbt reports it, and ``_done.json`` when dbt exits; each model's node in the Airflow group completes from
them (see :class:`~airflow_retrain.triggers.dbt.DbtNodeTrigger`). ``run_results.json`` and
``sources.json`` become a :class:`~airflow_retrain.gates.base.Verdict`: a test that errors or fails, a model
that fails, or a source past its ``error_after`` freshness blocks training; warnings are recorded.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from airflow_retrain.gates.base import Check, Verdict

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
#: node statuses that fail the node (and block training)
FAILED = {"error", "fail", "runtime error"}
WARNED = {"warn"}
SKIPPED = {"skipped", "no-op"}
DONE_MARKER = "_done.json"


def strip_ansi(text: str | None) -> str:
    """dbt's colour codes removed (they end up in logs and exception text otherwise)."""
    return _ANSI.sub("", text or "")


def status_dir_for(scratch_dir: str | os.PathLike) -> Path:
    return Path(scratch_dir) / "dbt" / "status"


def _safe(uid: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", uid)


def status_file_name(unique_id: str) -> str:
    """The file a node's result is written to, inside the run's status folder."""
    return f"{_safe(unique_id)}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def write_node_status(status_dir: Path, result: dict[str, Any]) -> None:
    """Record one finished node (``unique_id``, ``status``, ``message``, ``execution_time``, ...)."""
    status_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(status_dir / status_file_name(result["unique_id"]), result)


def read_node_status(status_dir: Path, unique_id: str) -> dict[str, Any] | None:
    try:
        return json.loads((status_dir / status_file_name(unique_id)).read_text())
    except (OSError, ValueError):
        return None


def read_done(status_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((status_dir / DONE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def node_result_from_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """A finished node from one line of dbt's JSON log file (the ``NodeFinished`` event), else None."""
    info = event.get("info") or {}
    if info.get("name") != "NodeFinished":
        return None
    data = event.get("data") or {}
    node = data.get("node_info") or {}
    run = data.get("run_result") or {}
    return {
        "unique_id": node.get("unique_id"),
        "resource_type": node.get("resource_type"),
        "name": node.get("node_name"),
        "status": str(run.get("status") or node.get("node_status")),
        "message": strip_ansi(run.get("message")),
        "failures": run.get("num_failures"),
        "execution_time": float(run.get("execution_time") or 0.0),
        "started_at": node.get("node_started_at"),
        "finished_at": node.get("node_finished_at"),
        "relation_name": (node.get("node_relation") or {}).get("relation_name") or None,
    }


def results_from_run_results(run_results: dict[str, Any], index_nodes: dict[str, dict] | None = None) -> list[dict]:
    """Per-node results from ``run_results.json`` (authoritative once dbt exits)."""
    out = []
    for r in run_results.get("results", []):
        uid = r["unique_id"]
        parts = uid.split(".")
        meta = (index_nodes or {}).get(uid) or {}
        out.append(
            {
                "unique_id": uid,
                "resource_type": parts[0],
                "name": meta.get("name") or (parts[2] if len(parts) > 2 else uid),
                "status": str(r.get("status")),
                "message": strip_ansi(r.get("message")),
                "failures": r.get("failures"),
                "execution_time": float(r.get("execution_time") or 0.0),
                "relation_name": r.get("relation_name") or meta.get("relation_name"),
            }
        )
    return out


def _describe(result: dict[str, Any]) -> str:
    text = f"{result['resource_type']} {result['name']} {result['status']}"
    if result.get("failures"):
        text += f" ({result['failures']} failing rows)"
    if result.get("message") and result["message"].strip().upper() not in ("OK", "PASS"):
        text += f": {result['message'].strip()}"
    return text


def verdict_from_results(
    results: list[dict[str, Any]], freshness: dict[str, Any] | None = None, *, gate: str = "dbt"
) -> Verdict:
    """A data-quality verdict from dbt's node results and (optionally) ``sources.json``.

    Blocks on any model/seed/snapshot/test with status error, fail or runtime error, and on a source past
    ``error_after``; ``warn`` results are recorded as passed checks with their reason.
    """
    checks: list[Check] = []
    for r in results:
        status = r["status"]
        if r["resource_type"] in ("test", "unit_test") or status in FAILED | WARNED:
            checks.append(
                Check(
                    name=r["unique_id"],
                    observed=float(r["failures"]) if isinstance(r.get("failures"), int | float) else None,
                    min=None,
                    max=0.0 if r["resource_type"] == "test" else None,
                    passed=status not in FAILED,
                    reason=_describe(r),
                )
            )
    for f in (freshness or {}).get("results", []):
        status = str(f.get("status"))
        criteria = f.get("criteria") or {}
        error_after = criteria.get("error_after") or {}
        limit = _period_seconds(error_after)
        age = f.get("max_loaded_at_time_ago_in_s")
        uid = f.get("unique_id", "source")
        reason = f"source {uid.split('.', 2)[-1]} freshness {status}"
        if age is not None:
            reason += f": last loaded {age / 3600:.1f} h ago"
            if limit:
                reason += f" (error after {limit / 3600:.0f} h)"
        if status in ("runtime error", "error") and f.get("error"):
            reason += f": {strip_ansi(f.get('error'))}"
        elif status == "runtime error" and f.get("message"):
            reason += f": {strip_ansi(f.get('message'))}"
        checks.append(
            Check(
                name=f"freshness:{uid}",
                observed=float(age) if age is not None else None,
                min=None,
                max=limit,
                passed=status in ("pass", "warn"),
                reason=reason,
            )
        )
    failed = [c for c in checks if not c.passed]
    warned = [c for c in checks if c.passed and (" warn" in c.reason)]
    total = len(checks)
    if failed:
        message = f"dbt evidence failed ({len(failed)} of {total} checks): " + "; ".join(c.reason for c in failed)
    else:
        message = f"dbt evidence passed: {total} checks"
        if warned:
            message += f", {len(warned)} warned: " + "; ".join(c.reason for c in warned)
    return Verdict(gate=gate, passed=not failed, message=message, checks=checks)


def _period_seconds(spec: dict[str, Any]) -> float | None:
    count = spec.get("count")
    if not count:
        return None
    return float(count) * {"minute": 60, "hour": 3600, "day": 86400}.get(spec.get("period") or "hour", 3600)


def summarize(results: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    """Counts for XCom and the run report (seeds and snapshots included)."""

    def count(rtypes: tuple[str, ...], statuses: set[str] | None = None) -> int:
        return sum(1 for r in results if r["resource_type"] in rtypes and (statuses is None or r["status"] in statuses))

    failed = [r for r in results if r["status"] in FAILED]
    return {
        "success": not failed,
        "elapsed_seconds": round(elapsed, 2),
        "models_built": count(("model",), {"success"}),
        "models_total": count(("model",)),
        "seeds_loaded": count(("seed",), {"success"}),
        "seeds_total": count(("seed",)),
        "snapshots_built": count(("snapshot",), {"success"}),
        "snapshots_total": count(("snapshot",)),
        "tests_passed": count(("test", "unit_test"), {"pass"}),
        "tests_warned": count(("test", "unit_test"), {"warn"}),
        "tests_failed": count(("test", "unit_test"), {"fail", "error", "runtime error"}),
        "tests_total": count(("test", "unit_test")),
        "skipped": count(("model", "seed", "snapshot", "test", "unit_test"), SKIPPED),
        "failures": [
            {"node": r["unique_id"], "status": r["status"], "failures": r.get("failures"), "message": r.get("message")}
            for r in failed
        ],
        "relations": {
            r["name"]: r["relation_name"]
            for r in results
            if r.get("relation_name") and r["resource_type"] in ("model", "seed", "snapshot")
        },
    }


def run_status_dir(dag_id: str, run_id: str, clear_number: int | str = 0, state: str | os.PathLike | None = None) -> Path:
    """Per-node status of one DAG run (and one clearing of it), shared by ``dbt_build`` and the node tasks."""
    from airflow_retrain.spec import state_dir

    base = Path(state) if state else state_dir()
    return base / "dbt" / "status" / dag_id / run_id.replace("/", "_") / str(clear_number or 0)


def status_dir_template(state: str | os.PathLike) -> str:
    """The same path as :func:`run_status_dir`, as a Jinja template the node tasks render at run time."""
    return (
        f"{state}/dbt/status/{{{{ ti.dag_id }}}}/{{{{ run_id | replace('/', '_') }}}}/"
        "{{ dag_run.clear_number or 0 }}"
    )
