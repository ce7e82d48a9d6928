"""The retraining dashboard app, mounted by the plugin at ``/retrain`` in Airflow's API server.

Plugin apps are public by default: here the app itself depends on Airflow's authentication
(``requires_authenticated``: no token -> 401, a bad token -> 403; a Bearer token or the UI's ``_token``
cookie, so the page also works inside the UI's iframe), and FastAPI's ``/docs``, ``/redoc`` and
``/openapi.json`` are not served at all. Data comes from :mod:`airflow_retrain.ui.data`.

The REST calls carry the viewer's token, so where they go comes from configuration alone
(:func:`airflow_api_url`), never from the request's ``Host`` or ``X-Forwarded-*`` headers; and every URL the
page or the JSON shows passes through :func:`airflow_retrain.urls.redact_value` first.
"""

from __future__ import annotations

import asyncio
import os
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_retrain.config import retrain_home
from airflow_retrain.spec.loader import load_specs
from airflow_retrain.ui import data
from airflow_retrain.ui.charts import bar_chart, line_chart
from airflow_retrain.urls import redact_value

URL_PREFIX = "/retrain"
RUNS_PER_PIPELINE = 10


def _viewer_token(request: Request) -> str:
    """The token the viewer authenticated with (already checked by the app's dependency)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get("_token", "")


API_URL_ENV = "RETRAIN_AIRFLOW_API_URL"
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def _conf(section: str, key: str) -> str | None:
    from airflow.configuration import conf

    try:
        value = conf.get(section, key, fallback=None)
    except Exception:  # noqa: BLE001 - a config without the section
        return None
    return value.strip() if value and value.strip() else None


def airflow_api_url() -> str:
    """The root URL of Airflow's REST API that the dashboard calls with the viewer's token.

    From configuration only, in order: ``RETRAIN_AIRFLOW_API_URL``; Airflow's ``[retrain] airflow_api_url``;
    ``[api] base_url`` (the URL Airflow's executors derive the Execution API from; a path-only one is
    served by this API server itself); else ``http://<[api] host>:<[api] port>`` (``localhost`` for a
    wildcard host). Never from the request: the ``Host`` and ``X-Forwarded-*`` headers are the viewer's to
    choose, and the viewer's token must not go wherever they point.

    :raises ValueError: when the configured value is not an ``http(s)://host`` URL, naming the option.
    """
    chosen = next(
        ((name, value) for name, value in (
            (API_URL_ENV, os.environ.get(API_URL_ENV, "").strip() or None),
            ("[retrain] airflow_api_url", _conf("retrain", "airflow_api_url")),
            ("[api] base_url", _conf("api", "base_url")),
        ) if value),
        None,
    )
    host = _conf("api", "host") or ""
    host = "localhost" if host in _WILDCARD_HOSTS else (f"[{host}]" if ":" in host and not host.startswith("[") else host)
    local = f"http://{host}:{_conf('api', 'port') or '8080'}"
    if chosen is None:
        return local
    name, value = chosen
    if value.startswith("/"):  # Airflow served under a path prefix of this very server
        return local + value.rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"retrain dashboard: {name} = {value!r} is not an http(s)://host[:port] URL of Airflow's "
                         f"API server; set {API_URL_ENV} or [retrain] airflow_api_url to one")
    return value.rstrip("/")


def _api_for(request: Request) -> data.AirflowApi:
    return data.AirflowApi(airflow_api_url(), _viewer_token(request))


def _specs_by_dag_id() -> dict[str, Any]:
    folder = os.environ.get("RETRAIN_SPECS_DIR")
    if not folder:
        home = retrain_home()
        if home is None:
            return {}
        folder = str(Path(home) / "include" / "pipelines")
    return {spec.dag_id: spec for spec in load_specs(folder).specs}


def _model(spec: Any) -> dict[str, Any]:
    from airflow_retrain.hooks.mlflow import MlflowHook

    return data.model_overview(MlflowHook(spec.registry.connection_id), spec.registry.model_name,
                               spec.registry.primary_metric)


async def _runs(api: data.AirflowApi, dag_id: str) -> list[dict[str, Any]]:
    runs = await data.recent_runs(api, dag_id, RUNS_PER_PIPELINE)

    async def fill(run: dict[str, Any]) -> None:
        run["stages"], run["report"] = await asyncio.gather(
            data.run_stages(api, dag_id, run["run_id"]), data.run_report(api, dag_id, run["run_id"])
        )
        run["cost"] = data.run_cost(run["report"])
        if run["report"]:
            from airflow_retrain.report import run_outcome

            run["outcome"] = run["note"] or run_outcome(run["report"])
        else:
            run["outcome"] = run["note"] or (run["state"] or "")

    await asyncio.gather(*(fill(r) for r in runs))
    return runs


async def collect(api: data.AirflowApi) -> dict[str, Any]:
    """Everything the page shows, as plain data (also served as JSON at ``/retrain/api/overview``)."""
    pipelines = await data.list_pipelines(api)
    specs = await run_in_threadpool(_specs_by_dag_id)
    run_lists = await asyncio.gather(*(_runs(api, p["dag_id"]) for p in pipelines))
    for pipeline, runs in zip(pipelines, run_lists, strict=True):
        pipeline["runs"] = runs
        spec = specs.get(pipeline["dag_id"])
        pipeline["model"] = await run_in_threadpool(_model, spec) if spec else None
    warehouse = next((s.warehouse_connection_id for s in specs.values()), "retrain_warehouse")
    ledger = await run_in_threadpool(data.ledger_rows, warehouse)
    if ledger.get("available"):
        weekly, cost_source = data.weekly_costs(ledger["rows"]), "cost ledger"
    else:
        entries = [
            {"ts": r.get("end_date") or r.get("run_after"), "usd": r["cost"]["usd"], "gpu_hours": r["cost"]["gpu_hours"]}
            for p in pipelines
            for r in p["runs"]
            if r["report"]
        ]
        weekly, cost_source = data.weekly_costs(entries), "run reports"
    reports = [r["report"] for p in pipelines for r in p["runs"] if r["report"]]
    # Reports, notes and error messages stored by older runs may still hold a URL with credentials.
    return redact_value({
        "pipelines": pipelines,
        "ledger": {k: v for k, v in ledger.items() if k != "rows"} | {"entries": len(ledger.get("rows", []))},
        "weekly_costs": weekly,
        "cost_source": cost_source,
        "teardown_actions": data.teardown_actions(ledger, reports),
    })


async def _collected(request: Request) -> dict[str, Any]:
    """:func:`collect` for this viewer, or one clear HTTP error saying which API answered what."""
    try:
        api = _api_for(request)
    except ValueError as e:
        raise HTTPException(status_code=500, detail=str(e)) from None
    try:
        return await collect(api)
    except httpx.HTTPStatusError as e:
        code = e.response.status_code
        raise HTTPException(
            status_code=code if code in (401, 403) else 502,
            detail=f"retrain dashboard: Airflow's REST API at {api.base_url} answered {code} to {e.request.url.path}",
        ) from None
    except httpx.HTTPError as e:
        raise HTTPException(
            status_code=502,
            detail=f"retrain dashboard: cannot reach Airflow's REST API at {api.base_url} ({type(e).__name__}); "
            f"set [api] base_url or [retrain] airflow_api_url to the API server's URL",
        ) from None


def create_app() -> FastAPI:
    from airflow.api_fastapi.core_api.security import requires_authenticated

    app = FastAPI(
        title="airflow-retrain dashboard",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(requires_authenticated())],
    )

    @app.get("/", response_class=HTMLResponse)
    async def dashboard(request: Request) -> HTMLResponse:
        return HTMLResponse(render(await _collected(request)))

    @app.get("/api/overview")
    async def overview(request: Request) -> JSONResponse:
        result = await _collected(request)
        for pipeline in result["pipelines"]:
            for run in pipeline["runs"]:
                run.pop("report", None)  # the XCom run_report holds it; keep the overview small
        return JSONResponse(result)

    return app


# --- rendering ------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#1f2933;background:#fff}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1em}
table{border-collapse:collapse;margin:6px 0 12px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
font-size:.9em;vertical-align:top}th{background:#f5f7fa}.muted{color:#7b8794}
.state{display:inline-block;width:12px;height:12px;margin-right:2px;border-radius:2px;background:#cbd2d9}
.success{background:#2f9e44}.failed{background:#e03131}.upstream_failed{background:#f59f00}.running{background:#1c7ed6}
.skipped{background:#ced4da}.queued{background:#868e96}.outcome-promoted{color:#2f9e44;font-weight:600}
.outcome-kept{color:#1c7ed6;font-weight:600}.outcome-failed{color:#e03131;font-weight:600}
svg .line{fill:none;stroke:#1c7ed6;stroke-width:2}svg .dot{fill:#1c7ed6}svg .champion{fill:#f59f00}
svg .bar{fill:#2f9e44}svg .axis{font-size:10px;fill:#52606d}svg .grid{stroke:#ccc}
.cards{display:flex;gap:16px;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:220px}
"""


def _e(value: Any) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    if isinstance(value, float):
        return f"{value:.4f}"
    return escape(str(value))


def _outcome_class(outcome: str) -> str:
    if outcome.startswith("promoted"):
        return "outcome-promoted"
    if outcome.startswith("kept"):
        return "outcome-kept"
    return "outcome-failed" if "fail" in outcome else ""


def _gates(gates: list[dict[str, str]]) -> str:
    return "<br>".join(
        f"{escape(g['gate'])}: <b>{escape(g['verdict'])}</b> {escape(g['evidence'])}" for g in gates
    ) or "-"


def _stages(stages: dict[str, str | None]) -> str:
    return "".join(
        f'<span class="state {escape(str(state))}" title="{escape(task)}: {escape(str(state))}"></span>'
        for task, state in stages.items()
    )


def _version_card(title: str, row: dict[str, Any] | None, metric: str) -> str:
    if not row:
        return f'<div class="card"><h3>{escape(title)}</h3><p class="muted">none</p></div>'
    metrics = "".join(
        f"<tr><td>{escape(k)}</td><td>{_e(v)}</td></tr>"
        for k, v in sorted(row["metrics"].items())
        if not k.startswith("training_")
    )
    return (
        f'<div class="card" data-role="{escape(title.lower())}"><h3>{escape(title)}: version {escape(row["version"])}</h3>'
        f"<p>{escape(metric)} = <b>{_e(row['metric'])}</b></p><table>{metrics}</table></div>"
    )


def _pipeline(p: dict[str, Any]) -> str:
    out = [f'<h2 id="{escape(p["dag_id"])}">{escape(p["dag_id"])}</h2>',
           f"<p>Schedule: <b>{escape(str(p['schedule']))}</b>; next run: {_e(p['next_run'])}"
           + ("; <b>paused</b>" if p.get("paused") else "") + "</p>"]
    model = p.get("model")
    if model and not model.get("error"):
        metric = model["primary_metric"]
        out.append('<div class="cards">' + _version_card("Champion", model["champion"], metric)
                   + _version_card("Challenger", model["challenger"], metric) + "</div>")
        champion = (model.get("champion") or {}).get("version")
        out.append(f"<h3>{escape(metric)} across versions of {escape(model['model_name'])}</h3>")
        out.append(line_chart([(f"v{r['version']}", r["metric"]) for r in model["versions"]],
                              f"{metric} by version", highlight=f"v{champion}" if champion else None))
        rows = "".join(
            f"<tr><td>v{escape(r['version'])}</td><td>{escape(', '.join(r['aliases']))}</td><td>{_e(r['metric'])}</td>"
            f"<td>{_gates(r['gates'])}</td>"
            f"<td>{_e(r['decision'])}</td><td>{_e(r['reason'])}</td></tr>"
            for r in reversed(model["versions"])
        )
        out.append("<h3>Versions, gate verdicts and evidence</h3><table><tr><th>version</th><th>aliases</th>"
                   f"<th>{escape(metric)}</th><th>gates</th><th>decision</th><th>reason</th></tr>{rows}</table>")
        history = "".join(
            "<tr>" + "".join(f"<td>{_e(h.get(k))}</td>" for k in ("version", "decision", "reason", "dag_run")) + "</tr>"
            for h in model["history"]
        )
        out.append("<h3>Promotion history</h3><table><tr><th>version</th><th>decision</th><th>reason</th>"
                   f"<th>DAG run</th></tr>{history or '<tr><td colspan=4 class=muted>no promotions yet</td></tr>'}</table>")
    elif model:
        out.append(f'<p class="muted">MLflow: {escape(model["error"])}</p>')
    runs = "".join(
        f"<tr><td>{escape(r['run_id'])}</td><td>{_e(r['state'])}</td>"
        f'<td class="{_outcome_class(r["outcome"])}">{escape(r["outcome"])}</td>'
        f"<td>{_stages(r['stages'])}</td>"
        f"<td>{_e(r['cost']['compute_seconds'])}</td><td>{_e(r['cost']['gpu_hours'])}</td>"
        f"<td>{'$' + format(r['cost']['usd'], '.4f') if r['cost']['usd'] is not None else '-'}</td></tr>"
        for r in p["runs"]
    )
    out.append("<h3>Recent runs</h3><table><tr><th>run</th><th>state</th><th>outcome</th><th>stages</th>"
               f"<th>compute s</th><th>GPU-hours</th><th>cost</th></tr>{runs or '<tr><td colspan=7>no runs yet</td></tr>'}</table>")
    return "\n".join(out)


def render(overview: dict[str, Any]) -> str:
    """The dashboard page (server-rendered HTML, inline SVG charts)."""
    pipelines = "\n".join(_pipeline(p) for p in overview["pipelines"]) or "<p>No retraining DAGs (tag <code>retrain</code>).</p>"
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
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Retraining dashboard</title>
<style>{_CSS}</style></head><body>
<h1>Retraining dashboard</h1>
{pipelines}
<h2>Cost</h2><p>{ledger_line}</p>
{bar_chart([(w['week'], w['usd']) for w in weeks], 'USD per week (' + overview['cost_source'] + ')')}
<table><tr><th>week (from Monday)</th><th>runs</th><th>GPU-hours</th><th>USD</th></tr>{week_rows}</table>
<h2>Teardown actions</h2>
<table><tr><th>when</th><th>what</th><th>where</th><th>USD</th></tr>{actions or '<tr><td colspan=4 class=muted>none</td></tr>'}</table>
</body></html>"""
