"""The dashboard sends the viewer's token only to the configured Airflow, whatever the request's headers say.

Two real sockets on loopback: a fake Airflow REST API (canned answers, records each request and its
``Authorization``) at the configured ``[api] base_url``, and an "attacker" listener that must never see a
connection. The FastAPI app runs in-process with Airflow's ``get_user`` dependency overridden (a valid
viewer), as a signed-in user's request would reach it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient

from airflow_retrain.ui import app as dashboard
from airflow_retrain.ui import data

TOKEN = "viewer-secret-token"
PASSWORD = "s3cret-mlflow-pw"
NOTE = f"promoted v2 (was v1); see https://alice:{PASSWORD}@mlflow.example.com/#/models/churn/versions/2"
ROUTES = {
    "/api/v2/dags": {"dags": [{"dag_id": "churn_retrain", "timetable_description": "weekly",
                               "is_paused": False, "tags": [{"name": "retrain"}]}]},
    "/api/v2/dags/churn_retrain/dagRuns": {"dag_runs": [
        {"dag_run_id": "manual__1", "state": "success", "note": NOTE, "run_after": "2026-11-29T01:00:00Z",
         "end_date": "2026-11-29T01:02:00Z"},
        {"dag_run_id": "..", "state": "success", "note": None, "run_after": "2026-11-28T01:00:00Z"},
        {"dag_run_id": "~", "state": "success", "note": None, "run_after": "2026-11-27T01:00:00Z"}]},
    "/api/v2/dags/churn_retrain/dagRuns/manual__1/taskInstances": {"task_instances": [
        {"task_id": "train", "state": "success"}]},
    "/api/v2/dags/churn_retrain/dagRuns/manual__1/taskInstances/report/xcomEntries/run_report": {
        "key": "run_report", "value": {"run_id": "manual__1", "dag_id": "churn_retrain", "stages": {
            "register": {"version": "2", "run_url": f"https://alice:{PASSWORD}@mlflow.example.com/#/experiments/1/runs/a"},
            "teardown": {"compute_seconds": 60.0, "cost_usd": 0.5, "stopped_jobs": [
                f"https://console.example.com/jobs/x?X-Amz-Signature={PASSWORD}"]}}}},
}


class FakeAirflow(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        self.seen.append((path, self.headers.get("Authorization", "")))
        body = ROUTES.get(path)
        payload = json.dumps(body if body is not None else {"detail": "not found"}).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def airflow_api():
    """The configured Airflow: a real HTTP server on loopback; yields its URL and the requests it saw."""
    seen: list[tuple[str, str]] = []
    handler = type("Handler", (FakeAirflow,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def attacker():
    """A listener the viewer would like the token sent to. The kernel completes any TCP handshake into the
    backlog without ``accept()``, so after a request returned, a non-blocking ``accept()`` tells whether
    anything connected during it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


def connections(sock: socket.socket) -> list[bytes]:
    received = []
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return received
        conn.settimeout(1.0)
        try:
            received.append(conn.recv(65536))
        except OSError:
            received.append(b"")
        conn.close()


@pytest.fixture
def client(monkeypatch, tmp_path, airflow_api):
    from airflow.api_fastapi.core_api.security import get_user

    url, _ = airflow_api
    monkeypatch.delenv("RETRAIN_AIRFLOW_API_URL", raising=False)
    monkeypatch.delenv("AIRFLOW__RETRAIN__AIRFLOW_API_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", url)
    monkeypatch.setenv("RETRAIN_SPECS_DIR", str(tmp_path))  # no specs: no MLflow look-ups
    monkeypatch.setattr(data, "ledger_rows", lambda *a, **k: {"available": False, "reason": data.LEDGER_MISSING})
    app = dashboard.create_app()
    app.dependency_overrides[get_user] = lambda: object()  # a signed-in viewer
    with TestClient(app) as test_client:
        yield test_client


def forged_headers(port: int) -> list[dict[str, str]]:
    target = f"127.0.0.1:{port}"
    return [
        {"Host": target},
        {"X-Forwarded-Host": target, "X-Forwarded-Proto": "http", "X-Forwarded-Port": str(port)},
        {"Host": target, "X-Forwarded-Host": target, "X-Forwarded-Proto": "http"},
        {"Forwarded": f"host={target};proto=http"},
    ]


@pytest.mark.parametrize("path", ["/", "/api/overview"])
@pytest.mark.parametrize("credential", ["bearer", "cookie"])
def test_a_forged_host_never_receives_the_viewers_token(client, airflow_api, attacker, path, credential):
    _, seen = airflow_api
    port = attacker.getsockname()[1]
    for headers in forged_headers(port):
        if credential == "bearer":
            headers = {**headers, "Authorization": f"Bearer {TOKEN}"}
        else:
            client.cookies.set("_token", TOKEN)
        response = client.get(path, headers=headers)
        assert response.status_code == 200, (headers, response.text)
        assert connections(attacker) == [], headers
    assert seen and {auth for _, auth in seen} == {f"Bearer {TOKEN}"}


def test_a_forged_host_changes_nothing_on_the_page(client, attacker):
    port = attacker.getsockname()[1]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    plain = client.get("/", headers=auth)
    assert plain.status_code == 200
    for headers in forged_headers(port):
        forged = client.get("/", headers={**auth, **headers})
        assert forged.text == plain.text, headers
    assert str(port) not in plain.text and "127.0.0.1" not in plain.text


@pytest.mark.parametrize("path", ["/", "/api/overview"])
def test_no_url_credential_reaches_the_viewer(client, path):
    response = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "mlflow.example.com" in response.text  # the note's link is shown, without its user-info
    assert PASSWORD not in response.text and "alice" not in response.text


def test_odd_run_ids_are_addressed_as_themselves(client, airflow_api):
    """A run named ``..`` must not turn into a dot-segment (another endpoint); one named ``~`` (the API's
    "every run" wildcard) is not asked about on its own."""
    _, seen = airflow_api
    assert client.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    paths = {p for p, _ in seen}
    assert "/api/v2/dags/churn_retrain/dagRuns/%2E%2E/taskInstances" in paths
    assert not any(p.startswith("/api/v2/dags/churn_retrain/taskInstances") for p in paths)
    assert not any("/dagRuns/~/" in p or "/dagRuns/%7E/" in p for p in paths)


def test_unreachable_api_is_one_clear_error(client, monkeypatch):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", f"http://127.0.0.1:{port}")
    response = client.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 502
    assert response.json()["detail"].startswith(f"retrain dashboard: cannot reach Airflow's REST API at http://127.0.0.1:{port}")


def test_a_bad_configured_url_names_the_option(client, monkeypatch):
    monkeypatch.setenv("AIRFLOW__RETRAIN__AIRFLOW_API_URL", "file:///etc/passwd")
    response = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 500
    assert "[retrain] airflow_api_url = 'file:///etc/passwd' is not an http(s)://host[:port] URL" in response.json()["detail"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RETRAIN_AIRFLOW_API_URL": "https://airflow.internal/", "AIRFLOW__API__BASE_URL": "http://x:1"},
         "https://airflow.internal"),
        ({"AIRFLOW__RETRAIN__AIRFLOW_API_URL": "http://api:8080", "AIRFLOW__API__BASE_URL": "http://x:1"},
         "http://api:8080"),
        ({"AIRFLOW__API__BASE_URL": "https://airflow.example.com/sub/"}, "https://airflow.example.com/sub"),
        ({"AIRFLOW__API__BASE_URL": "/airflow", "AIRFLOW__API__PORT": "9090"}, "http://localhost:9090/airflow"),
        ({"AIRFLOW__API__HOST": "0.0.0.0", "AIRFLOW__API__PORT": "8099"}, "http://localhost:8099"),
        ({"AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": "8099"}, "http://127.0.0.1:8099"),
        ({"AIRFLOW__API__HOST": "::1", "AIRFLOW__API__PORT": "8099"}, "http://[::1]:8099"),
    ],
)
def test_the_api_url_comes_from_configuration(monkeypatch, env, expected):
    for name in ("RETRAIN_AIRFLOW_API_URL", "AIRFLOW__RETRAIN__AIRFLOW_API_URL", "AIRFLOW__API__BASE_URL",
                 "AIRFLOW__API__HOST", "AIRFLOW__API__PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert dashboard.airflow_api_url() == expected


async def test_a_page_keeps_its_requests_to_the_api_bounded(monkeypatch, tmp_path):
    """20 pipelines x 10 runs is 400 per-run requests; no more than ``max_concurrent`` are in flight at once."""
    monkeypatch.setenv("RETRAIN_SPECS_DIR", str(tmp_path))
    monkeypatch.setattr(data, "ledger_rows", lambda *a, **k: {"available": False, "reason": data.LEDGER_MISSING})
    in_flight = peak = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(3):  # let every other started request reach this point too
            await asyncio.sleep(0)
        in_flight -= 1
        if request.url.path == "/api/v2/dags":
            return httpx.Response(200, json={"dags": [{"dag_id": f"d{i}", "tags": []} for i in range(20)]})
        if request.url.path.endswith("/dagRuns"):
            return httpx.Response(200, json={"dag_runs": [{"dag_run_id": f"r{j}"} for j in range(10)]})
        return httpx.Response(404)

    api = data.AirflowApi("http://airflow.test", TOKEN, transport=httpx.MockTransport(handle), max_concurrent=8)
    result = await dashboard.collect(api)
    assert [len(p["runs"]) for p in result["pipelines"]] == [10] * 20
    assert 1 <= peak <= 8
