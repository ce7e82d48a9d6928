"""An MLflow connection's forms, and one public ``MlflowClient`` per connection.

What MLflow 3 offers publicly, and what this module does with it:

- **The client**: ``mlflow.MlflowClient(tracking_uri=..., registry_uri=...)``, one per hook. Nothing calls
  ``mlflow.set_tracking_uri``.
- **Basic auth** travels in the client's own URI, as user-info (``http://user:pw@host:5000``): MLflow joins
  that host with each endpoint and ``requests`` turns user-info into an ``Authorization: Basic`` header
  (overriding any header MLflow derived from the environment). The same URI reaches MLflow's artifact
  repositories (``mlflow-artifacts:`` resolves against the tracking URI), including their worker threads.
  The credentials therefore belong to this client object alone; no environment variable holds them.
- **A bearer token** has no per-client public knob: MLflow reads it from ``MLFLOW_TRACKING_TOKEN`` only
  (the request-header plugin API sees no URL and must be installed as an entry point, and its headers
  would not reach the artifact worker threads). So is MLflow's **HTTP retry and timeout** policy
  (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``TIMEOUT``, defaults 7 retries backing off up to 120 s: one outage
  took 522 s, and a create whose answer was lost was replayed by the HTTP layer). These are set by
  :func:`mlflow_request_settings` for the duration of one client call and restored after it, under one
  process-wide lock. That is still process-wide state while the call runs -- another thread of the same
  process that reads the environment during the call sees it -- and it is the least bad public option:
  the alternative, overriding private methods of MLflow's REST stores, is what pinned MLflow
  below 3.19. The lock serialises this package's MLflow calls within a process (a task process runs one
  task; the dashboard's calls are short reads). Inside the scope the process's own
  ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN`` are removed, so only the connection's credentials go
  out, and MLflow's printing of run URLs (which would carry the user-info) is suppressed.

Retries of whole operations are :mod:`tenacity`'s job in :class:`~airflow_retrain.hooks.mlflow.MlflowHook`:
MLflow's own HTTP layer retries nothing (``max_retries=0``), so a create is never replayed blindly.

MLflow keeps one artifact repository per run id in a process-wide cache; a repository carries the
user-info of the client that first touched the run. Run ids are unique per server, so this only matters
for two connections with different users on one server, which then share the first user's access.

Only ``http``/``https`` tracking URIs need any of this; database and file URIs use MLflow's stores unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from mlflow import MlflowClient

DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file", "databricks")
EXPECTED_FORMS = (
    "expected a tracking URI in host (http://host:5000, https://host, sqlite:///path/mlflow.db, "
    "postgresql://...), a bare host with port, or the URI forms mlflow://host:port, mlflow+http://host:port, "
    "mlflow+https://host"
)
# Read by MLflow from the environment on every request; see the module docstring.
_CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
_SCOPE_LOCK = threading.RLock()


class MlflowConnectionError(ValueError):
    """An MLflow connection whose form is not understood; the message names it and the expected forms."""


@dataclass(frozen=True)
class HttpPolicy:
    """MLflow's HTTP settings for one client's requests (whole operations are retried by the hook).

    :param max_retries: retries of one HTTP request by MLflow itself; ``0``: the hook decides.
    :param timeout: connect/read timeout of one request, in whole seconds (MLflow parses an ``int``).
    """

    max_retries: int = 0
    timeout: int = 20


@dataclass(frozen=True)
class MlflowTarget:
    """Where a connection points, split into the public URI and the credentials.

    :param tracking_uri: tracking and registry URI without credentials (safe to log).
    :param client_uri: the URI the client uses (a database URI keeps its password here).
    """

    tracking_uri: str
    client_uri: str = field(repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    ui_url: str | None = None
    artifact_root: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)


def _strip_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return (
        urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment)),
        unquote(user) or None,
        unquote(password) or None,
    )


def resolve_connection(conn_id: str, conn_type: str | None, host: str | None, port: int | None,
                       login: str | None, password: str | None, extra: dict[str, Any]) -> MlflowTarget:
    """Turn an Airflow connection's fields into an :class:`MlflowTarget`, or fail naming the connection.

    :raises MlflowConnectionError: for a form that cannot be a tracking URI (with the expected forms).
    """
    conn_type = (conn_type or "mlflow").lower()
    host = (host or "").strip()
    secrets = [s for s in (password, extra.get("token")) if s]
    if not host:
        raise MlflowConnectionError(f"MLflow connection {conn_id!r} has no host: {EXPECTED_FORMS}")
    scheme = None
    if conn_type.startswith("mlflow+") or conn_type.startswith("mlflow_"):
        scheme = conn_type.split("+" if "+" in conn_type else "_", 1)[1]
    scheme = (extra.get("scheme") or scheme or "").lower() or None
    if scheme and scheme not in ("http", "https"):
        raise MlflowConnectionError(f"MLflow connection {conn_id!r}: scheme {scheme!r} is not http or https; "
                                    f"{EXPECTED_FORMS}")
    if "://" in host:
        given = urlsplit(host).scheme.lower()
        if given in DB_SCHEMES:
            public, user, db_password = _strip_userinfo(host)
            if db_password:
                secrets.append(db_password)
            return MlflowTarget(
                tracking_uri=public if db_password else host, client_uri=host, ui_url=extra.get("ui_url"),
                artifact_root=extra.get("artifact_root"), secrets=tuple(secrets),
            )
        if given not in ("http", "https"):
            raise MlflowConnectionError(f"MLflow connection {conn_id!r}: unsupported URI scheme {given!r} in host; "
                                        f"{EXPECTED_FORMS}")
        uri, user, uri_password = _strip_userinfo(host)
    else:
        if "/" in host.split(":")[0] or host.startswith(("/", ".")):
            raise MlflowConnectionError(f"MLflow connection {conn_id!r}: host {host!r} looks like a path; use "
                                        f"sqlite:///{host.lstrip('/')} for a local registry; {EXPECTED_FORMS}")
        chosen = scheme or ("https" if port == 443 else "http")
        uri, user, uri_password = _strip_userinfo(f"{chosen}://{host}")
    parts = urlsplit(uri)
    if not parts.hostname:
        raise MlflowConnectionError(f"MLflow connection {conn_id!r}: no host name in {uri!r}; {EXPECTED_FORMS}")
    try:
        uri_port = parts.port
    except ValueError as e:
        raise MlflowConnectionError(f"MLflow connection {conn_id!r}: {e}; {EXPECTED_FORMS}") from None
    if port and uri_port and int(port) != uri_port:
        raise MlflowConnectionError(f"MLflow connection {conn_id!r}: port {port} contradicts the port {uri_port} "
                                    "in the host URI; set one of them")
    if port and not uri_port:
        uri = urlunsplit((parts.scheme, f"{parts.netloc}:{int(port)}", parts.path, parts.query, parts.fragment))
    uri = uri.rstrip("/")
    if uri_password:
        secrets.append(uri_password)
    return MlflowTarget(
        tracking_uri=uri, client_uri=uri, username=login or user, password=password or uri_password,
        token=extra.get("token"), ui_url=extra.get("ui_url") or uri, artifact_root=extra.get("artifact_root"),
        secrets=tuple(secrets),
    )


def with_userinfo(uri: str, username: str | None, password: str | None) -> str:
    """``uri`` with ``username:password@`` in its netloc (percent-quoted; never logged)."""
    if not username:
        return uri
    parts = urlsplit(uri)
    auth = quote(username, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit((parts.scheme, f"{auth}@{parts.netloc}", parts.path, parts.query, parts.fragment))


def is_http_uri(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def authenticated_uri(uri: str, username: str | None, password: str | None) -> str:
    """The URI a client of ``uri`` talks to: with basic-auth user-info for an HTTP URI with both halves
    (MLflow's own rule; a user without a password leaves a token in charge), else ``uri`` unchanged."""
    if not is_http_uri(uri):
        return uri
    base = uri.rstrip("/")
    return with_userinfo(base, username, password) if username and password else base


@contextlib.contextmanager
def mlflow_request_settings(policy: HttpPolicy, token: str | None) -> Iterator[None]:
    """MLflow's environment-only request settings for the duration of one call (see the module docstring).

    Process-wide while the block runs, serialised by one lock, restored afterwards.
    """
    wanted: dict[str, str | None] = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(policy.max_retries)),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(policy.timeout)),
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        **dict.fromkeys(_CREDENTIAL_VARIABLES),
        "MLFLOW_TRACKING_TOKEN": token,
    }
    with _SCOPE_LOCK:
        saved = {name: os.environ.get(name) for name in wanted}
        try:
            _apply(wanted)
            yield
        finally:
            _apply(saved)


def _apply(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class ScopedMlflowClient:
    """A public ``MlflowClient`` whose every method runs inside :func:`mlflow_request_settings`.

    It has the client's methods (``client.get_run(...)`` etc.); ``mlflow_client`` is the wrapped client.
    """

    def __init__(self, client: MlflowClient, policy: HttpPolicy, token: str | None) -> None:
        self.mlflow_client = client
        self._policy = policy
        self._token = token

    def __repr__(self) -> str:  # the wrapped client's URI may carry user-info
        return f"<ScopedMlflowClient policy={self._policy}>"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.mlflow_client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        @functools.wraps(attr)
        def scoped(*args: Any, **kwargs: Any) -> Any:
            with mlflow_request_settings(self._policy, self._token):
                return attr(*args, **kwargs)

        return scoped


def build_client(
    tracking_uri: str,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    policy: HttpPolicy | None = None,
) -> MlflowClient:
    """A public ``MlflowClient`` for ``tracking_uri`` that carries these credentials and this policy.

    :param tracking_uri: the tracking (and registry) URI, without credentials.
    :param username: basic-auth user, or ``None``.
    :param password: basic-auth password, or ``None``.
    :param token: bearer token, or ``None``.
    :param policy: MLflow's HTTP settings; default :class:`HttpPolicy`.
    """
    from mlflow import MlflowClient

    uri = authenticated_uri(tracking_uri, username, password)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if not is_http_uri(tracking_uri):
        return client
    return ScopedMlflowClient(client, policy or HttpPolicy(), token)  # type: ignore[return-value]
