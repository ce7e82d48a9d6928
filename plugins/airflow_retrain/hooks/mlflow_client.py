"""One MLflow client per connection: explicit credentials and a bounded HTTP retry policy, no globals.

MLflow's ``MlflowClient(tracking_uri=...)`` builds its REST stores with
``get_default_host_creds(uri)``, which reads ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` from the process
environment, and its HTTP layer reads ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``TIMEOUT`` from it too
(defaults: 7 retries with exponential backoff up to 120 s each, which is how one outage became 522 s).
Both are process-wide. Here the client's tracking and registry stores are MLflow's own ``RestStore``
classes, constructed with an explicit :class:`~mlflow.utils.rest_utils.MlflowHostCreds` and an
:class:`HttpPolicy` that every request of that client uses, so two hooks with two connections never see
each other's credentials and ``os.environ`` is never written.

Artifacts go through MLflow's artifact repositories, which look up credentials for the artifact URL
only; they get the credentials as the URL's user-info (``requests`` applies it as basic auth), on a
repository object that belongs to this client alone.

Only ``http``/``https`` tracking URIs are wrapped; database and file URIs use MLflow's stores unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit


@dataclass(frozen=True)
class HttpPolicy:
    """How one request to the MLflow server is retried at the HTTP level (per request, not per call).

    :param max_retries: urllib3 retries for connection errors and 429/5xx responses.
    :param backoff_factor: urllib3 backoff factor (``factor * 2 ** (n - 1)`` seconds).
    :param timeout: connect/read timeout of one request, in seconds.
    """

    max_retries: int = 2
    backoff_factor: float = 0.5
    timeout: float = 20.0


def with_userinfo(uri: str, username: str | None, password: str | None) -> str:
    """``uri`` with ``username:password@`` in its netloc (for artifact URLs; never logged)."""
    if not username:
        return uri
    parts = urlsplit(uri)
    auth = quote(username, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit((parts.scheme, f"{auth}@{parts.netloc}", parts.path, parts.query, parts.fragment))


def _bounded_call(host_creds, endpoint, method, json_body, response_proto, policy: HttpPolicy, extra_headers=None):
    """MLflow's ``rest_utils.call_endpoint`` with this client's retry policy instead of the environment's."""
    from google.protobuf.json_format import ParseDict
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    body = json.loads(json_body) if json_body is not None else None
    kwargs: dict[str, Any] = {
        "host_creds": host_creds,
        "endpoint": endpoint,
        "method": method,
        "max_retries": policy.max_retries,
        "backoff_factor": policy.backoff_factor,
        "timeout": policy.timeout,
    }
    if extra_headers:
        kwargs["extra_headers"] = extra_headers
    kwargs["params" if method == "GET" else "json"] = body
    response = verify_rest_response(http_request(**kwargs), endpoint)
    if response.status_code == 204:
        return response_proto
    ParseDict(json.loads(response.text), response_proto, ignore_unknown_fields=True)
    return response_proto


def build_client(
    tracking_uri: str,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    policy: HttpPolicy | None = None,
):
    """An ``MlflowClient`` for ``tracking_uri`` whose REST calls carry these credentials and this policy.

    :param tracking_uri: the tracking (and registry) URI, without credentials.
    :param username: basic-auth user, or ``None``.
    :param password: basic-auth password, or ``None``.
    :param token: bearer token, or ``None``.
    :param policy: HTTP retry policy; default :class:`HttpPolicy`.
    """
    from mlflow.tracking import MlflowClient

    if urlsplit(tracking_uri).scheme not in ("http", "https"):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.model_registry.rest_store import RestStore as RegistryRestStore
    from mlflow.store.tracking.rest_store import RestStore as TrackingRestStore
    from mlflow.tracking._model_registry.client import ModelRegistryClient
    from mlflow.tracking._tracking_service.client import TrackingServiceClient
    from mlflow.utils.rest_utils import MlflowHostCreds

    policy = policy or HttpPolicy()
    base = tracking_uri.rstrip("/")

    def host_creds() -> MlflowHostCreds:
        return MlflowHostCreds(host=base, username=username, password=password, token=token)

    class _TrackingStore(TrackingRestStore):
        def _call_endpoint(self, api, json_body=None, endpoint=None, retry_timeout_seconds=None, response_proto=None):
            info = self._V3_METHOD_TO_INFO if api in self._V3_APIS else self._METHOD_TO_INFO
            default_endpoint, method = info[api]
            return _bounded_call(
                self.get_host_creds(), endpoint or default_endpoint, method, json_body,
                response_proto or api.Response(), policy,
            )

    class _RegistryStore(RegistryRestStore):
        def _call_endpoint(self, api, json_body, call_all_endpoints=False, extra_headers=None):
            endpoint, method = self._get_endpoint_from_method(api)
            return _bounded_call(
                self.get_host_creds(), endpoint, method, json_body, self._get_response_from_method(api), policy,
                extra_headers,
            )

    tracking_store = _TrackingStore(host_creds)
    registry_store = _RegistryStore(host_creds)
    artifact_tracking_uri = with_userinfo(base, username, password)
    repos: dict[str, Any] = {}

    class _TrackingClient(TrackingServiceClient):
        @property
        def store(self):
            return tracking_store

        def _get_artifact_repo(self, resource_id, *, resource="run"):
            # A repository per run for this client only (MLflow's own cache is process-wide and would
            # hand another connection's credentials to this run).
            if resource_id not in repos:
                if resource == "run":
                    location = self.get_run(resource_id).info.artifact_uri
                else:
                    location = self.get_logged_model(resource_id).artifact_location
                repos[resource_id] = get_artifact_repository(location, tracking_uri=artifact_tracking_uri)
            return repos[resource_id]

        # MLflow's own versions of these two build a fresh default client from the URI (environment
        # credentials); this client's repository carries its own.
        def list_artifacts(self, run_id, path=None):
            return self._get_artifact_repo(run_id).list_artifacts(path)

        def download_artifacts(self, run_id, path, dst_path=None):
            return self._get_artifact_repo(run_id).download_artifacts(path, dst_path)

    class _RegistryClient(ModelRegistryClient):
        @property
        def store(self):
            return registry_store

    client = MlflowClient(tracking_uri=base, registry_uri=base)
    client._tracking_client = _TrackingClient(base)
    client._registry_client_lazy = _RegistryClient(base, base)
    return client
