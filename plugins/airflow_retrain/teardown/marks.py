"""The sweep's own store of marks and claims, for resources that cannot carry the sweep's tags.

Vertex AI custom jobs have labels, but only at creation: ``JobService`` has no method that changes a
custom job (no ``UpdateCustomJob`` in ``google.cloud.aiplatform.v1``), so the mark
(``retrain:teardown-planned``) and the claim (``retrain:teardown-claim``) of a custom job live here, one
JSON file of tags per resource and one claim file created with ``O_EXCL``: two sweeps sharing this
directory can never both hold a claim. The directory is the worker's state dir, so the guarantee holds
for sweeps on one machine (``gpu_teardown`` runs with ``max_active_runs=1``; give its task a fixed
queue, or a shared state dir, where workers are many).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from airflow_retrain.teardown.base import Resource

#: A claim older than this was left by a sweep that died while acting; it no longer holds.
STALE_CLAIM_SECONDS = 3600.0


def safe_name(text: str) -> str:
    """``text`` with anything but letters, digits, ``_``, ``.`` and ``-`` replaced by ``_`` (a file name)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


class FileMarks:
    """Tags (the mark, the claim) of resources, as files under ``directory``.

    :param claim_key: the policy's claim tag: stored as an ``O_EXCL`` file, never overwritten.
    :param stem: a resource's file name without suffix (default: its :attr:`Resource.key`, made safe).
    """

    def __init__(self, directory: Path, claim_key: str, stem: Callable[[Resource], str] | None = None) -> None:
        self.directory = Path(directory)
        self.claim_key = claim_key
        self._stem = stem or (lambda resource: safe_name(resource.key))

    def tags_path(self, resource: Resource) -> Path:
        return self.directory / f"{self._stem(resource)}.json"

    def claim_path(self, resource: Resource) -> Path:
        return self.directory / f"{self._stem(resource)}.claim"

    def read(self, resource: Resource) -> dict[str, str]:
        """The stored tags of ``resource`` (its claim included)."""
        tags: dict[str, str] = {}
        try:
            tags.update(json.loads(self.tags_path(resource).read_text()))
        except (OSError, ValueError):
            pass
        try:
            tags[self.claim_key] = self.claim_path(resource).read_text()
        except OSError:
            pass
        return tags

    def set(self, resource: Resource, key: str, value: str) -> bool:
        """Store one tag; ``False`` when ``key`` is the claim and another sweep holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if key == self.claim_key:
            path = self.claim_path(resource)
            try:
                if time.time() - path.stat().st_mtime > STALE_CLAIM_SECONDS:
                    path.unlink(missing_ok=True)
            except OSError:
                pass
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as fh:
                fh.write(value)
            return True
        stored = {k: v for k, v in self.read(resource).items() if k != self.claim_key}
        stored[key] = value
        self._write(resource, stored)
        return True

    def remove(self, resource: Resource, key: str) -> None:
        if key == self.claim_key:
            self.claim_path(resource).unlink(missing_ok=True)
            return
        stored = {k: v for k, v in self.read(resource).items() if k not in (key, self.claim_key)}
        if stored:
            self._write(resource, stored)
        else:
            self.tags_path(resource).unlink(missing_ok=True)

    def _write(self, resource: Resource, tags: dict[str, str]) -> None:
        path = self.tags_path(resource)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(tags))
        os.replace(tmp, path)

    def prune(self, kind: str, location: str, keep: set[str]) -> int:
        """Forget the marks of ``kind`` at ``location`` whose resource is no longer live (not in ``keep``,
        a set of :attr:`Resource.key`); returns how many resources were forgotten."""
        if not self.directory.is_dir():
            return 0
        prefix = safe_name(f"{kind}:{location}:")
        kept = {safe_name(key) for key in keep}
        gone = {
            path.name.rsplit(".", 1)[0]
            for path in self.directory.glob(f"{prefix}*")
            if path.suffix in (".json", ".claim") and path.name.rsplit(".", 1)[0] not in kept
        }
        for stem in gone:
            for suffix in (".json", ".claim"):
                (self.directory / f"{stem}{suffix}").unlink(missing_ok=True)
        return len(gone)
