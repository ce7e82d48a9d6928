"""The dashboard through a real ``airflow api-server``: auth on every endpoint, and a real browser.

One module-scoped API server (loopback port ``RETRAIN_TEST_AIRFLOW_API_PORT``, else a free one) on the test
session's Airflow DB; one ``churn_retrain`` run by ``dag.test()`` while it serves, so the report task sets
the run's note through the REST API. The browser test drives Debian's ``chromium`` with Playwright
(never a downloaded browser) and saves a screenshot under ``.local/artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import bound, wait_for
from mlflow_server import free_port

# Runs here retrain the same inputs as an earlier champion of the session: force them to train.
FORCE = {"force": True}

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("RETRAIN_TEST_AIRFLOW_API_PORT") or free_port())  # a free one unless given
BASE = f"http://127.0.0.1:{PORT}"
USER, PASSWORD = "admin", "retrain-test-admin"
CHROMIUM = os.environ.get("RETRAIN_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / ".local" / "artifacts"
ENDPOINTS = ["/retrain/", "/retrain/api/overview"]
pytestmark = pytest.mark.integration


def _http(method: str, path: str, **kwargs):
    import httpx

    return httpx.request(method, f"{BASE}{path}", timeout=120, **kwargs)


@pytest.fixture(scope="module")
def api_server(airflow_db, tmp_path_factory):
    home = Path(os.environ["AIRFLOW_HOME"])
    passwords = home / "retrain_test_passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    env = {
        **os.environ,
        "AIRFLOW__API__PORT": str(PORT),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    log = tmp_path_factory.mktemp("api-server") / "api-server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "--port", str(PORT)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError(f"api-server exited: {log.read_text()[-3000:]}")
            try:
                return _http("GET", "/api/v2/version").status_code == 200
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        wait_for(up, timeout=180, interval=1.0)
        os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = f"{USER}:admin"
        os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=bound(20))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def token(api_server) -> str:
    response = _http("POST", "/auth/token", json={"username": USER, "password": PASSWORD})
    assert response.status_code in (200, 201), response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def finished_run(api_server, warehouse, token):
    """One churn_retrain run through Airflow, the report task talking to this API server for the note."""
    from airflow.dag_processing.dagbag import DagBag

    conn = {"conn_type": "http", "host": BASE, "login": USER, "password": PASSWORD}
    os.environ["AIRFLOW_CONN_RETRAIN_AIRFLOW_API"] = json.dumps(conn)
    try:
        bag = DagBag(dag_folder=str(ROOT / "dags"))
        assert bag.import_errors == {}
        dr = bag.dags["churn_retrain"].test(run_conf=FORCE)
    finally:
        os.environ.pop("AIRFLOW_CONN_RETRAIN_AIRFLOW_API", None)
    assert dr.state == "success"
    return dr


@pytest.mark.parametrize("path", [*ENDPOINTS, "/retrain/docs", "/retrain/openapi.json", "/retrain/redoc"])
def test_every_endpoint_requires_airflow_auth(api_server, token, path):
    anonymous = _http("GET", path)
    forged = _http("GET", path, headers={"Authorization": "Bearer not-a-token"})
    if path in ENDPOINTS:
        assert anonymous.status_code == 401, anonymous.text
        assert forged.status_code == 403, forged.text
        assert _http("GET", path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    else:  # FastAPI's docs and schema are not served at all, not even to a signed-in user
        assert anonymous.status_code in (401, 404) and forged.status_code in (403, 404)
        assert _http("GET", path, headers={"Authorization": f"Bearer {token}"}).status_code == 404


def test_the_ui_cookie_authenticates_too(api_server, token):
    assert _http("GET", "/retrain/api/overview", cookies={"_token": token}).status_code == 200


def test_run_note_and_overview_tell_what_the_run_did(finished_run, token):
    """Other tests of the session may have registered versions before: the run promotes or keeps."""
    auth = {"Authorization": f"Bearer {token}"}
    run = _http("GET", f"/api/v2/dags/churn_retrain/dagRuns/{finished_run.run_id}", headers=auth).json()
    report = _http(
        "GET", f"/api/v2/dags/churn_retrain/dagRuns/{finished_run.run_id}/taskInstances/report/xcomEntries/run_report",
        headers=auth,
    ).json()["value"]
    promote = report["stages"]["promote"]
    version = report["stages"]["register"]["version"]
    if promote["decision"] == "promoted":
        assert run["note"].startswith(f"promoted v{version}"), run["note"]
    else:
        assert run["note"].startswith(f"kept v{promote['champion_after']} because candidate v{version} "), run["note"]
    overview = _http("GET", "/retrain/api/overview", headers=auth).json()
    (pipeline,) = [p for p in overview["pipelines"] if p["dag_id"] == "churn_retrain"]
    latest = next(r for r in pipeline["runs"] if r["run_id"] == finished_run.run_id)
    assert pipeline["schedule"] and latest["outcome"] == run["note"]
    assert latest["stages"]["promote"] == "success"
    champion = pipeline["model"]["champion"]
    assert champion["version"] == promote["champion_after"]
    history = pipeline["model"]["history"]  # newest first, every column the page shows filled
    assert history[0]["version"] == version and history[0]["decision"] in ("promoted", "kept")
    assert history[0]["dag_run"] == f"churn_retrain/{finished_run.run_id}"
    assert {"gate": "metrics", "verdict": "passed"} in [{k: g[k] for k in ("gate", "verdict")} for g in champion["gates"]]
    assert latest["cost"]["usd"] is not None


def test_dashboard_in_a_real_browser(finished_run, token):
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} missing: install Debian's chromium (`apt-get install -y chromium`)"
        if os.environ.get("RETRAIN_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    overview = _http("GET", "/retrain/api/overview", headers={"Authorization": f"Bearer {token}"}).json()
    (pipeline,) = [p for p in overview["pipelines"] if p["dag_id"] == "churn_retrain"]
    champion = pipeline["model"]["champion"]
    latest = next(r for r in pipeline["runs"] if r["run_id"] == finished_run.run_id)
    metric, cost = champion["metric"], latest["cost"]["usd"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    profile = ARTIFACTS / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                       args=flags, viewport={"width": 1366, "height": 768})
        try:
            page = browser.new_page()
            page.goto(f"{BASE}/", wait_until="domcontentloaded")
            page.get_by_label("Username").fill(USER)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "login" not in url, timeout=60_000)
            page.goto(f"{BASE}/retrain/", wait_until="load")
            # The first screen (1,366 x 768) answers what the last run did and why, and who is champion.
            first = page.locator(".glance[data-dag='churn_retrain']")
            assert first.is_visible() and first.bounding_box()["y"] + first.bounding_box()["height"] <= 768
            assert first.locator("[data-role=last-outcome]").inner_text() == latest["outcome"]
            assert first.locator("[data-role=champion]").inner_text() == f"v{champion['version']}"
            assert f"{metric:.4f}" in first.inner_text()
            page.screenshot(path=str(ARTIFACTS / "dashboard-first-screen.png"))
            text = page.inner_text("body")
            assert f"${cost:.4f}" in text
            row = page.locator("tr", has_text=f"churn_retrain/{finished_run.run_id}").filter(has_text="v").first
            assert row.locator("td").nth(1).inner_text().startswith("v")  # Version filled, not "-"
            assert page.locator("svg[aria-label='roc_auc by version']").count() == 1
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"dashboard screenshot: {shot}")
    assert shot.stat().st_size > 10_000
