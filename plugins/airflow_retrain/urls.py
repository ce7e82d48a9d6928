"""The one place that makes a URL safe to store or show: no user-info, no credential-like query parameters.

Connection extras and environment variables (an MLflow ``ui_url``, a dbt docs URL, a fake cloud's endpoint)
are written by people, and people paste ``https://alice:secret@mlflow.example.com`` or a pre-signed URL. Every
link, XCom, run report and dashboard value that holds a URL passes through :func:`redact_url` (directly, or
through :func:`redact_text` / :func:`redact_value` for free text and nested results), so a password typed into
a connection is never copied into Airflow's metadata database, the artifact store or a browser.

Stdlib only and importing nothing of the package, so any layer (links, hooks, the report, the dashboard,
scripts) can use it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Query (and fragment-query) parameter names whose values are credentials, compared case-insensitively.
#: Covers bearer/OAuth tokens, API keys, passwords and the signatures of AWS SigV4, GCS V4 and Azure SAS
#: pre-signed URLs (a signed URL stripped of its signature no longer grants anything).
SECRET_PARAMS = frozenset(
    {
        "token", "access_token", "id_token", "refresh_token", "auth", "authorization", "bearer",
        "api_key", "apikey", "api-key", "key", "secret", "client_secret", "password", "passwd", "pwd",
        "signature", "sig", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
        "x-goog-signature", "x-goog-credential", "awsaccesskeyid",
    }
)

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def _is_secret_param(name: str) -> bool:
    lowered = name.strip().lower()
    return lowered in SECRET_PARAMS or lowered.endswith(("_token", "-token", "_secret", "_password"))


def _without_secret_params(query: str) -> str:
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not _is_secret_param(k)]
    return query if len(kept) == len(pairs) else urlencode(kept)


def redact_url(url: str | None) -> str | None:
    """``url`` without user-info (``user:password@``) and without credential-like query parameters.

    A fragment that carries its own query (single-page apps: ``#/route?token=...``) is cleaned the same way.
    Strings that are not URLs with an authority (``models:/name/1``, ``sqlite:///path``, plain text) come back
    unchanged. A URL whose authority cannot be parsed (e.g. a password with an unescaped ``/`` that leaves
    ``host:pa`` as the "port") comes back as ``None``: it is not a usable link, and part of it may be a secret.

    :param url: a URL, or ``None``.
    :return: the URL safe to store and show, or ``None``.
    """
    if not url:
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a non-numeric port (a mangled user-info)
    except ValueError:
        return None
    netloc = parts.netloc.rpartition("@")[2]
    query = _without_secret_params(parts.query)
    fragment = parts.fragment
    if "?" in fragment:
        route, _, fragment_query = fragment.partition("?")
        cleaned = _without_secret_params(fragment_query)
        fragment = f"{route}?{cleaned}" if cleaned else route
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url` (error messages, notes, evidence)."""
    if "://" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        # Sentence punctuation after a URL ("... at http://host:5000: refused") is not part of it.
        url = match.group(0).rstrip(".,;:!?)]}")
        return (redact_url(url) or "<redacted URL>") + match.group(0)[len(url):]

    return _URL_IN_TEXT.sub(one, text)


def redact_value(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string passed through :func:`redact_text`.

    For results that are stored or shown as a whole (a run report, the dashboard's data).
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value
