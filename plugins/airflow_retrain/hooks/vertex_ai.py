"""The Google provider's Vertex AI custom-job hooks, with the API endpoint settable in the connection.

:class:`~airflow.providers.google.cloud.hooks.vertex_ai.custom_job.CustomJobHook` (and its async twin)
always talk to ``<region>-aiplatform.googleapis.com``. These subclasses override only the provider's
public client factories (``get_job_service_client``, sync and async) so that the Google Cloud
connection can name another endpoint, and add the Cloud Logging client the training log is read with:

``api_endpoint``
    ``host[:port]`` of the Vertex AI API (a Private Service Connect endpoint, a regional override).
``logging_api_endpoint``
    ``host[:port]`` of the Cloud Logging API (default: ``logging.googleapis.com``).
``api_endpoint_insecure``
    ``true``: reach both endpoints over a plain (no TLS) gRPC channel. Honoured only for loopback
    hosts (``localhost``, ``127.0.0.1``, ``::1``): a local emulator or proxy. For any other host it is
    an error naming the connection, so credentials never cross a network in clear text.

Everything else (credentials, project, impersonation) is the provider's, from the same connection.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Any

from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobAsyncHook, CustomJobHook
from airflow.providers.google.common.consts import CLIENT_INFO
from airflow.providers.google.common.hooks.base_google import get_field

_LOOPBACK_NAMES = {"localhost"}


class EndpointSettingError(ValueError):
    """The connection's endpoint settings cannot be honoured (names the connection and the extra)."""


def _host(endpoint: str) -> str:
    endpoint = endpoint.split("://", 1)[-1].split("/", 1)[0]
    if endpoint.startswith("["):
        return endpoint[1:].split("]", 1)[0]
    return endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint


def is_loopback(endpoint: str) -> bool:
    """Whether ``endpoint`` (``host[:port]``) names this machine."""
    host = _host(endpoint)
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class VertexJobHook(CustomJobHook):
    """``CustomJobHook`` whose JobService endpoint comes from the connection's ``api_endpoint`` extra."""

    def _setting(self, name: str) -> Any:
        return get_field(self.extras, name)

    def endpoint(self, name: str) -> tuple[str | None, bool]:
        """``(host[:port] or None, insecure)`` of the connection's extra ``name``.

        :raises EndpointSettingError: ``api_endpoint_insecure`` for a host that is not loopback.
        """
        endpoint = self._setting(name)
        insecure = str(self._setting("api_endpoint_insecure") or "").lower() in ("true", "1", "yes")
        if endpoint and insecure and not is_loopback(str(endpoint)):
            raise EndpointSettingError(
                f"Airflow connection {self.gcp_conn_id!r}: api_endpoint_insecure is honoured only for a loopback "
                f"{name} (localhost, 127.0.0.1, ::1), not {endpoint!r}"
            )
        return (str(endpoint) if endpoint else None), bool(endpoint and insecure)

    def endpoint_client(
        self, client_class, transport_class, endpoint: str | None, insecure: bool, *, aio: bool = False
    ):
        """``client_class`` on ``endpoint``: over a plaintext gRPC channel (``transport_class``, an ``aio`` one for an
        async client) where :meth:`endpoint` allowed it, else with the connection's credentials."""
        if insecure:
            import grpc

            channel = (grpc.aio if aio else grpc).insecure_channel(endpoint)
            return client_class(transport=transport_class(channel=channel))
        return client_class(
            credentials=self.get_credentials(),
            client_info=CLIENT_INFO,
            client_options=self.get_client_options(api_endpoint_override=endpoint),
        )

    @cached_property
    def _job_clients(self) -> dict[str | None, Any]:
        return {}

    def get_job_service_client(self, region: str | None = None):
        """The provider's JobServiceClient, on the connection's ``api_endpoint`` when one is set (cached)."""
        if region in self._job_clients:
            return self._job_clients[region]
        endpoint, insecure = self.endpoint("api_endpoint")
        if not endpoint:
            client = super().get_job_service_client(region)
        else:
            from google.cloud.aiplatform_v1 import JobServiceClient
            from google.cloud.aiplatform_v1.services.job_service.transports import JobServiceGrpcTransport

            client = self.endpoint_client(JobServiceClient, JobServiceGrpcTransport, endpoint, insecure)
        self._job_clients[region] = client
        return client

    @cached_property
    def logging_client(self):
        """Cloud Logging's ``LoggingServiceV2Client`` (``google-cloud-logging``), on ``logging_api_endpoint``."""
        from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
        from google.cloud.logging_v2.services.logging_service_v2.transports import (
            LoggingServiceV2GrpcTransport,
        )

        endpoint, insecure = self.endpoint("logging_api_endpoint")
        return self.endpoint_client(LoggingServiceV2Client, LoggingServiceV2GrpcTransport, endpoint, insecure)

    def async_logging_client(self):
        """``LoggingServiceV2AsyncClient`` for the running event loop (a gRPC aio channel belongs to one loop)."""
        from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2AsyncClient
        from google.cloud.logging_v2.services.logging_service_v2.transports import (
            LoggingServiceV2GrpcAsyncIOTransport,
        )

        endpoint, insecure = self.endpoint("logging_api_endpoint")
        return self.endpoint_client(
            LoggingServiceV2AsyncClient, LoggingServiceV2GrpcAsyncIOTransport, endpoint, insecure, aio=True
        )


class VertexJobAsyncHook(CustomJobAsyncHook):
    """``CustomJobAsyncHook`` on the same endpoint settings (the triggerer's client)."""

    sync_hook_class = VertexJobHook

    async def get_job_service_client(self, region: str | None = None):
        """The provider's JobServiceAsyncClient, on the connection's ``api_endpoint`` when one is set."""
        from google.cloud.aiplatform_v1 import JobServiceAsyncClient
        from google.cloud.aiplatform_v1.services.job_service.transports import JobServiceGrpcAsyncIOTransport

        sync_hook: VertexJobHook = await self.get_sync_hook()
        endpoint, insecure = sync_hook.endpoint("api_endpoint")
        if not endpoint:
            return await super().get_job_service_client(region)
        return sync_hook.endpoint_client(
            JobServiceAsyncClient, JobServiceGrpcAsyncIOTransport, endpoint, insecure, aio=True
        )


# -- Cloud Logging: a custom job's log ---------------------------------------------------------------

#: Entries asked for per ``ListLogEntries`` page.
LOG_PAGE_SIZE = 1000


def job_log_filter(job_id: str, after: str | None) -> str:
    """The Cloud Logging filter of a custom job's entries, from the cursor's timestamp on."""
    text = f'resource.type="ml_job" AND resource.labels.job_id="{job_id}"'
    if after:
        text += f' AND timestamp>="{after.split("|", 1)[0]}"'
    return text


def _cursor_key(cursor: str) -> tuple[Any, str]:
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds

    stamp, _, insert_id = cursor.partition("|")
    return DatetimeWithNanoseconds.from_rfc3339(stamp), insert_id


def _entry_line(entry: Any) -> str:
    text = entry.text_payload
    if not text and entry.json_payload:
        text = str(dict(entry.json_payload).get("message", ""))
    task = entry.labels.get("task_name") or entry.resource.labels.get("task_name")
    return f"[{task}] {text}" if task else text


def new_log_lines(entries: list[Any], after: str | None) -> tuple[list[str], str | None]:
    """The lines of ``entries`` (timestamp order) after the cursor ``"<RFC 3339 timestamp>|<insertId>"``,
    and the cursor of the last one: entries sharing the cursor's timestamp are told apart by insertId."""
    last = _cursor_key(after) if after else None
    lines, cursor = [], after
    for entry in entries:
        key = (entry.timestamp, entry.insert_id)
        if last is not None and key <= last:
            continue
        lines.append(_entry_line(entry))
        cursor, last = f"{entry.timestamp.rfc3339()}|{entry.insert_id}", key
    return lines, cursor


def _log_request(project_id: str, job_id: str, after: str | None) -> dict[str, Any]:
    return {
        "resource_names": [f"projects/{project_id}"],
        "filter": job_log_filter(job_id, after),
        "order_by": "timestamp asc",
        "page_size": LOG_PAGE_SIZE,
    }


def read_job_log(hook: VertexJobHook, project_id: str, job_id: str, after: str | None,
                 timeout: float) -> tuple[list[str], str | None]:
    """The custom job's Cloud Logging lines after the cursor ``after``, and the new cursor."""
    pager = hook.logging_client.list_log_entries(request=_log_request(project_id, job_id, after), timeout=timeout)
    return new_log_lines(list(pager), after)


async def aread_job_log(hook: VertexJobHook, project_id: str, job_id: str, after: str | None,
                        timeout: float) -> tuple[list[str], str | None]:
    """:func:`read_job_log` on the async client (the triggerer's event loop)."""
    client = hook.async_logging_client()
    pager = await client.list_log_entries(request=_log_request(project_id, job_id, after), timeout=timeout)
    return new_log_lines([entry async for entry in pager], after)
