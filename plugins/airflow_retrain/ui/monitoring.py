"""The dashboard's drift view of a pipeline with a ``monitoring:`` block: its drift and realised-metric
history, the thresholds it is judged by, and the retrains the data requested, each with the retrain run it
started and that run's outcome.

The history comes from :func:`airflow_retrain.monitoring.history.monitoring_history` (the warehouse's
``retrain_monitoring`` table); a retrain run is matched to the request that started it by the scoring run id
its report's ``trigger`` carries (:func:`airflow_retrain.monitoring.drift.drift_trigger`).
"""

from __future__ import annotations

from html import escape
from typing import Any

from airflow_retrain.ui.charts import line_chart

#: Monitoring runs shown in the table (the charts show up to the history's limit).
TABLE_ROWS = 15


def _e(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return '<span class="muted">-</span>'
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def load_history(pipeline: str, warehouse_conn_id: str | None, limit: int = 60) -> dict[str, Any]:
    """:func:`~airflow_retrain.monitoring.history.monitoring_history`, or why it could not be read
    (synchronous: call it from a worker thread)."""
    from airflow_retrain.monitoring.history import monitoring_history

    try:
        return monitoring_history(pipeline, warehouse_conn_id=warehouse_conn_id, limit=limit)
    except Exception as e:  # noqa: BLE001 - the warehouse may be down or locked by a run: say so, show the rest
        return {"pipeline": pipeline, "runs": [], "retrains_requested": [], "error": f"{type(e).__name__}: {e}"}


def monitoring_view(spec: Any, history: dict[str, Any], retrain_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the drift view shows, as plain data (also in the dashboard's JSON).

    :param spec: the pipeline's spec (with a ``monitoring:`` block).
    :param history: :func:`load_history`'s result.
    :param retrain_runs: the retrain DAG's recent runs as the dashboard collected them (``report``, ``outcome``).
    """
    monitoring = spec.monitoring
    started = {}
    for run in retrain_runs:
        trigger = (run.get("report") or {}).get("trigger") or {}
        if trigger.get("kind") == "drift" and trigger.get("scoring_run_id"):
            started.setdefault(str(trigger["scoring_run_id"]), run)
    requests = []
    for request in history.get("retrains_requested", []):
        run = started.get(str(request.get("dag_run_id")))
        requests.append({**request, "retrain_run_id": run["run_id"] if run else None,
                         "retrain_outcome": run.get("outcome") if run else None})
    return {
        "score_dag_id": spec.score_dag_id,
        "thresholds": monitoring.thresholds.model_dump(),
        "primary_metric": spec.registry.primary_metric,
        "cooldown_hours": monitoring.cooldown_hours,
        "trigger_retrain": monitoring.trigger_retrain,
        "runs": history.get("runs", []),
        "requests": requests,
        "error": history.get("error"),
    }


def _max_psi(run: dict[str, Any]) -> tuple[str | None, float | None]:
    values = [(c, v) for c, v in (run.get("psi") or {}).items() if isinstance(v, int | float)]
    return max(values, key=lambda cv: cv[1]) if values else (None, None)


def _short(when: Any) -> str:
    """``2026-12-01T03:05:00`` -> ``12-01 03:05`` (chart labels stay short)."""
    text = str(when or "")
    return text[5:16].replace("T", " ") if len(text) >= 16 else text


def _thresholds(view: dict[str, Any]) -> str:
    t = view["thresholds"]
    parts = [f"feature PSI > {t['psi_max']:g}" if t.get("psi_max") is not None else None,
             f"KS D > {t['ks_max']:g}" if t.get("ks_max") is not None else None,
             f"drifted share > {t['drifted_share']:.0%}",
             f"prediction PSI > {t['prediction_psi_max']:g}" if t.get("prediction_psi_max") is not None else None,
             f"realised {view['primary_metric']} drop > {t['metric_drop_max']:g}"
             if t.get("metric_drop_max") is not None else None,
             f"at least {t['min_rows']} scored rows"]
    action = (f"requests a retrain, at most one per {view['cooldown_hours']:g} h" if view["trigger_retrain"]
              else "records only (trigger_retrain: false)")
    return escape("Thresholds: " + "; ".join(p for p in parts if p) + f". A crossing {action}.")


def render_monitoring(view: dict[str, Any]) -> str:
    """The drift view of one pipeline: thresholds, charts, the recent monitoring runs, the retrains requested."""
    out = [f"<h3>Drift and realised performance ({escape(view['score_dag_id'])})</h3>",
           f'<p data-role="thresholds">{_thresholds(view)}</p>']
    if view.get("error"):
        out.append(f'<p class="muted">Monitoring history unavailable: {escape(view["error"][:300])}</p>')
    runs = view["runs"]
    if not runs:
        out.append(f'<p class="muted" data-role="no-monitoring">no monitoring runs yet: '
                   f'{escape(view["score_dag_id"])} has not scored with a champion</p>')
        return "\n".join(out)
    oldest_first = list(reversed(runs))
    t = view["thresholds"]
    metric = view["primary_metric"]
    psi_title = "largest feature PSI per scoring run" + (f" (threshold {t['psi_max']:g})" if t.get("psi_max") else "")
    out.append(line_chart([(_short(r["measured_at"]), _max_psi(r)[1]) for r in oldest_first], psi_title))
    pred_title = "prediction PSI per scoring run" + (
        f" (threshold {t['prediction_psi_max']:g})" if t.get("prediction_psi_max") else "")
    out.append(line_chart([(_short(r["measured_at"]), r.get("prediction_psi")) for r in oldest_first], pred_title))
    out.append(line_chart([(_short(r["measured_at"]), r.get("realised_value")) for r in oldest_first],
                          f"realised {metric} per scoring run"))
    rows = []
    for r in runs[:TABLE_ROWS]:
        feature, psi = _max_psi(r)
        decision = "retrain requested" if r.get("retrain_requested") else ("crossed" if r.get("crossed") else "ok")
        rows.append(
            f"<tr><td>{_e(_short(r.get('measured_at')))}</td><td>{_e(r.get('dag_run_id'))}</td>"
            f"<td>{_e('v' + str(r['model_version']) if r.get('model_version') else None)}</td>"
            f"<td>{_e(r.get('rows_scored'))}</td><td>{_e(r.get('drifted_features'))}</td>"
            f"<td>{_e(psi)}{' (' + escape(feature) + ')' if feature else ''}</td><td>{_e(r.get('prediction_psi'))}</td>"
            f"<td>{_e(r.get('realised_value'), 4)}</td><td>{_e(r.get('champion_value'), 4)}</td>"
            f"<td>{escape(decision)}: {_e(r.get('reason'))}</td></tr>"
        )
    out.append(
        "<table data-role=\"monitoring-runs\"><tr><th>measured (UTC)</th><th>scoring run</th><th>champion</th>"
        f"<th>rows</th><th>drifted features</th><th>largest PSI</th><th>prediction PSI</th>"
        f"<th>realised {escape(metric)}</th><th>champion holdout</th><th>decision and reason</th></tr>"
        + "".join(rows) + "</table>"
    )
    requests = "".join(
        f"<tr><td>{_e(_short(q.get('measured_at')))}</td><td>{_e(q.get('dag_run_id'))}</td><td>{_e(q.get('reason'))}</td>"
        f"<td>{_e(q.get('retrain_run_id'))}</td><td>{_e(q.get('retrain_outcome'))}</td></tr>"
        for q in view["requests"]
    )
    out.append(
        "<h3>Retrains the data requested</h3><table data-role=\"drift-retrains\"><tr><th>requested (UTC)</th>"
        "<th>scoring run</th><th>why</th><th>retrain run</th><th>its outcome</th></tr>"
        + (requests or '<tr><td colspan=5 class=muted>none: no threshold crossing requested a retrain</td></tr>')
        + "</table>"
    )
    return "\n".join(out)
