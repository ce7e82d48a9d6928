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
CURRENT_MARKER = "_current.json"


def strip_ansi(text: str | None) -> str:
    """dbt's colour codes removed (they end up in logs and exception text otherwise)."""
    return _ANSI.sub("", text or "")


def _safe(uid: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", uid)


def status_file_name(unique_id: str) -> str:
    """The file a node's result is written to, inside the run's status folder."""
    return f"{_safe(unique_id)}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def write_node_status(status_prefix: Any, result: dict[str, Any]) -> None:
    """Record one finished node (``unique_id``, ``status``, ``message``, ``execution_time``, ...).

    :param status_prefix: the run's status prefix in the artifact store (:func:`run_status_prefix`), or a
        local folder.
    """
    from airflow_retrain.artifacts import write_json

    write_json(_as_prefix(status_prefix) / status_file_name(result["unique_id"]), result, strict=False)


def write_done(status_prefix: Any, state: str, message: str) -> None:
    """The done marker: ``dbt_build`` ended (node tasks still waiting end as skipped or failed)."""
    from airflow_retrain.artifacts import write_json

    write_json(_as_prefix(status_prefix) / DONE_MARKER, {"state": state, "message": message})


def _as_prefix(status_prefix: Any) -> Any:
    from airflow_retrain.artifacts import as_artifact_path

    return as_artifact_path(status_prefix)


def _read(path: Any) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not there (yet): FileNotFoundError is an OSError
        return None


def read_node_status(status_prefix: Any, unique_id: str) -> dict[str, Any] | None:
    return _read(_as_prefix(status_prefix) / status_file_name(unique_id))


def read_done(status_prefix: Any) -> dict[str, Any] | None:
    return _read(_as_prefix(status_prefix) / DONE_MARKER)


def list_status_names(status_prefix: Any) -> frozenset[str]:
    """The file names under a run's status prefix: ONE listing (the object store's cache bypassed)."""
    prefix = _as_prefix(status_prefix)
    fs = prefix.fs
    try:
        fs.invalidate_cache(prefix.path)
        return frozenset(str(e).rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(prefix.path, detail=False))
    except (OSError, ValueError):
        return frozenset()


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


def results_from_run_results(
    run_results: dict[str, Any], index_nodes: dict[str, dict] | None = None
) -> list[dict]:
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
        message = f"dbt evidence failed ({len(failed)} of {total} checks): " + "; ".join(
            c.reason for c in failed
        )
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
        return sum(
            1
            for r in results
            if r["resource_type"] in rtypes and (statuses is None or r["status"] in statuses)
        )

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
            {
                "node": r["unique_id"],
                "status": r["status"],
                "failures": r.get("failures"),
                "message": r.get("message"),
            }
            for r in failed
        ],
        "relations": {
            r["name"]: r["relation_name"]
            for r in results
            if r.get("relation_name") and r["resource_type"] in ("model", "seed", "snapshot")
        },
    }


def run_status_root(
    dag_id: str,
    run_id: str,
    artifact_root: str | None = None,
    artifact_conn_id: str | None = None,
) -> Any:
    """Where the per-node statuses of one DAG run live, in the run's artifact store.

    ``<artifact root>/<dag_id>/<run_key>/dbt/status/``: each try of ``dbt_build`` writes its nodes under
    ``<clear number>-<try number>/`` and names that folder in ``_current.json``; the node tasks (in the
    triggerer or on a worker) read there -- no local disk is shared between them.

    :return: an :class:`~airflow.sdk.ObjectStoragePath`.
    """
    from airflow_retrain.artifacts import ArtifactStore
    from airflow_retrain.runs import RunIdentity

    store = ArtifactStore.resolve(artifact_root, artifact_conn_id)
    run_key = RunIdentity(pipeline="", dag_id=dag_id, run_id=run_id).run_key
    return store.run_path(str(dag_id), run_key) / "dbt" / "status"


def start_attempt(status_root: Any, clear_number: int, try_number: int) -> Any:
    """A try of ``dbt_build`` begins: its (empty) folder, named in ``_current.json``; returns the folder."""
    from airflow_retrain.artifacts import delete, write_json

    name = f"{int(clear_number or 0)}-{int(try_number or 0)}"
    attempt = _as_prefix(status_root) / name
    delete(attempt)  # the same try run again (``airflow tasks test``) starts from no statuses
    write_json(
        _as_prefix(status_root) / CURRENT_MARKER,
        {"attempt": name, "clear_number": int(clear_number or 0), "try_number": int(try_number or 0)},
    )
    return attempt


def read_current(status_root: Any) -> dict[str, Any] | None:
    """The try of ``dbt_build`` that last started in this run (``attempt``, ``clear_number``), or ``None``."""
    return _read(_as_prefix(status_root) / CURRENT_MARKER)


#: What the node tasks render (in the triggerer, or on a worker) to find their run's statuses.
STATUS_RUN_TEMPLATES = {
    "status_dag_id": "{{ ti.dag_id }}",
    "status_run_id": "{{ run_id }}",
    "status_clear_number": "{{ dag_run.clear_number or 0 }}",
}
