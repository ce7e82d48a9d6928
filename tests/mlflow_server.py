"""MLflow's server app on loopback that a test can stop and restart, and a proxy in front of it.

The proxy checks basic auth (so a test sees the credentials a client really sends), records every request,
and injects faults: a 503 before forwarding (the server never saw it) or after forwarding (the server did
the work, the client never heard).
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    """A free loopback port: from ``RETRAIN_TEST_PORT_RANGE`` (``low-high``) when set, else one the OS
    picks from its ephemeral range (parallel test workers and other checkouts on the machine then never
    probe the same short list and collide)."""
    if not (given := os.environ.get("RETRAIN_TEST_PORT_RANGE")):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    low, high = (int(p) for p in given.split("-"))
    for port in range(low, high + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


class AuthProxy:
    """Basic-auth-checking, fault-injecting HTTP proxy in front of ``backend_port``."""

    def __init__(self, backend_port: int, username: str | None = None, password: str | None = None):
        self.backend_port = backend_port
        self.expected = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode() if username else None
        )
        self.requests: list[tuple[str, str, str | None]] = []
        self.faults: list[tuple[str, str, str]] = []  # (method, path substring, "before"|"after")
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                auth = self.headers.get("Authorization")
                with proxy.lock:
                    proxy.requests.append((self.command, self.path, auth))
                    fault = next((f for f in proxy.faults if f[0] == self.command and f[1] in self.path), None)
                    if fault:
                        proxy.faults.remove(fault)
                if proxy.expected and auth != proxy.expected:
                    return self._send(401, b'{"error_code": "UNAUTHENTICATED", "message": "bad credentials"}')
                if fault and fault[2] == "before":
                    return self._send(503, b"unavailable")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "connection")}
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", proxy.backend_port, timeout=30)
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:
                    return self._send(502, b"backend down")
                if fault and fault[2] == "after":
                    return self._send(503, b"unavailable")
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send(self, status, data):
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class InProcessMlflowServer:
    """MLflow's own server app (``mlflow.server.app``, the Flask app ``mlflow server`` serves) in a thread.

    Same handlers, stores and artifact proxy as the ``mlflow server`` process, without its start-up cost
    (seconds on a loaded CI machine become milliseconds), so a test can stop and restart it mid-operation.
    """

    def __init__(self, base: Path, port: int | None = None):
        self.base = base
        self.port = port or free_port()
        self.server = None
        self.thread: threading.Thread | None = None
        self._environ: dict[str, str] | None = None
        base.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from werkzeug.serving import make_server

        if self._environ is None:
            self._environ = dict(os.environ)  # the server app writes MLFLOW_* into the environment

        os.environ["_MLFLOW_SERVER_FILE_STORE"] = f"sqlite:///{self.base / 'mlflow.db'}"
        os.environ["_MLFLOW_SERVER_REGISTRY_STORE"] = f"sqlite:///{self.base / 'mlflow.db'}"
        os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
        os.environ["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = str(self.base / "artifacts")
        os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = "mlflow-artifacts:/"
        import logging

        from mlflow.server import app, handlers

        # The app caches its stores in module globals on first use: a server started after another one
        # in this process must open its own database, not keep serving the previous server's.
        handlers._tracking_store = handlers._model_registry_store = handlers._artifact_repo = None
        # Open the stores now, as ``mlflow server`` does at start-up: opening them sets MLflow's tracking and
        # registry URIs (and MLFLOW_TRACKING_URI in the environment), which lazily would happen inside
        # whichever test sends the first request -- in the middle of its before/after environment check.
        handlers.initialize_backend_stores(os.environ["_MLFLOW_SERVER_FILE_STORE"],
                                           os.environ["_MLFLOW_SERVER_REGISTRY_STORE"], "mlflow-artifacts:/")

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving; give the test process its environment and MLflow's default URIs back."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self._environ is not None:
            # Only MLflow's own variables go back: a test may have defined connections since start().
            for key in [k for k in os.environ if k.startswith(("MLFLOW", "_MLFLOW"))]:
                if key in self._environ:
                    os.environ[key] = self._environ[key]
                else:
                    del os.environ[key]
        # The server app also sets MLflow's process-wide tracking/registry URIs to its own store.
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None
