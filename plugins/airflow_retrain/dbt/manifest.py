"""A cache of ``manifest.json`` keyed by a hash of the project's files, and the light index DAGs render from.

dbt is never run while a DAG file is parsed. ``dbt parse`` (``make dbt-manifest``) or the ``dbt_build``
task (whose ``dbt build`` writes a manifest anyway) store the manifest under
``<state dir>/dbt/manifests/<project key>/<fingerprint>/`` together with ``index.json``: only the fields
rendering and selection need, so a parse reads a few hundred kilobytes instead of dbt's full manifest.
The fingerprint hashes every file of the project that dbt reads (models, macros, seeds, YAML, packages),
so the cached manifest is reused exactly while those files are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_retrain.config import state_dir

#: Folders of a dbt project that are build output, not input.
_SKIPPED_DIRS = {"target", "logs", ".git", "__pycache__", ".venv", "node_modules", ".user.yml"}
#: Resource types that become nodes of the Airflow group.
BUILDABLE = ("model", "seed", "snapshot")


class ManifestError(RuntimeError):
    """The dbt manifest a DAG or spec needs is unusable; the message says which project and what to run."""


class ManifestMissingError(ManifestError):
    pass


class ManifestStaleError(ManifestError):
    pass


def state_root() -> Path:
    return state_dir() / "dbt"


def project_key(project_dir: str | os.PathLike) -> str:
    """A short stable key for a project folder (its absolute path)."""
    return hashlib.sha256(str(Path(project_dir).resolve()).encode()).hexdigest()[:12]


def project_fingerprint(project_dir: str | os.PathLike) -> str:
    """Hash of every input file of the project (path, size and content), build output excluded.

    Content, not mtime: a fresh checkout of the same commit reuses the manifest. Costs a few milliseconds
    for a thousand files.
    """
    root = Path(project_dir).resolve()
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith((".pyc", ".duckdb", ".duckdb.wal", ".log")):
                continue
            path = Path(dirpath, name)
            try:
                data = path.read_bytes()
            except OSError:
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:20]


def cache_dir(project_dir: str | os.PathLike, fingerprint: str | None = None) -> Path:
    base = state_root() / "manifests" / project_key(project_dir)
    return base / fingerprint if fingerprint else base


@dataclass
class ManifestIndex:
    """What rendering and selection need from ``manifest.json``.

    :param nodes: ``unique_id`` -> a small dict (name, resource_type, package_name, fqn, path,
        original_file_path, tags, config, depends_on, relation_name, source_name, test_metadata,
        attached_node, docs_url; for models ``contract_enforced`` and ``columns``: name -> ``data_type``
        as the YAML declares them).
    """

    project_name: str
    project_dir: str
    fingerprint: str
    nodes: dict[str, dict[str, Any]]
    parent_map: dict[str, list[str]]
    child_map: dict[str, list[str]]
    selectors: dict[str, Any] = field(default_factory=dict)
    generated_at: str = ""
    #: set when the index was not made from the project's current files
    stale: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "project_name": self.project_name,
            "project_dir": self.project_dir,
            "fingerprint": self.fingerprint,
            "nodes": self.nodes,
            "parent_map": self.parent_map,
            "child_map": self.child_map,
            "selectors": self.selectors,
            "generated_at": self.generated_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], stale: bool = False) -> ManifestIndex:
        return cls(**data, stale=stale)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], project_dir: str, fingerprint: str) -> ManifestIndex:
        """Keep the fields of dbt's ``manifest.json`` that rendering and selection read."""
        nodes: dict[str, dict[str, Any]] = {}
        for section in ("nodes", "sources", "exposures", "unit_tests"):
            for uid, node in (manifest.get(section) or {}).items():
                config = node.get("config") or {}
                nodes[uid] = {
                    "name": node.get("name"),
                    "resource_type": node.get("resource_type"),
                    "package_name": node.get("package_name"),
                    "fqn": node.get("fqn") or [],
                    "path": node.get("path"),
                    "original_file_path": node.get("original_file_path"),
                    "patch_path": node.get("patch_path"),
                    "tags": node.get("tags") or [],
                    "config": {
                        k: v
                        for k, v in config.items()
                        if isinstance(v, str | int | float | bool) or k in ("tags",)
                    },
                    "depends_on": (node.get("depends_on") or {}).get("nodes", []),
                    "relation_name": node.get("relation_name"),
                    "source_name": node.get("source_name"),
                    "test_type": _test_type(node),
                    "test_name": (node.get("test_metadata") or {}).get("name"),
                    "attached_node": node.get("attached_node"),
                    "schema": node.get("schema"),
                    # dbt's contract: only ``contract.enforced`` makes a model's columns a contract
                    "contract_enforced": bool((config.get("contract") or {}).get("enforced")),
                    "columns": {
                        c.get("name") or k: c.get("data_type") for k, c in (node.get("columns") or {}).items()
                    }
                    if node.get("resource_type") == "model"
                    else {},
                    "database": node.get("database"),
                    "alias": node.get("alias") or node.get("identifier"),
                    "freshness": bool((node.get("freshness") or {}).get("error_after", {}).get("count"))
                    or bool((node.get("freshness") or {}).get("warn_after", {}).get("count"))
                    if node.get("resource_type") == "source"
                    else False,
                }
        return cls(
            project_name=(manifest.get("metadata") or {}).get("project_name") or "",
            project_dir=str(Path(project_dir).resolve()),
            fingerprint=fingerprint,
            nodes=nodes,
            parent_map=manifest.get("parent_map") or {},
            child_map=manifest.get("child_map") or {},
            selectors=manifest.get("selectors") or {},
            generated_at=(manifest.get("metadata") or {}).get("generated_at") or "",
        )


def _test_type(node: dict[str, Any]) -> str | None:
    if node.get("resource_type") == "unit_test":
        return "unit"
    if node.get("resource_type") != "test":
        return None
    return "generic" if node.get("test_metadata") else "singular"


def store_manifest(
    project_dir: str | os.PathLike, manifest_path: str | os.PathLike, fingerprint: str | None = None
) -> ManifestIndex:
    """Cache a manifest dbt just wrote for the project's files as they were (``fingerprint``) when it ran."""
    fingerprint = fingerprint or project_fingerprint(project_dir)
    manifest = json.loads(Path(manifest_path).read_text())
    index = ManifestIndex.from_manifest(manifest, str(project_dir), fingerprint)
    dest = cache_dir(project_dir, fingerprint)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".index.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(index.to_json(), separators=(",", ":")))
    shutil.copyfile(manifest_path, dest / f".manifest.{os.getpid()}.tmp")
    os.replace(dest / f".manifest.{os.getpid()}.tmp", dest / "manifest.json")
    os.replace(tmp, dest / "index.json")
    (cache_dir(project_dir) / "latest").write_text(fingerprint)
    _prune(project_dir, keep=fingerprint)
    return index


def _prune(project_dir: str | os.PathLike, keep: str, max_entries: int = 5) -> None:
    entries = sorted(
        (p for p in cache_dir(project_dir).iterdir() if p.is_dir() and p.name != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in entries[max_entries - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def load_index(project_dir: str | os.PathLike, *, allow_stale: bool = False) -> ManifestIndex:
    """The cached index for the project's current files.

    :param allow_stale: return the most recent index of an older version of the files (marked ``stale``)
        instead of raising :class:`ManifestStaleError`.
    :raises ManifestMissingError: no manifest was ever cached for this project.
    :raises ManifestStaleError: the project's files changed since the last cached manifest.
    """
    fingerprint = project_fingerprint(project_dir)
    current = cache_dir(project_dir, fingerprint) / "index.json"
    if current.is_file():
        return ManifestIndex.from_json(json.loads(current.read_text()))
    latest_file = cache_dir(project_dir) / "latest"
    latest = latest_file.read_text().strip() if latest_file.is_file() else None
    hint = f"run `make dbt-manifest DBT_PROJECT_DIR={project_dir}` (dbt parse) or let the dbt_build task run once"
    if not latest or not (cache_dir(project_dir, latest) / "index.json").is_file():
        raise ManifestMissingError(f"no dbt manifest cached for project {project_dir}: {hint}")
    if not allow_stale:
        raise ManifestStaleError(
            f"the dbt manifest cached for project {project_dir} is stale (files changed since fingerprint "
            f"{latest}, now {fingerprint}): {hint}"
        )
    data = json.loads((cache_dir(project_dir, latest) / "index.json").read_text())
    return ManifestIndex.from_json(data, stale=True)


def partial_parse_file(project_dir: str | os.PathLike, target_name: str) -> Path:
    """Where dbt's partial-parsing state for a project and target is kept between runs."""
    return state_root() / "partial_parse" / project_key(project_dir) / target_name / "partial_parse.msgpack"


def touch_used(index: ManifestIndex) -> None:
    """Mark a cache entry as recently used (pruning keeps the newest)."""
    path = cache_dir(index.project_dir, index.fingerprint)
    if path.is_dir():
        now = time.time()
        os.utime(path, (now, now))
