"""The run report: one JSON per DAG run with what every stage did, and its human-readable form.

Stdlib only, so the demo and any CLI can render a report without importing Airflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def reports_dir(state: Path) -> Path:
    return state / "reports"


def write_report(state: Path, dag_id: str, run_key: str, report: dict[str, Any]) -> Path:
    folder = reports_dir(state) / dag_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_key}.json"
    text = json.dumps(report, indent=2, default=str)
    path.write_text(text)
    (folder / "latest.json").write_text(text)
    return path


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
            f"{tr['compute_seconds']:.1f} compute s, est. "
            + (f"${tr['cost']['usd']:.4f}" if tr["cost"].get("usd") is not None else "cost unknown (no price)")
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
