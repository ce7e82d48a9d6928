"""The retraining dashboard app, mounted by the plugin at ``/retrain`` in Airflow's API server.

Plugin apps are public by default: here the app itself depends on Airflow's authentication
(``requires_authenticated``: no token -> 401, a bad token -> 403; a Bearer token or the UI's ``_token``
cookie, so the page also works inside the UI's iframe), and FastAPI's ``/docs``, ``/redoc`` and
``/openapi.json`` are not served at all. Data comes from :mod:`airflow_retrain.ui.data`; the page is drawn
by :mod:`airflow_retrain.ui.render`.

The REST calls carry the viewer's token, so where they go comes from configuration alone
(:func:`airflow_api_url`), never from the request's ``Host`` or ``X-Forwarded-*`` headers; and every URL the
page or the JSON shows passes through :func:`airflow_retrain.urls.redact_value` first.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_retrain.config import retrain_home
from airflow_retrain.spec.loader import load_specs
from airflow_retrain.ui import data, monitoring
from airflow_retrain.ui.render import render
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


def _failed_task(run: dict[str, Any]) -> str | None:
    return next((t for t, s in run["stages"].items() if s == "failed"), None)


def _outcome_without_report(run: dict[str, Any], error: str | None = None) -> str:
    """A run the report task has not summed up (still running, or stopped before it): its state, and
    where it failed, with the error that task recorded."""
    state = str(run.get("state") or "")
    failed = _failed_task(run)
    if state == "failed" and failed:
        return f"failed at {failed}" + (f": {error}" if error else "") + " (no run report)"
    if state in ("running", "queued"):
        current = next((t for t, s in run["stages"].items() if s == "running"), None)
        return f"{state}" + (f": {current}" if current else "")
    return state


async def _runs(api: data.AirflowApi, dag_id: str) -> list[dict[str, Any]]:
    runs = await data.recent_runs(api, dag_id, RUNS_PER_PIPELINE)

    async def fill(run: dict[str, Any]) -> None:
        run["stages"], run["report"] = await asyncio.gather(
            data.run_stages(api, dag_id, run["run_id"]), data.run_report(api, dag_id, run["run_id"])
        )
        run["cost"] = data.run_cost(run["report"])
        if run["report"]:
            from airflow_retrain.report import run_outcome, trigger_label

            run["outcome"] = run["note"] or run_outcome(run["report"])
            run["trigger"] = trigger_label(run["report"].get("trigger"))  # drift-triggered: why it started
        else:
            failed = _failed_task(run) if run["state"] == "failed" and not run["note"] else None
            error = await data.task_error(api, dag_id, run["run_id"], failed) if failed else None
            run["outcome"] = run["note"] or _outcome_without_report(run, error)

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
        if spec is not None:
            pipeline["weekly_budget_usd"] = spec.budget.weekly_usd if spec.budget else None
            if pipeline["model"] is not None:
                pipeline["model"]["greater_is_better"] = spec.registry.greater_is_better
            if spec.monitoring is not None:
                history = await run_in_threadpool(monitoring.load_history, spec.name, spec.warehouse_connection_id)
                pipeline["monitoring"] = monitoring.monitoring_view(spec, history, runs)
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
