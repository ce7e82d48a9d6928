"""The run report: one JSON per DAG run with what every stage did, and its human-readable form.

Stdlib only, so the demo and any CLI can render a report without importing Airflow. The report operator
stores it in the artifact store (``<run>/report.json`` and ``<root>/<dag_id>/latest_report.json``).
"""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def format_report(report: dict[str, Any]) -> str:
    """Render a run report as the lines an on-call engineer reads first."""
    s = report.get("stages", {})
    states = report.get("task_states", {})
    lines = [f"Pipeline {report.get('pipeline')}  DAG {report.get('dag_id')}  run {report.get('run_id')}"]

    def state(task: str) -> str:
        return states.get(task) or ("success" if s.get(task) else "no result")

    dbt = s.get("dbt_build")
    if dbt:
        lines.append(
            f"  dbt build      {dbt['models_built']}/{dbt['models_total']} models built, "
            f"{dbt['tests_passed']}/{dbt['tests_total']} tests passed"
            + (f", {dbt['tests_warned']} warned" if dbt.get("tests_warned") else "")
            + f" ({dbt['elapsed_seconds']:.1f} s, {dbt.get('warehouse', '')})"
        )
    else:
        lines.append(f"  dbt build      {state('dbt_build')}")
    ds = s.get("export_dataset")
    if ds:
        lines.append(
            f"  dataset        {ds['relation']}: train {ds['rows']['train']} rows, holdout {ds['rows']['test']} rows, "
            f"label rate {ds['label_rate']['train']:.3f}/{ds['label_rate']['test']:.3f}, fingerprint {ds['fingerprint']}"
        )
    else:
        lines.append(f"  dataset        {state('export_dataset')}")
    tr = s.get("train")
    if tr:
        info = tr.get("info", {})
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in tr["metrics"].items())
        lines.append(
            f"  training       job {tr['job_name']} on {tr['backend']} ({info.get('device', '?')}): "
            f"{tr['compute_seconds']:.1f} compute s, est. ${tr['cost']['usd']:.4f}"
        )
        lines.append(f"  holdout        {metrics}")
    else:
        lines.append(f"  training       {state('train')}")
    reg = s.get("register")
    if reg:
        lines.append(f"  registered     {reg['model_name']} version {reg['version']} (MLflow run {reg['run_id']})")
    else:
        lines.append(f"  registered     {state('register')}")
    gate = s.get("gate_metrics") or report.get("gate_verdict")
    if gate:
        lines.append(f"  gate metrics   {'PASSED' if gate['passed'] else 'FAILED'}: {gate['message']}")
    else:
        lines.append(f"  gate metrics   {state('gate_metrics')}")
    pr = s.get("promote")
    if pr:
        lines.append(f"  promotion      {pr['decision'].upper()}: {pr['reason']}")
        lines.append(f"  champion       {pr['model_name']}@champion = version {pr['champion_after']}")
    else:
        lines.append(f"  promotion      {state('promote')} (champion unchanged)")
    td = s.get("teardown")
    if td:
        lines.append(
            f"  teardown       {len(td['jobs'])} job(s), {len(td['stopped_jobs'])} stopped, "
            f"{td['compute_seconds']:.1f} compute s, est. ${td['cost_usd']:.4f}"
            + ("; scratch removed" if td.get("scratch_removed") else "")
        )
    else:
        lines.append(f"  teardown       {state('teardown')}")
    return "\n".join(lines)


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The few facts of a report that fit in XCom: outcome, job, version, decision, cost."""
    stages = report.get("stages", {})
    train = stages.get("train") or {}
    register = stages.get("register") or {}
    promote = stages.get("promote") or {}
    teardown = stages.get("teardown") or {}
    failed = sorted(k for k, v in (report.get("task_states") or {}).items() if v not in ("success", None))
    return {
        "pipeline": report.get("pipeline"),
        "outcome": run_outcome(report),
        "run_key": report.get("run_key"),
        "failed_tasks": failed,
        "job_name": train.get("job_name"),
        "metrics": train.get("metrics"),
        "version": register.get("version"),
        "decision": promote.get("decision"),
        "champion_after": promote.get("champion_after"),
        "cost_usd": teardown.get("cost_usd"),
    }


GATE_TASK_PREFIX = "gate_"


def run_outcome(report: dict[str, Any]) -> str:
    """One line saying what the run did: ``promoted v3 (was v1)``, ``kept v1 (candidate v2 ...)``,
    ``gate failed: metrics (candidate v2; champion unchanged)`` or ``failed at train``.

    It becomes the DAG run's note (run list and grid) and heads the dashboard's run row, so a run that
    promoted and one that kept the old champion no longer look the same.
    """
    stages = report.get("stages") or {}
    states = report.get("task_states") or {}
    register = stages.get("register") or {}
    candidate = f"v{register['version']}" if register.get("version") else "no candidate"
    promote = stages.get("promote") or {}
    decision = promote.get("decision")
    if decision == "promoted":
        before = promote.get("champion_before")
        return f"promoted v{promote.get('champion_after')}" + (f" (was v{before})" if before else " (first champion)")
    if decision == "kept_champion":
        return f"kept v{promote.get('champion_after')} (candidate {candidate} did not beat it)"
    if decision == "already_champion":
        return f"kept v{promote.get('champion_after')} (already champion)"
    failed_gates = sorted(t[len(GATE_TASK_PREFIX):] for t, s in states.items() if t.startswith(GATE_TASK_PREFIX) and s == "failed")
    if failed_gates:
        return f"gate failed: {', '.join(failed_gates)} ({candidate}; champion unchanged)"
    failed = [t for t, s in states.items() if s in ("failed", "upstream_failed")]
    first = next((t for t in failed if states[t] == "failed"), failed[0] if failed else None)
    if first:
        return f"failed at {first} ({candidate}; champion unchanged)"
    return f"no decision ({candidate})"
