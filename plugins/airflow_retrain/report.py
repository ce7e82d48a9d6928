"""The run report: one JSON per DAG run with what every stage did, and its human-readable form.

Stdlib only, so the demo and any CLI can render a report without importing Airflow. The report operator
stores it in the artifact store (``<run>/report.json`` and ``<root>/<dag_id>/latest_report.json``).
"""

from __future__ import annotations

from typing import Any

#: XCom key of the reason a stage skipped itself (``train``: inputs unchanged since the champion).
SKIP_REASON_KEY = "skip_reason"

def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def _verdict_line(verdict: dict[str, Any]) -> str:
    checks = verdict.get("checks") or []
    label = f"  gate {verdict['gate']:<10} "
    if verdict["gate"] == "champion" and (verdict.get("details") or {}).get("decision") == "does_not_beat":
        # Not better is a decision, not a failure: promotion keeps the champion.
        return f"{label}NOT BETTER: {verdict['message'].replace('champion gate failed: ', '')}"
    if not verdict.get("passed"):
        return f"{label}FAILED: {verdict['message']}"
    if verdict["gate"] == "champion":
        return f"{label}{verdict['message'].replace('champion gate passed: ', 'PASSED: ')}"
    skipped = sum(1 for c in checks if str(c.get("reason", "")).startswith("skipped"))
    text = f"{label}PASSED ({len(checks)} checks" + (f", {skipped} skipped" if skipped else "") + ")"
    highlights = []
    for prefix in ("psi.", "ks."):
        drift = [c for c in checks if c["name"].startswith(prefix) and c.get("observed") is not None]
        if drift:
            worst = max(drift, key=lambda c: c["observed"])
            highlights.append(f"max {prefix[:-1].upper()} {worst['observed']:.4f} ({worst['name'][len(prefix):]})")
    return text + (": " + ", ".join(highlights) if highlights else "")


def _gate_lines(report: dict[str, Any], task_id: str, state) -> list[str]:
    """One line per gate verdict of a gate task (from its result, or the verdicts a failed gate pushed)."""
    result = report.get("stages", {}).get(task_id) or {}
    verdicts = report.get("gate_verdicts", {}).get(task_id)
    if not verdicts:
        if "verdicts" in result:
            verdicts = list(result["verdicts"].values())
        elif "verdict" in result:
            verdicts = [result["verdict"]]
    if not verdicts:
        known = task_id in report.get("stages", {}) or task_id in report.get("task_states", {})
        return [f"  {task_id:<15}{state(task_id)}"] if known else []
    # The data verdict is shown once, before training (gate_model copies it onto the candidate's run).
    return [_verdict_line(v) for v in verdicts if task_id == "gate_data" or v["gate"] != "data"]


def _dbt_summary(dbt: dict[str, Any]) -> str:
    return (
        f"{dbt['models_built']}/{dbt['models_total']} models built, "
        f"{dbt['tests_passed']}/{dbt['tests_total']} tests passed"
        + (f", {dbt['tests_warned']} warned" if dbt.get("tests_warned") else "")
        + f" ({dbt['elapsed_seconds']:.1f} s, {dbt.get('warehouse', '')})"
    )


def _dataset_summary(ds: dict[str, Any]) -> str:
    return (
        f"{ds['relation']}: train {ds['rows']['train']} rows, holdout {ds['rows']['test']} rows, "
        f"label rate {ds['label_rate']['train']:.3f}/{ds['label_rate']['test']:.3f}, fingerprint {ds['fingerprint']}"
    )


def _teardown_summary(td: dict[str, Any]) -> str:
    return (
        f"{len(td['jobs'])} job(s), {len(td['stopped_jobs'])} stopped, "
        f"{td['compute_seconds']:.1f} compute s, est. ${td['cost_usd']:.4f}"
        + ("; scratch removed" if td.get("scratch_removed") else "")
    )


def format_report(report: dict[str, Any]) -> str:
    """Render a run report as the lines an on-call engineer reads first."""
    s = report.get("stages", {})
    states = report.get("task_states", {})
    lines = [f"Pipeline {report.get('pipeline')}  DAG {report.get('dag_id')}  run {report.get('run_id')}"]
    if trigger := trigger_label(report.get("trigger")):
        lines.append(f"  trigger        {trigger}")

    errors = report.get("errors") or {}

    def state(task: str) -> str:
        text = states.get(task) or ("success" if s.get(task) else "no result")
        return f"{text}: {errors[task]}" if errors.get(task) else text

    def stage_line(label: str, task: str, render) -> str:
        """The stage's summary as ``render`` words it, or the task's state when it left none."""
        result = s.get(task)
        return f"  {label:<15}" + (render(result) if result else state(task))

    lines.append(stage_line("dbt build", "dbt_build", _dbt_summary))
    lines.append(stage_line("dataset", "export_dataset", _dataset_summary))
    lines += _gate_lines(report, "gate_data", state)
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
        cost = tr.get("cost") or {}
        if cost.get("spot") or info.get("resumed_from_round"):
            hosts = info.get("host_train_seconds") or {}
            lines.append(
                "  spot           "
                + (f"${cost['hourly_price_usd']}/h spot" if cost.get("hourly_price_usd") is not None else "spot price unknown")
                + (f", saved ${cost['spot_savings_usd']:.4f} vs on-demand ${cost['on_demand_usd']:.4f}"
                   if cost.get("spot_savings_usd") is not None and cost.get("on_demand_usd") is not None else "")
                + (f"; resumed from checkpoint at round {info['resumed_from_round']} after an interruption, "
                   f"{info.get('rounds_trained', '?')} rounds trained after it" if info.get("resumed_from_round") else
                   "; no interruption")
                + (f"; {len(hosts)} hosts" if len(hosts) > 1 else "")
            )
        hosts = info.get("host_train_seconds") or {}
        if len(hosts) > 1:
            lines.append("  hosts          " + ", ".join(f"{h} {t:.2f} s" for h, t in hosts.items()))
    else:
        skipped = (report.get("skipped") or {}).get("train")
        lines.append(f"  training       {f'skipped: {skipped}' if skipped else state('train')}")
    lines.append(stage_line(
        "registered", "register", lambda reg: f"{reg['model_name']} version {reg['version']} (MLflow run {reg['run_id']})"
    ))
    if "gate_model" in s or "gate_model" in states or "gate_model" in report.get("gate_verdicts", {}):
        lines += _gate_lines(report, "gate_model", state)
    else:
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
    lines.append(stage_line("teardown", "teardown", _teardown_summary))
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


def _kept_reason(promote: dict[str, Any], candidate: str) -> str:
    """Why the champion stayed, in a few words: the compared numbers when there are some."""
    if promote.get("decision") == "rejected":
        why = str(promote.get("reason") or "").rsplit("; not approved by ", 1)[-1]
        return f"candidate {candidate} not approved by {why}"
    metric, cand, champ = promote.get("primary_metric"), promote.get("candidate_value"), promote.get("champion_value")
    if isinstance(cand, int | float) and isinstance(champ, int | float):
        need = promote.get("min_improvement")
        return (f"candidate {candidate} {metric} {cand:.4f} vs {champ:.4f}"
                + (f", needs +{need:g}" if isinstance(need, int | float) and need else ""))
    return f"candidate {candidate} did not beat it"


def _failed_gate_reason(report: dict[str, Any], task_id: str) -> str:
    """The failed checks of a failed gate task, from the verdicts it pushed before failing."""
    verdicts = (report.get("gate_verdicts") or {}).get(task_id) or []
    failed = [c for v in verdicts if not v.get("passed") and v.get("gate") != "champion"
              for c in v.get("checks") or [] if not c.get("passed")]
    names = [f"{c['name']} {_fmt(c.get('observed'))}" for c in failed[:3]]
    return ", ".join(names) + (f" (+{len(failed) - 3} more)" if len(failed) > 3 else "")


#: The longest drift reason kept in a run's outcome (the note and the history entry stay one readable line).
TRIGGER_REASON_CHARS = 300


def trigger_label(trigger: dict[str, Any] | None) -> str | None:
    """Why a run started, when something other than its cron or a person started it:
    ``drift-triggered (score_churn run scheduled__...: <the monitoring reason>)``; ``None`` otherwise.

    :param trigger: the report's ``trigger`` (see :func:`airflow_retrain.monitoring.drift.drift_trigger`).
    """
    if not trigger or trigger.get("kind") != "drift":
        return None
    reason = " ".join(str(trigger.get("reason") or "no reason recorded").split())
    if len(reason) > TRIGGER_REASON_CHARS:
        reason = reason[:TRIGGER_REASON_CHARS - 1] + "…"
    earlier = int(trigger.get("events") or 1) - 1
    more = f"; +{earlier} earlier request(s)" if earlier > 0 else ""
    return (f"drift-triggered ({trigger.get('scoring_dag_id') or 'scoring'} run "
            f"{trigger.get('scoring_run_id') or '?'}: {reason}{more})")


def run_outcome(report: dict[str, Any]) -> str:
    """:func:`decision_outcome`, headed by why the run started when drift started it (``report["trigger"]``):
    ``drift-triggered (score_churn run ...: PSI ...): promoted v3 (was v2)``. A cron or manual run: unchanged."""
    outcome = decision_outcome(report)
    label = trigger_label(report.get("trigger"))
    return f"{label}: {outcome}" if label else outcome


def decision_outcome(report: dict[str, Any]) -> str:
    """One line saying what the run did and why: ``promoted v3 (was v1)``, ``kept v1 because candidate v2
    roc_auc 0.8412 vs 0.8450, needs +0.002``, ``gate failed: metrics: roc_auc 0.7100 (candidate v2;
    champion unchanged)`` or ``failed at train: <error> (no candidate; champion unchanged)`` (the error line
    the failed task recorded, ``errors`` in the report: see :mod:`airflow_retrain.failure`); ``dry run: ...``
    when the run was triggered with ``dry_run``; ``skipped training: inputs unchanged since champion v1 ...``
    when the inputs were those of the champion.

    It becomes the DAG run's note (run list and grid) and heads the dashboard's run row, so a run that
    promoted and one that kept the old champion no longer look the same.
    """
    stages = report.get("stages") or {}
    states = report.get("task_states") or {}
    register = stages.get("register") or {}
    candidate = f"v{register['version']}" if register.get("version") else "no candidate"
    promote = stages.get("promote") or {}
    decision = promote.get("decision")
    prefix = "dry run: " if (report.get("params") or {}).get("dry_run") else ""
    if decision == "promoted":
        before = promote.get("champion_before")
        return f"promoted v{promote.get('champion_after')}" + (f" (was v{before})" if before else " (first champion)")
    if decision in ("kept_champion", "rejected"):
        return f"kept v{promote.get('champion_after')} because {_kept_reason(promote, candidate)}"
    if decision == "already_champion":
        return f"kept v{promote.get('champion_after')} (already champion)"
    if decision == "dry_run":
        return f"dry run: {candidate} {promote.get('reason') or 'not promoted'}"
    errors = report.get("errors") or {}
    verdicts = report.get("gate_verdicts") or {}

    def gate_decided(task: str) -> bool:
        """A gate that failed on its verdict; one that failed before pushing it (MLflow unreachable, say)
        failed as any task does, with its error."""
        return task.startswith(GATE_TASK_PREFIX) and (bool(verdicts.get(task)) or not errors.get(task))

    # The first failure in pipeline order is the cause: gate_dbt also fails after a failed dbt_build.
    failed = [t for t, s in states.items() if s in ("failed", "upstream_failed")]
    first = next((t for t in failed if states[t] == "failed"), failed[0] if failed else None)
    if first and states[first] == "failed" and gate_decided(first):
        failed_gates = sorted(t for t, s in states.items() if s == "failed" and gate_decided(t))
        parts = [t[len(GATE_TASK_PREFIX):] + (f": {why}" if (why := _failed_gate_reason(report, t)) else "")
                 for t in failed_gates]
        return f"{prefix}gate failed: {'; '.join(parts)} ({candidate}; champion unchanged)"
    if first:
        error = errors.get(first)
        return f"{prefix}failed at {first}" + (f": {error}" if error else "") + f" ({candidate}; champion unchanged)"
    if skipped := (report.get("skipped") or {}).get("train"):
        return f"{prefix}skipped training: {skipped}"
    return f"{prefix}no decision ({candidate})"
