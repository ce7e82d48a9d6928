"""The dashboard page: server-rendered HTML from :func:`airflow_retrain.ui.app.collect`'s data.

The first screen (1,366 x 768) answers "did last night's retrain ship a better model, and if not, why, and
what did it cost" for every pipeline: one summary row each (last run's outcome and reason, champion and its
primary metric with the trend, cost this week, next run). Below, per pipeline: recent runs with reasons,
the promotion history, the gate evidence folded by gate (``<details>``), with a ``monitoring:`` block the
drift view (:mod:`airflow_retrain.ui.monitoring`), then cost by week.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from airflow_retrain.ui import data
from airflow_retrain.ui.charts import bar_chart, line_chart
from airflow_retrain.ui.monitoring import render_monitoring

CSS = """
body{font-family:system-ui,sans-serif;margin:12px 16px;color:#1f2933;background:#fff;font-size:14px}
h1{font-size:1.3em;margin:0 0 8px}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:4px 0 10px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
font-size:.92em;vertical-align:top}th{background:#f5f7fa}.muted{color:#7b8794}
.state{display:inline-block;width:12px;height:12px;margin-right:2px;border-radius:2px;background:#cbd2d9}
.success{background:#2f9e44}.failed{background:#e03131}.upstream_failed{background:#f59f00}.running{background:#1c7ed6}
.skipped{background:#f783ac}.queued{background:#868e96}.outcome-promoted{color:#2f9e44;font-weight:600}
.outcome-kept{color:#1c7ed6;font-weight:600}.outcome-failed{color:#e03131;font-weight:600}
.outcome-running{color:#495057;font-weight:600}
svg .line{fill:none;stroke:#1c7ed6;stroke-width:2}svg .dot{fill:#1c7ed6}svg .champion{fill:#f59f00}
svg .bar{fill:#2f9e44}svg .axis{font-size:10px;fill:#52606d}svg .grid{stroke:#e4e7eb}
.glance{display:grid;grid-template-columns:minmax(340px,2.2fr) 1.3fr 1fr 1fr;gap:0;border:1px solid #ddd;
border-radius:6px;margin:6px 0}.glance>div{padding:8px 12px;border-right:1px solid #eee}
.glance>div:last-child{border-right:none}.label{font-size:.78em;text-transform:uppercase;color:#7b8794}
.big{font-size:1.25em;font-weight:600;overflow-wrap:anywhere}.up{color:#2f9e44}.down{color:#e03131}
details{margin:2px 0}summary{cursor:pointer}.pass{color:#2f9e44}.fail{color:#e03131}
"""


def _e(value: Any) -> str:
    if value is None or value == "":
        return '<span class="muted">-</span>'
    if isinstance(value, float):
        return f"{value:.4f}"
    return escape(str(value))


def outcome_class(outcome: str, trigger: str | None = None) -> str:
    """The colour of an outcome by what the run decided (a drift-triggered run's ``trigger`` label heads it)."""
    if trigger and outcome.startswith(f"{trigger}: "):
        outcome = outcome[len(trigger) + 2:]
    if outcome.startswith(("promoted", "dry run: v")):
        return "outcome-promoted"
    if outcome.startswith("kept"):
        return "outcome-kept"
    if outcome.startswith(("running", "queued")):
        return "outcome-running"
    return "outcome-failed" if "fail" in outcome else ""


def _when(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def _stages(stages: dict[str, str | None]) -> str:
    return "".join(
        f'<span class="state {escape(str(state))}" title="{escape(task)}: {escape(str(state))}"></span>'
        for task, state in stages.items()
    )


def week_cost(runs: list[dict[str, Any]], now: datetime | None = None) -> float | None:
    """USD of the runs that ended this ISO week (from Monday 00:00 UTC); ``None`` when no run says."""
    now = now or datetime.now(UTC)
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    total, known = 0.0, False
    for run in runs:
        when = run.get("end_date") or run.get("run_after")
        usd = (run.get("cost") or {}).get("usd")
        if not when or usd is None:
            continue
        if datetime.fromisoformat(when.replace("Z", "+00:00")) >= monday:
            total, known = total + float(usd), True
    return total if known else None


def champion_trend(model: dict[str, Any]) -> tuple[float | None, str | None]:
    """The champion's primary metric minus the previous champion's (the version promoted before it)."""
    champion = model.get("champion") or {}
    promoted = [h for h in reversed(model.get("history") or []) if h.get("decision") == "promoted"]
    previous = next((str(h.get("from")) for h in reversed(promoted) if str(h.get("to")) == str(champion.get("version"))
                     and h.get("from")), None)
    by_version = {r["version"]: r for r in model.get("versions") or []}
    before = (by_version.get(previous) or {}).get("metric") if previous else None
    if champion.get("metric") is None or before is None:
        return None, previous
    return float(champion["metric"]) - float(before), previous


def _glance(p: dict[str, Any]) -> str:
    runs = p["runs"]
    # The last *finished* run answers "what happened"; one in flight is a line below it.
    last = next((r for r in runs if r.get("state") not in ("running", "queued")), None)
    active = next((r for r in runs if r.get("state") in ("running", "queued")), None)
    now = (f'<div class="outcome-running">now {escape(active["outcome"])}</div>' if active else "")
    if last:
        outcome = last["outcome"]
        headline = (f'<div class="big {outcome_class(outcome, last.get("trigger"))}" data-role="last-outcome">{escape(outcome)}</div>'
                    f'<div class="muted">{escape(last["run_id"])} · {escape(str(last["state"]))} · '
                    f"{_when(last.get('end_date') or last.get('start_date'))}</div>{now}")
    else:
        headline = f'<div class="big muted">no finished run yet</div>{now}'
    model = p.get("model") or {}
    champion = model.get("champion")
    if champion:
        delta, previous = champion_trend(model)
        trend = ("" if delta is None else
                 f' <span class="{"up" if (delta >= 0) == model.get("greater_is_better", True) else "down"}">'
                 f'{"▲" if delta >= 0 else "▼"} {delta:+.4f} vs v{escape(str(previous))}</span>')
        champ = (f'<div class="big" data-role="champion">v{escape(champion["version"])}</div>'
                 f"<div>{escape(model['primary_metric'])} <b>{_e(champion['metric'])}</b>{trend}</div>")
    else:
        champ = f'<div class="big muted">none yet</div><div class="muted">{escape(model.get("error", "")[:120])}</div>'
    cost = week_cost(runs)
    budget = p.get("weekly_budget_usd")
    cost_text = "-" if cost is None else f"${cost:.2f}"
    budget_text = "" if budget is None else f'<div class="muted">budget ${budget:.2f}/week</div>'
    paused = "; paused" if p.get("paused") else ""
    return (
        f'<div class="glance" data-dag="{escape(p["dag_id"])}"><div><div class="label">{escape(p["dag_id"])} · last run</div>'
        f'{headline}</div><div><div class="label">champion</div>{champ}</div>'
        f'<div><div class="label">cost this week</div><div class="big">{cost_text}</div>{budget_text}</div>'
        f'<div><div class="label">next run</div><div class="big">{_when(p.get("next_run"))}</div>'
        f'<div class="muted">{escape(str(p["schedule"]))}{paused}</div></div></div>'
    )


def _evidence(row: dict[str, Any]) -> str:
    """Each gate of one version folded: verdict and message as the summary, its checks inside."""
    out = []
    for gate in row.get("gates") or []:
        name = gate["gate"]
        checks = sorted((k[len(f"gate.{name}."):], v) for k, v in (row.get("metrics") or {}).items()
                        if k.startswith(f"gate.{name}.") and k != f"gate.{name}.passed")
        cls = "pass" if gate["verdict"] == "passed" else "fail"
        table = "".join(f"<tr><td>{escape(k)}</td><td>{_e(v)}</td></tr>" for k, v in checks)
        out.append(
            f'<details><summary><b>{escape(name)}</b>: <span class="{cls}">{escape(gate["verdict"])}</span>'
            f" {escape(gate['evidence'][:200])} <span class=muted>({len(checks)} checks)</span></summary>"
            + (f"<table><tr><th>check</th><th>observed</th></tr>{table}</table>" if table else "") + "</details>"
        )
    return "".join(out) or '<p class="muted">no gate verdicts recorded</p>'


def _history(history: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(_when(h.get('at')))}</td><td>{_e('v' + str(h['version']) if h.get('version') else None)}</td>"
        f"<td>{_e(h.get('decision'))}</td>"
        f"<td>{_e(str(h.get('alias') or '') + ' ' + ('v' + str(h['from']) if h.get('from') else 'none') + ' → ' + ('v' + str(h['to']) if h.get('to') else 'none'))}</td>"
        f"<td>{_e(h.get('reason'))}</td><td>{_e(h.get('dag_run'))}</td></tr>"
        for h in history
    )
    return ("<table><tr><th>when</th><th>Version</th><th>Decision</th><th>alias move</th><th>reason</th><th>DAG run</th></tr>"
            f"{rows or '<tr><td colspan=6 class=muted>no promotions yet</td></tr>'}</table>")


def _details(p: dict[str, Any]) -> str:
    out = [f'<h2 id="{escape(p["dag_id"])}">{escape(p["dag_id"])}</h2>']
    runs = "".join(
        f"<tr><td>{escape(r['run_id'])}</td><td>{_e(_when(r.get('end_date') or r.get('run_after')))}</td>"
        f'<td class="{outcome_class(r["outcome"], r.get("trigger"))}">{escape(r["outcome"])}</td>'
        f"<td>{_stages(r['stages'])}</td>"
        f"<td>{'$' + format(r['cost']['usd'], '.4f') if r['cost']['usd'] is not None else '-'}</td></tr>"
        for r in p["runs"]
    )
    out.append("<h3>Runs</h3><table><tr><th>run</th><th>ended</th><th>outcome and reason</th><th>tasks</th>"
               f"<th>cost</th></tr>{runs or '<tr><td colspan=5 class=muted>no runs yet</td></tr>'}</table>")
    model = p.get("model")
    if model and not model.get("error"):
        metric = model["primary_metric"]
        out.append(f"<h3>Promotion history of {escape(model['model_name'])}</h3>{_history(model['history'])}")
        champion = (model.get("champion") or {}).get("version")
        out.append(line_chart([(f"v{r['version']}", r["metric"]) for r in model["versions"]],
                              f"{metric} by version", highlight=f"v{champion}" if champion else None))
        shown = [r for r in reversed(model["versions"]) if r is model.get("champion") or r is model["versions"][-1]]
        for row in shown[:2]:
            role = "champion" if row is model.get("champion") else "latest candidate"
            out.append(f"<h3>Gate evidence: v{escape(row['version'])} ({role})"
                       f"{' — ' + escape(row['decision']) if row.get('decision') else ''}</h3>{_evidence(row)}")
    elif model:
        out.append(f'<p class="muted">MLflow: {escape(model["error"])}</p>')
    if p.get("monitoring"):
        out.append(render_monitoring(p["monitoring"]))
    return "\n".join(out)


def render(overview: dict[str, Any]) -> str:
    """The whole page (inline CSS and SVG, no script)."""
    # Pipelines with a spec (a model); the other DAGs tagged ``retrain`` (sweep, rollback) stay in the JSON.
    pipelines = [p for p in overview["pipelines"] if p.get("model") is not None] or overview["pipelines"]
    glance = "".join(_glance(p) for p in pipelines) or "<p>No retraining DAGs (tag <code>retrain</code>).</p>"
    details = "\n".join(_details(p) for p in pipelines)
    weeks = overview["weekly_costs"]
    week_rows = "".join(
        f"<tr><td>{escape(w['week'])}</td><td>{w['runs']}</td><td>{w['gpu_hours']:.4f}</td><td>${w['usd']:.4f}</td></tr>"
        for w in weeks
    )
    ledger = overview["ledger"]
    ledger_line = (f"Cost ledger: {ledger['entries']} entries." if ledger.get("available")
                   else f"Cost ledger: {escape(ledger.get('reason', data.LEDGER_MISSING))}; costs below come from the run reports.")
    actions = "".join(
        "<tr>" + "".join(f"<td>{_e(a.get(k))}</td>" for k in ("when", "what", "where", "usd")) + "</tr>"
        for a in overview["teardown_actions"]
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Retraining</title>
<style>{CSS}</style></head><body>
<h1>Retraining</h1>
{glance}
{details}
<h2>Cost by week</h2><p>{ledger_line}</p>
{bar_chart([(w['week'], w['usd']) for w in weeks], 'USD per week (' + overview['cost_source'] + ')')}
<table><tr><th>week (from Monday)</th><th>runs</th><th>GPU-hours</th><th>USD</th></tr>{week_rows}</table>
<h2>Teardown actions</h2>
<table><tr><th>when</th><th>what</th><th>where</th><th>USD</th></tr>{actions or '<tr><td colspan=4 class=muted>none</td></tr>'}</table>
</body></html>"""
