"""Run-scoped artifacts in object storage: every hand-off between a run's tasks is a URI.

Tasks of one DAG run may run on different machines (Celery, Kubernetes), so no task reads a file another
task wrote to its local disk. What one task hands to the next -- the exported Parquet, the trained model,
its metrics, the run report -- lives under the run's prefix in an artifact store, addressed by a URI, and
XCom carries only those URIs and small JSON. Paths are Airflow's
:class:`~airflow.sdk.ObjectStoragePath`, so the store is whatever fsspec filesystem the URI names:

* ``file://`` -- the default, ``<state dir>/artifacts`` (one machine, or a shared volume);
* ``s3://bucket/prefix`` -- through an Airflow AWS connection (default ``aws_default``; its
  ``endpoint_url`` extra points it at a fake such as moto);
* ``gs://bucket/prefix`` -- through an Airflow Google Cloud connection (default ``google_cloud_default``).

The store is chosen per pipeline by the spec (``artifacts.root``/``artifacts.connection_id``), else per
deployment by ``RETRAIN_ARTIFACT_ROOT``/``RETRAIN_ARTIFACT_CONN_ID``, else the default. Layout of a run::

    <root>/<dag_id>/<run_key>/run.json                         what the run is (spec snapshot)
                              dataset/{train,test}/part-0.parquet
                              training/<job_name>/model/...       the SM_MODEL_DIR files, extracted
                              training/<job_name>/output/...      the SM_OUTPUT_DATA_DIR files (metrics.json)
                              training/<job_name>/outputs.json    written last: the outputs are complete
                              report.json
    <root>/<dag_id>/latest_report.json

The run's teardown deletes ``dataset/``, ``training/`` and ``dbt/`` (MLflow holds its own copy of every
registered model); ``run.json`` and ``report.json`` stay.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_retrain.config import state_dir
from airflow_retrain.spec.fields import artifact_root_problems as root_problems

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

ARTIFACT_ROOT_ENV = "RETRAIN_ARTIFACT_ROOT"
ARTIFACT_CONN_ENV = "RETRAIN_ARTIFACT_CONN_ID"
DEFAULT_CONN_IDS = {"s3": "aws_default", "gs": "google_cloud_default", "gcs": "google_cloud_default"}
SCRATCH_PREFIXES = ("dataset", "training", "dbt")  # dbt: the per-node status documents of the run


class ArtifactNotFound(FileNotFoundError):
    """An artifact a task needs is not in the store (deleted by teardown, or never written)."""

    def __init__(self, uri: str, what: str = "artifact"):
        self.uri = uri
        super().__init__(f"{what} {uri} does not exist in the artifact store")


def file_uri(path: str | os.PathLike) -> str:
    """``file:///abs/path``, unescaped: ObjectStoragePath takes the path as written (``%20`` stays ``%20``)."""
    return f"file://{Path(path).resolve()}"


def _default_root() -> str:
    return file_uri(state_dir() / "artifacts")


def to_uri(path: ObjectStoragePath | str) -> str:
    """The plain URI of a path: ``s3://bucket/key``, ``file:///abs/path`` (never the ``conn@`` form)."""
    if isinstance(path, str):
        return path
    if not hasattr(path, "protocol"):  # a local pathlib.Path
        return file_uri(str(path))
    protocol = path.protocol or "file"
    if protocol in ("file", "local"):
        return file_uri(path.path)
    return f"{protocol}://{path.path}"


def artifact_path(uri: str, conn_id: str | None = None) -> ObjectStoragePath:
    """An :class:`~airflow.sdk.ObjectStoragePath` for ``uri`` that talks through ``conn_id``.

    :param conn_id: Airflow connection; default ``aws_default`` for ``s3://``, ``google_cloud_default``
        for ``gs://``, none for ``file://``. A bare local path is read as ``file://``.
    """
    from airflow.sdk import ObjectStoragePath

    scheme = urlsplit(uri).scheme
    if not scheme:
        uri, scheme = file_uri(uri), "file"
    if scheme == "file":
        return ObjectStoragePath(uri)
    # s3:// goes through the Amazon provider's s3fs integration (its get_fs maps the connection's
    # credentials, region, endpoint_url and config_kwargs), gs:// through the Google provider's gcsfs one.
    return ObjectStoragePath(uri, conn_id=conn_id or DEFAULT_CONN_IDS.get(scheme))


@dataclass(frozen=True)
class ArtifactStore:
    """Where a pipeline's runs keep their artifacts.

    :param root_uri: the store's root URI.
    :param conn_id: the Airflow connection for it (``None`` for ``file://``).
    """

    root_uri: str
    conn_id: str | None = None

    @classmethod
    def resolve(cls, root: str | None = None, conn_id: str | None = None) -> ArtifactStore:
        """The spec's settings, else the deployment's (``RETRAIN_ARTIFACT_ROOT``/``_CONN_ID``), else the default.

        :raises ValueError: the root is not a usable URI (the message names where it came from).
        """
        source = "artifacts.root"
        if not root:
            root, source = os.environ.get(ARTIFACT_ROOT_ENV) or None, ARTIFACT_ROOT_ENV
            conn_id = conn_id or os.environ.get(ARTIFACT_CONN_ENV) or None
        if not root:
            return cls(_default_root(), None)
        if problems := root_problems(root):
            raise ValueError(f"{source}: " + "; ".join(problems))
        scheme = urlsplit(root).scheme
        if scheme == "file":
            return cls(root.rstrip("/"), None)
        return cls(root.rstrip("/"), conn_id or DEFAULT_CONN_IDS.get(scheme))

    @property
    def root(self) -> ObjectStoragePath:
        return artifact_path(self.root_uri, self.conn_id)

    def path(self, uri: str) -> ObjectStoragePath:
        """A path for a URI this store handed out (its connection applies to URIs of its scheme)."""
        same_scheme = urlsplit(uri).scheme == urlsplit(self.root_uri).scheme
        return artifact_path(uri, self.conn_id if same_scheme else None)

    def run_path(self, dag_id: str, run_key: str) -> ObjectStoragePath:
        """The prefix of one DAG run: ``<root>/<dag_id>/<run_key>``."""
        return self.root / dag_id / run_key

    def describe(self) -> str:
        return self.root_uri + (f" (connection {self.conn_id})" if self.conn_id else "")


# ---------------------------------------------------------------------------------------------- helpers


def _is_local(path: ObjectStoragePath) -> bool:
    return (path.protocol or "file") in ("file", "local")


def as_artifact_path(path: Any) -> Any:
    """An ObjectStoragePath for a URI string or a local path; any other path-like object as it is."""
    from airflow.sdk import ObjectStoragePath

    if isinstance(path, ObjectStoragePath):
        return path
    if isinstance(path, (str, PurePath)):
        return artifact_path(str(path))
    return path


def exists(path: ObjectStoragePath | str) -> bool:
    return as_artifact_path(path).exists()


def upload(local: str | os.PathLike, destination: ObjectStoragePath) -> str:
    """Copy a local file to ``destination``, or a local folder's files under the ``destination`` prefix.

    :return: the destination's URI.
    """
    local = Path(local)
    if not local.exists():
        raise FileNotFoundError(f"nothing to upload: {local} does not exist")
    destination = as_artifact_path(destination)
    if not hasattr(destination, "fs"):  # another path-like object: its own mkdir/write_bytes
        files = [(local, destination)] if local.is_file() else [
            (f, destination / f.relative_to(local).as_posix()) for f in sorted(local.rglob("*")) if f.is_file()
        ]
        for file, target in files:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read_bytes())
        return str(destination)
    fs = destination.fs
    if local.is_file():
        if _is_local(destination):
            Path(destination.path).parent.mkdir(parents=True, exist_ok=True)
        fs.put_file(str(local), destination.path)
        return to_uri(destination)
    if _is_local(destination):
        Path(destination.path).mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        target = destination / file.relative_to(local).as_posix()
        if _is_local(target):
            Path(target.path).parent.mkdir(parents=True, exist_ok=True)
        fs.put_file(str(file), target.path)
    return to_uri(destination)


def download(source: ObjectStoragePath, local_dir: str | os.PathLike | None = None) -> Path:
    """Copy a file, or every file under a prefix, into ``local_dir`` (a new temporary folder by default).

    A prefix's files keep their relative paths; a single file lands as ``local_dir/<name>``.

    :return: the local folder (for a prefix) or file (for a file).
    :raises ArtifactNotFound: nothing exists at ``source``.
    """
    target = Path(local_dir) if local_dir is not None else Path(tempfile.mkdtemp(prefix="retrain-artifact-"))
    target.mkdir(parents=True, exist_ok=True)
    source = as_artifact_path(source)
    fs = source.fs
    try:
        info = fs.info(source.path)
    except FileNotFoundError:
        raise ArtifactNotFound(to_uri(source)) from None
    if info.get("type") != "directory":
        local = target / source.name
        fs.get_file(source.path, str(local))
        return local
    base = fs._strip_protocol(source.path).rstrip("/")
    files = fs.find(source.path)
    if not files:
        raise ArtifactNotFound(to_uri(source), "prefix (empty)")
    for remote in files:
        relative = fs._strip_protocol(remote)[len(base) :].lstrip("/")
        local = target / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))
    return target


def read_json(source: ObjectStoragePath) -> Any:
    """Read a small JSON document. :raises ArtifactNotFound: it does not exist."""
    source = as_artifact_path(source)
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise ArtifactNotFound(to_uri(source)) from None
    return json.loads(text)


def write_json(destination: ObjectStoragePath, data: Any, *, strict: bool = True) -> str:
    """Write a small JSON document (``default=str`` for dates and the like); return its URI.

    :param strict: refuse NaN and infinities (``ValueError``) rather than write non-standard JSON.
    """
    text = json.dumps(data, indent=2, default=str, allow_nan=not strict)
    destination = as_artifact_path(destination)
    if _is_local(destination):
        local = Path(destination.path)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, local)  # readers never see half a document
    else:
        destination.write_text(text)  # object stores replace whole objects
    return to_uri(destination)


def delete(prefix: ObjectStoragePath) -> bool:
    """Delete a file or everything under a prefix; ``False`` when nothing was there."""
    prefix = as_artifact_path(prefix)
    if not prefix.exists():
        return False
    if _is_local(prefix):
        local = Path(prefix.path)
        if local.is_dir():
            shutil.rmtree(local)
        else:
            local.unlink()
        return True
    prefix.fs.rm(prefix.path, recursive=True)
    return True
