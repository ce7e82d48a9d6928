#!/usr/bin/env python3
"""A fake Cloud Storage on loopback: the GCS JSON API over plain HTTP, objects kept as files in a folder.

``gs://bucket/key`` is ``<root>/bucket/key``: the same folder the fake Vertex AI mounts at ``/gcs/`` for
its jobs, so what a job writes there is what this API serves. Clients reach it the way they reach any
GCS emulator: gcsfs (and so Airflow's ``ObjectStoragePath("gs://...", conn_id=...)``) through the Google
connection's extra ``gcs.endpoint``; ``google-cloud-storage`` through ``STORAGE_EMULATOR_HOST``.

What it answers (the part of https://cloud.google.com/storage/docs/json_api gcsfs uses):

* buckets: ``GET /storage/v1/b`` (list), ``GET /storage/v1/b/<bucket>``, ``POST /storage/v1/b`` (create);
* objects: ``GET /storage/v1/b/<bucket>/o`` (list: ``prefix``, ``delimiter``, ``maxResults``,
  ``pageToken``), ``GET .../o/<object>`` (metadata, or the bytes with ``alt=media``),
  ``GET /download/storage/v1/b/<bucket>/o/<object>?alt=media`` (``Range`` honoured),
  ``DELETE .../o/<object>``;
* uploads: ``POST /upload/storage/v1/b/<bucket>/o`` with ``uploadType=media``, ``multipart`` and
  ``resumable`` (the session URI takes ``Content-Range`` chunks, ``308`` until the last).

No authentication is checked: the connection uses anonymous credentials (``is_anonymous``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import signal
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19052
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")


class FakeGcs:
    """The HTTP server and its folder. ``start()`` listens in a thread; ``stop()`` ends it.

    :param root: the folder holding one sub-folder per bucket.
    """

    def __init__(self, root: str | Path | None = None, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fake-gcs-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, port
        self._uploads: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        """The URL clients are pointed at (gcsfs ``endpoint_url``, connection extra ``gcs.endpoint``)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeGcs:
        fake = self

        class Handler(_Handler):
            gcs = fake

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="fake-gcs", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- storage -------------------------------------------------------------------------------------

    def bucket_dir(self, bucket: str) -> Path:
        if not bucket or "/" in bucket or bucket in (".", ".."):
            raise KeyError(bucket)
        return self.root / bucket

    def object_file(self, bucket: str, name: str) -> Path:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", ".."):
            raise KeyError(name)
        return self.bucket_dir(bucket) / name

    def object_resource(self, bucket: str, name: str, path: Path) -> dict[str, Any]:
        stat = path.stat()
        data = path.read_bytes()
        when = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat().replace("+00:00", "Z")
        return {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/{stat.st_mtime_ns}",
            "name": name,
            "bucket": bucket,
            "generation": str(stat.st_mtime_ns),
            "metageneration": "1",
            "contentType": "application/octet-stream",
            "size": str(stat.st_size),
            "md5Hash": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode(),
            "timeCreated": when,
            "updated": when,
            "storageClass": "STANDARD",
            "selfLink": f"{self.endpoint}/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
            "mediaLink": f"{self.endpoint}/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}?alt=media",
        }

    def write(self, bucket: str, name: str, data: bytes) -> dict[str, Any]:
        if not self.bucket_dir(bucket).is_dir():
            raise FileNotFoundError(bucket)
        path = self.object_file(bucket, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        tmp.write_bytes(data)
        tmp.replace(path)
        return self.object_resource(bucket, name, path)

    def list_objects(self, bucket: str, prefix: str, delimiter: str) -> tuple[list[str], list[str]]:
        base = self.bucket_dir(bucket)
        names = sorted(
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".part")
        )
        names = [n for n in names if n.startswith(prefix)]
        if not delimiter:
            return names, []
        items, prefixes = [], set()
        for n in names:
            rest = n[len(prefix) :]
            if delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
            else:
                items.append(n)
        return items, sorted(prefixes)


class _Handler(BaseHTTPRequestHandler):
    gcs: FakeGcs
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        pass

    # -- plumbing ------------------------------------------------------------------------------------

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers=headers)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"code": status, "message": message, "errors": [{"message": message}]}})

    def _route(self) -> tuple[list[str], dict[str, str]]:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        # Object names are percent-encoded (``/`` as ``%2F``): split first, then unquote each part.
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        return parts, query

    def _dispatch(self) -> None:
        parts, query = self._route()
        try:
            if parts[:1] == ["upload"]:
                return self._upload(parts[1:], query)
            if parts[:1] == ["download"]:
                parts = parts[1:]
                query.setdefault("alt", "media")
            if parts[:2] != ["storage", "v1"] or len(parts) < 3 or parts[2] != "b":
                return self._error(404, f"Not Found: {self.path}")
            rest = parts[3:]
            if not rest:
                return self._buckets(query)
            bucket = rest[0]
            if not self.gcs.bucket_dir(bucket).is_dir():
                return self._error(404, f"The specified bucket does not exist: {bucket}")
            if len(rest) == 1:
                return self._bucket(bucket)
            if rest[1] != "o":
                return self._error(404, f"Not Found: {self.path}")
            if len(rest) == 2:
                return self._list(bucket, query)
            return self._object(bucket, "/".join(rest[2:]), query)
        except KeyError as e:
            return self._error(400, f"Invalid bucket or object name {e}")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch  # noqa: N815 - http.server's names

    # -- buckets -------------------------------------------------------------------------------------

    def _bucket_resource(self, bucket: str) -> dict[str, Any]:
        return {"kind": "storage#bucket", "id": bucket, "name": bucket, "location": "US",
                "storageClass": "STANDARD"}

    def _buckets(self, query: dict[str, str]) -> None:
        if self.command == "POST":
            name = json.loads(self._body() or b"{}").get("name", "")
            path = self.gcs.bucket_dir(name)
            if path.is_dir():
                return self._error(409, f"The requested bucket name is not available: {name}")
            path.mkdir(parents=True)
            return self._json(200, self._bucket_resource(name))
        items = [self._bucket_resource(p.name) for p in sorted(self.gcs.root.iterdir()) if p.is_dir()]
        return self._json(200, {"kind": "storage#buckets", "items": items})

    def _bucket(self, bucket: str) -> None:
        if self.command == "DELETE":
            path = self.gcs.bucket_dir(bucket)
            if any(p.is_file() for p in path.rglob("*")):
                return self._error(409, f"The bucket you tried to delete is not empty: {bucket}")
            path.rmdir()
            return self._send(204)
        return self._json(200, self._bucket_resource(bucket))

    # -- objects -------------------------------------------------------------------------------------

    def _list(self, bucket: str, query: dict[str, str]) -> None:
        items, prefixes = self.gcs.list_objects(bucket, query.get("prefix", ""), query.get("delimiter", ""))
        entries = [("o", n) for n in items] + [("p", p) for p in prefixes]
        entries.sort(key=lambda e: e[1])
        start = int(query.get("pageToken") or 0)
        size = int(query.get("maxResults") or 1000)
        page = entries[start : start + size]
        body: dict[str, Any] = {"kind": "storage#objects"}
        objects = [self.gcs.object_resource(bucket, n, self.gcs.object_file(bucket, n)) for k, n in page if k == "o"]
        if objects:
            body["items"] = objects
        if folders := [n for k, n in page if k == "p"]:
            body["prefixes"] = folders
        if start + size < len(entries):
            body["nextPageToken"] = str(start + size)
        self._json(200, body)

    def _object(self, bucket: str, name: str, query: dict[str, str]) -> None:
        path = self.gcs.object_file(bucket, name)
        if not path.is_file():
            return self._error(404, f"No such object: {bucket}/{name}")
        if self.command == "DELETE":
            path.unlink()
            return self._send(204)
        if query.get("alt") != "media":
            return self._json(200, self.gcs.object_resource(bucket, name, path))
        data = path.read_bytes()
        match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            first = int(match.group(1)) if match.group(1) else max(0, len(data) - int(match.group(2)))
            last = int(match.group(2)) if match.group(1) and match.group(2) else len(data) - 1
            last = min(last, len(data) - 1)
            if first >= len(data):
                return self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}"})
            return self._send(206, data[first : last + 1], "application/octet-stream",
                              {"Content-Range": f"bytes {first}-{last}/{len(data)}"})
        return self._send(200, data, "application/octet-stream")

    # -- uploads -------------------------------------------------------------------------------------

    def _upload(self, parts: list[str], query: dict[str, str]) -> None:
        if parts[:3] != ["storage", "v1", "b"] or len(parts) != 5 or parts[4] != "o":
            return self._error(404, f"Not Found: {self.path}")
        bucket = parts[3]
        if not self.gcs.bucket_dir(bucket).is_dir():
            return self._error(404, f"The specified bucket does not exist: {bucket}")
        kind = query.get("uploadType", "media")
        if kind == "resumable" and "upload_id" in query:
            return self._resumable_chunk(bucket, query["upload_id"])
        body = self._body()
        if kind == "media":
            return self._json(200, self.gcs.write(bucket, query.get("name", ""), body))
        if kind == "multipart":
            metadata, data = _split_multipart(self.headers.get("Content-Type", ""), body)
            return self._json(200, self.gcs.write(bucket, metadata.get("name") or query.get("name", ""), data))
        if kind == "resumable":
            metadata = json.loads(body or b"{}")
            name = metadata.get("name") or query.get("name", "")
            self.gcs.object_file(bucket, name)  # validate the name now, not at the last chunk
            upload_id = uuid.uuid4().hex
            with self.gcs._lock:
                self.gcs._uploads[upload_id] = {"name": name, "data": bytearray()}
            location = f"{self.gcs.endpoint}/upload/storage/v1/b/{quote(bucket)}/o?uploadType=resumable&upload_id={upload_id}"
            return self._send(200, b"", headers={"Location": location})
        return self._error(400, f"unsupported uploadType {kind!r}")

    def _resumable_chunk(self, bucket: str, upload_id: str) -> None:
        with self.gcs._lock:
            session = self.gcs._uploads.get(upload_id)
        if session is None:
            return self._error(404, f"No such upload session {upload_id}")
        if self.command == "DELETE":
            with self.gcs._lock:
                self.gcs._uploads.pop(upload_id, None)
            return self._send(499)
        body = self._body()
        match = _CONTENT_RANGE.fullmatch(self.headers.get("Content-Range", "").strip())
        total = None
        if match:
            if match.group(1) is not None and int(match.group(1)) != len(session["data"]):
                return self._error(400, f"chunk starts at {match.group(1)}, expected {len(session['data'])}")
            total = None if match.group(3) == "*" else int(match.group(3))
        session["data"].extend(body)
        if total is None or len(session["data"]) < total:
            headers = {"Range": f"bytes=0-{len(session['data']) - 1}"} if session["data"] else {}
            return self._send(308, b"", headers=headers)
        with self.gcs._lock:
            self.gcs._uploads.pop(upload_id, None)
        return self._json(200, self.gcs.write(bucket, session["name"], bytes(session["data"])))


def _split_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON metadata and the media of a ``multipart/related`` upload body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise KeyError("multipart upload without a boundary")
    sep = b"--" + match.group(1).encode()
    pieces = body.split(sep)
    # pieces: ['', metadata part, media part, '--...']; each part is headers, a blank line, content.
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        piece = piece.removeprefix(b"\r\n").removeprefix(b"\n")
        for blank in (b"\r\n\r\n", b"\n\n"):
            if blank in piece:
                content = piece.split(blank, 1)[1]
                break
        else:
            content = b""
        parts.append(content.removesuffix(b"\r\n").removesuffix(b"\n"))
    if len(parts) != 2:
        raise KeyError("multipart upload without metadata and media parts")
    return json.loads(parts[0] or b"{}"), parts[1]


def connection_extra(fake: FakeGcs) -> dict[str, Any]:
    """The Google connection extras that point gcsfs at ``fake``: its endpoint, anonymous credentials."""
    return {"gcs.endpoint": fake.endpoint, "is_anonymous": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake Cloud Storage JSON API on loopback.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--root", help="folder holding the buckets (default: a new temporary folder)")
    args = parser.parse_args(argv)
    fake = FakeGcs(args.root, port=args.port).start()
    print(f"Fake Cloud Storage on {fake.endpoint} (buckets in {fake.root})", flush=True)
    return serve_until_signalled(fake)


def serve_until_signalled(fake: Any) -> int:
    """Block until SIGINT or SIGTERM, then ``fake.stop()``; the exit status of a fake's ``main``."""
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        done.wait()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
