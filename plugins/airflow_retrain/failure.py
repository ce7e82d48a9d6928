"""A failed task's error as one short, safe line: what a run's outcome says after ``failed at <task>:``.

Every retrain operator has :func:`record_failure` as an ``on_failure_callback``. Airflow runs it in the task's
own process once a try fails for good (not on a try that will be retried), with the exception in
``context["exception"]``, and before the task's ``failed`` state reaches the API server, so the ``report``
task downstream always finds the XCom ``retrain_error`` it pushes. The ``report`` task puts these lines
into the run report (``errors``), whence the run note in the grid, the notification and the dashboard.

The line is the exception's message as our operators wrote it (``TrainingJobFailed``, ``DbtNodesFailed``,
re-raised as ``AirflowFailException``: the whole message, which names the job or the dbt node), or the first
meaningful line of a foreign exception with its type (``MlflowException: ...``). Then: secrets the task
registered with Airflow's secrets masker (connection passwords it fetched) become ``***``, every URL loses
its user-info and credential parameters (:func:`~airflow_retrain.urls.redact_text`), ``password=...``-like
assignments lose their value, whitespace collapses to one line, and the result is cut to
:data:`MAX_ERROR_CHARS`.

Stdlib and :mod:`airflow_retrain.urls` only (Airflow's masker is imported where it exists), so the report
and the dashboard can use it.
"""

from __future__ import annotations

import re
from typing import Any

from airflow_retrain.urls import redact_text

#: XCom key of a failed task's error line (not ``error``: short keys collide with operator extra links').
ERROR_XCOM_KEY = "retrain_error"
#: The longest error line stored or shown.
MAX_ERROR_CHARS = 300

# Airflow's generic exceptions carry a message an operator wrote (``AirflowFailException(str(e))``): their
# class name adds nothing. Anything else (``ValueError``, ``MlflowException``) keeps its name.
_WRAPPERS = frozenset({"AirflowException", "AirflowFailException"})

_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b((?:[a-z0-9]+[_-])*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key))"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def _meaningful_lines(text: str) -> list[str]:
    """Non-blank lines, without a traceback's header (its last line is the error)."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("Traceback (")]


def _masked(text: str) -> str:
    """``text`` through Airflow's secrets masker: connection passwords and other secrets the task registered."""
    try:
        from airflow.sdk.log import redact
    except ImportError:  # outside an Airflow installation (a CLI rendering a stored report)
        return text
    try:
        masked = redact(text)
    except Exception:  # noqa: BLE001 - the masker is a safety net; the regexes below still apply
        return text
    return masked if isinstance(masked, str) else text


def redact_secrets(text: str) -> str:
    """``text`` without URL credentials, ``password=...``-like values and bearer tokens."""
    text = redact_text(text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} ***", text)


def bounded(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` redacted (:func:`redact_secrets`), on one line, and at most ``limit`` characters (``…`` if cut)."""
    line = " ".join(redact_secrets(text).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def error_text(error: BaseException | str | None, limit: int = MAX_ERROR_CHARS) -> str:
    """The one line a run's outcome shows for ``error`` (``""`` for none); see the module's docstring.

    :param error: the exception a task failed with, or an error line read back from XCom.
    :param limit: the most characters returned.
    """
    if error is None:
        return ""
    if isinstance(error, BaseException):
        lines = _meaningful_lines(_masked(str(error)))
        kind = type(error)
        ours = kind.__module__.startswith("airflow_retrain.") or kind.__name__ in _WRAPPERS
        if ours and lines:  # our messages are written whole, e.g. every failed dbt node with its message
            text = " ".join(lines)
        else:
            text = f"{kind.__name__}: {lines[0]}" if lines else kind.__name__
    else:
        lines = _meaningful_lines(_masked(str(error)))
        text = " ".join(lines)
    return bounded(text, limit)


def record_failure(context: Any) -> None:
    """``on_failure_callback``: push the error line of the exception the task failed with as XCom
    :data:`ERROR_XCOM_KEY`. Nothing is pushed when Airflow ran the callback without an exception (a task
    failed from outside its process, e.g. marked failed in the UI or lost with its worker)."""
    text = error_text(context.get("exception"))
    ti = context.get("ti")
    if text and ti is not None:
        ti.xcom_push(key=ERROR_XCOM_KEY, value=text)
