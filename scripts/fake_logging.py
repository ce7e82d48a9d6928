"""A fake Cloud Logging ``ListLogEntries`` (gRPC ``google.logging.v2.LoggingServiceV2``) for the fake jobs.

Vertex AI writes a custom job's output to Cloud Logging as entries of the monitored resource ``ml_job``
(labels ``job_id``, ``task_name``). This serves what a client reading them needs, with
``google-cloud-logging``'s own proto-plus messages, on the fake Vertex AI's gRPC server:

* ``ListLogEntries`` with ``resource_names`` ``projects/<p>``, a filter of ``AND``-ed terms among
  ``resource.type="ml_job"``, ``resource.labels.job_id="<id>"``, ``timestamp>="<RFC 3339>"`` (or ``>``),
  ``order_by`` ``timestamp asc`` (the default) and page tokens;
* each line a job printed is one entry: ``text_payload`` the line, ``labels.task_name`` the replica
  (``workerpool0-<n>``, or ``service`` for the fake's own lines), ``insert_id`` a sequence number and
  ``timestamp`` the time this service first saw the line.

:class:`FakeLogging` takes a function listing ``(project, job_id, lines)`` per job: the fake Vertex AI
passes its jobs' captured output, so nothing of how jobs run changes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

SERVICE = "google.logging.v2.LoggingServiceV2"
_TERM = re.compile(r'^(resource\.type|resource\.labels\.job_id|timestamp)\s*(=|>=|>)\s*"([^"]*)"$')
_LINE = re.compile(r"^\[(workerpool\d+-\d+)\] ?(.*)$", re.S)

#: ``(project, job_id, lines)`` of every job; ``lines`` only ever grows.
LogSource = Callable[[], Iterable[tuple[str, str, list[str]]]]


class FakeLogging:
    """Log entries of the fake jobs, timestamped as first seen.

    :param source: lists each job's project, id and output lines.
    """

    def __init__(self, source: LogSource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._entries: dict[str, list[Any]] = {}  # job id -> LogEntry, in order
        self._seq = 0
        self.calls = 0

    def generic_handler(self):
        import grpc
        from google.cloud.logging_v2.types import logging as logging_types

        handlers = {
            "ListLogEntries": grpc.unary_unary_rpc_method_handler(
                self._list,
                logging_types.ListLogEntriesRequest.deserialize,
                logging_types.ListLogEntriesResponse.serialize,
            )
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def entries(self, job_id: str) -> list[Any]:
        """The job's entries so far (new lines become entries now)."""
        self._collect()
        with self._lock:
            return list(self._entries.get(job_id, []))

    def _collect(self) -> None:
        from google.cloud.logging_v2.types import LogEntry

        for project, job_id, lines in self.source():
            with self._lock:
                known = self._entries.setdefault(job_id, [])
                for line in list(lines)[len(known) :]:
                    self._seq += 1
                    match = _LINE.match(line)
                    task, text = (match.group(1), match.group(2)) if match else ("service", line)
                    known.append(
                        LogEntry(
                            log_name=f"projects/{project}/logs/{task}",
                            resource={"type": "ml_job", "labels": {"job_id": job_id, "project_id": project,
                                                                    "task_name": task}},
                            labels={"task_name": task},
                            text_payload=text,
                            timestamp=datetime.now(UTC),
                            insert_id=f"{self._seq:016d}",
                            severity="INFO",
                        )
                    )

    def _list(self, request, context):
        import grpc
        from google.cloud.logging_v2.types import logging as logging_types

        self.calls += 1
        try:
            wanted = _parse_filter(request.filter)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if request.order_by not in ("", "timestamp asc"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the fake orders by 'timestamp asc' only, not {request.order_by!r}")
        projects = {name.split("/", 1)[1] for name in request.resource_names if name.startswith("projects/")}
        self._collect()
        with self._lock:
            found = [e for entries in self._entries.values() for e in entries
                     if e.log_name.split("/")[1] in projects and _matches(e, wanted)]
        found.sort(key=lambda e: (e.timestamp, e.insert_id))
        start = int(request.page_token or 0)
        size = request.page_size or 1000
        page = found[start : start + size]
        token = str(start + size) if start + size < len(found) else ""
        return logging_types.ListLogEntriesResponse(entries=page, next_page_token=token)


def _parse_filter(text: str) -> list[tuple[str, str, str]]:
    terms = []
    for term in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        match = _TERM.match(term.strip())
        if not match:
            raise ValueError(f"unsupported filter term {term!r} (the fake supports resource.type, "
                             'resource.labels.job_id and timestamp comparisons, joined by AND)')
        terms.append(match.groups())
    return terms


def _matches(entry: Any, terms: list[tuple[str, str, str]]) -> bool:
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds

    for field, op, value in terms:
        if field == "resource.type" and entry.resource.type != value:
            return False
        if field == "resource.labels.job_id" and entry.resource.labels.get("job_id") != value:
            return False
        if field == "timestamp":
            when = DatetimeWithNanoseconds.from_rfc3339(value)
            if (op == ">=" and entry.timestamp < when) or (op == ">" and entry.timestamp <= when) or (
                op == "=" and entry.timestamp != when
            ):
                return False
    return True
