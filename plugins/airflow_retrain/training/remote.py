"""RemoteTrainingBackend: what every cloud backend does around its jobs, through object storage.

A cloud backend (SageMaker, Vertex AI) stages a job's inputs in the cloud's object store, lets the cloud
run it, then publishes the outputs into the run's artifact store. This base owns the parts that do not
depend on the cloud's job API, all through :class:`~airflow.sdk.ObjectStoragePath` (the Amazon provider's
s3fs integration for ``s3://``, the Google provider's gcsfs one for ``gs://``):

* **staging** under the job's prefix (``<staging root>/<job name>/``): the entry point's folder (as
  ``source/sourcedir.tar.gz`` or as plain files under ``source/``) and every channel given as a local
  folder (``input/<channel>/...``); channels already in the cloud's store are passed through;
* **unpacking** a finished job's outputs (tarballs or plain prefixes) into ``destination/model`` and
  ``destination/output``, refusing unsafe member paths;
* **cleanup** of what staging wrote (``source/`` and ``input/``), keeping outputs and checkpoints;
* **cloud error -> spec field** as data: :attr:`RemoteTrainingBackend.error_rules` is a table of
  :class:`ErrorRule` (pattern, field, hint), searched in order, instead of per-backend if-chains.

A subclass names its store (:attr:`scheme`, :meth:`staging_root`), its error translation
(:meth:`cloud_errors`) and where the cloud writes the outputs (:meth:`output_locations`).
"""

from __future__ import annotations

import io
import re
import tarfile
from abc import abstractmethod
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlparse

from airflow_retrain.training.base import (
    JobState,
    TrainingBackend,
    TrainingInputError,
    TrainingJobRequest,
    TrainingOutputs,
    TrainingOutputsMissing,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.sdk import ObjectStoragePath

#: Folders and files of the entry point's folder that are never staged.
SOURCE_SKIP = frozenset({"__pycache__", ".ipynb_checkpoints", ".git"})


@dataclass(frozen=True)
class ErrorRule:
    """One row of a backend's cloud-error table.

    :param pattern: regular expression searched (case-insensitively) in the cloud's error message.
    :param field: the spec field (or connection) the user fixes, e.g. ``training.sagemaker.role_arn``.
    :param hint: what to do about it, appended to the message; empty when the cloud's reason says it.
    """

    pattern: str
    field: str
    hint: str = ""

    def matches(self, message: str) -> bool:
        return re.search(self.pattern, message, re.IGNORECASE) is not None


@dataclass(frozen=True)
class OutputLocation:
    """Where the cloud left one part of a finished job's outputs.

    :param name: ``model`` or ``output``: the folder under the destination it is published to.
    :param source: the tarball (``packed``) or the prefix holding the files.
    :param what: how messages name it (``model (SM_MODEL_DIR)``).
    :param packed: ``source`` is a ``.tar.gz`` to extract; else a prefix whose files are copied.
    :param required: a file (relative path) that must be among the published files, e.g. ``metrics.json``.
    """

    name: str
    source: ObjectStoragePath
    what: str
    packed: bool = True
    required: str | None = None


class OutputsMissingError(LookupError):
    """A finished job's output is not where the cloud writes it (the message names the URI)."""


class RemoteTrainingBackend(TrainingBackend):
    """A training backend whose jobs run in a cloud and whose files travel through object storage."""

    remote = True
    #: The object store's URI scheme (``s3``, ``gs``): channels already there are passed through.
    scheme: ClassVar[str]
    #: Said after "neither <scheme>:// nor a local folder" when a channel is in another store.
    channel_hint: ClassVar[str] = ""
    #: Cloud error message -> spec field, first match wins (see :meth:`error_field`).
    error_rules: ClassVar[tuple[ErrorRule, ...]] = ()
    #: Named when no rule matches.
    default_error_field: ClassVar[str] = "the training request"
    #: The store's name for a missing object, said when its client reports only "not found" (s3fs's HEAD).
    missing_object: ClassVar[str] = "not found"

    # -- what a subclass names ------------------------------------------------------------------------

    @property
    @abstractmethod
    def staging_root(self) -> ObjectStoragePath:
        """The prefix every job of this backend stages under (``s3://bucket/prefix``), with its connection."""

    @abstractmethod
    def cloud_errors(
        self, action: str, job_name: str | None = None, request: TrainingJobRequest | None = None
    ) -> AbstractContextManager[None]:
        """A context that re-raises the cloud's errors as one message naming ``action``, the job and the field."""

    @abstractmethod
    def output_locations(self, job_name: str) -> list[OutputLocation]:
        """Where the cloud writes a finished job's ``model`` and ``output`` parts."""

    # -- paths ------------------------------------------------------------------------------------------

    def job_path(self, job_name: str) -> ObjectStoragePath:
        """The job's prefix: ``<staging root>/<job name>``."""
        return self.staging_root / job_name

    @staticmethod
    def uri(path: ObjectStoragePath, *, folder: bool = False) -> str:
        """The plain URI of ``path`` (``s3://bucket/key``), with a trailing ``/`` for a ``folder``."""
        from airflow_retrain.artifacts import to_uri

        return to_uri(path).rstrip("/") + ("/" if folder else "")

    # -- errors as data -----------------------------------------------------------------------------------

    def error_rule(self, message: str) -> ErrorRule | None:
        """The first of :attr:`error_rules` whose pattern occurs in the cloud's ``message``."""
        return next((rule for rule in self.error_rules if rule.matches(message)), None)

    def error_field(self, message: str) -> str:
        """The spec field a cloud's refusal ``message`` is about (with the rule's hint, if any)."""
        rule = self.error_rule(message)
        if rule is None:
            return self.default_error_field
        return f"{rule.field} ({rule.hint})" if rule.hint else rule.field

    # -- staging ------------------------------------------------------------------------------------------

    def stage_source(self, job_name: str, folder: Path, staged: list[ObjectStoragePath]) -> str:
        """Upload the entry point's folder as ``source/sourcedir.tar.gz``; return its URI."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in self._source_files(folder):
                tar.add(path, arcname=path.relative_to(folder).as_posix())
        target = self.job_path(job_name) / "source" / "sourcedir.tar.gz"
        with self.cloud_errors(f"upload the entry point's folder {folder} to {self.uri(target)}", job_name):
            staged.append(target)
            target.write_bytes(buffer.getvalue())
        return self.uri(target)

    def stage_source_files(self, job_name: str, folder: Path, staged: list[ObjectStoragePath]) -> ObjectStoragePath:
        """Upload the entry point's folder as plain files under ``source/`` (for clouds that mount the store)."""
        from airflow_retrain.artifacts import upload

        target = self.job_path(job_name) / "source"
        with self.cloud_errors(f"upload the entry point's folder {folder} to {self.uri(target)}", job_name):
            staged.append(target)
            for path in self._source_files(folder):
                upload(path, target / path.relative_to(folder).as_posix())
        return target

    @staticmethod
    def _source_files(folder: Path) -> list[Path]:
        return [
            path
            for path in sorted(folder.rglob("*"))
            if path.is_file() and not SOURCE_SKIP.intersection(path.relative_to(folder).parts) and path.suffix != ".pyc"
        ]

    def stage_channel(self, job_name: str, channel: str, location: str, staged: list[ObjectStoragePath]) -> str:
        """The cloud URI of one channel: passed through when already in the store, else uploaded."""
        from airflow_retrain.artifacts import upload

        location = str(location)
        scheme = urlparse(location).scheme
        if scheme == self.scheme:
            return location.rstrip("/") + "/"
        if scheme not in ("", "file"):
            raise TrainingInputError(
                f"training job {job_name}: channel {channel!r} at {location} is neither {self.scheme}:// nor a "
                f"local folder" + (f" {self.channel_hint}" if self.channel_hint else "")
            )
        local = Path(urlparse(location).path if scheme == "file" else location)
        if not local.exists():
            raise TrainingInputError(f"training job {job_name}: channel {channel!r} path {local} does not exist")
        if local.is_dir() and not any(p.is_file() for p in local.rglob("*")):
            raise TrainingInputError(f"training job {job_name}: channel {channel!r} folder {local} is empty")
        target = self.job_path(job_name) / "input" / channel
        with self.cloud_errors(f"upload channel {channel!r} to {self.uri(target, folder=True)}", job_name):
            staged.append(target)
            upload(local, target / local.name if local.is_file() else target)
        return self.uri(target, folder=True)

    def stage_channels(self, request: TrainingJobRequest, staged: list[ObjectStoragePath]) -> dict[str, str]:
        """Every channel of ``request`` as a URI of this backend's store."""
        return {ch: self.stage_channel(request.job_name, ch, loc, staged) for ch, loc in request.channels.items()}

    @contextmanager
    def staging(self) -> Iterator[list[ObjectStoragePath]]:
        """Collect what is staged; on any error (a refused create included) delete it again.

        A caller that must keep the files after an error (a taken job name: they are the existing job's
        inputs) clears the list before re-raising.
        """
        staged: list[ObjectStoragePath] = []
        try:
            yield staged
        except BaseException:
            self.unstage(staged)
            raise

    def unstage(self, paths: list[ObjectStoragePath]) -> None:
        """Delete staged files and prefixes, best effort: the error that led here matters more."""
        from airflow_retrain.artifacts import delete

        for path in paths:
            try:
                delete(path)
            except Exception:  # noqa: BLE001, S112 - best effort, see above
                continue

    def cleanup(self, job_name: str) -> list[str]:
        """Delete what staging wrote (``source/`` and ``input/``); keep outputs, checkpoints and the job."""
        from airflow_retrain.artifacts import delete

        removed = []
        for part in ("source", "input"):
            prefix = self.job_path(job_name) / part
            with self.cloud_errors(f"delete {self.uri(prefix, folder=True)}", job_name):
                if delete(prefix):
                    removed.append(self.uri(prefix, folder=True))
        return removed

    # -- outputs ------------------------------------------------------------------------------------------

    def fetch_outputs(self, job_name: str, destination: Any) -> TrainingOutputs:
        """Publish the job's ``model`` and ``output`` parts under ``destination`` (see the base contract)."""
        targets = {}
        try:
            for location in self.output_locations(job_name):
                target = targets[location.name] = destination / location.name
                if location.packed:
                    self.unpack(job_name, location, target)
                else:
                    self.copy_prefix(job_name, location, target)
        except OutputsMissingError as missing:
            job = self.describe(job_name)
            if job.state != JobState.COMPLETED:
                raise RuntimeError(f"training job {job_name} is {job.state.value}, not Completed: no outputs") from None
            raise TrainingOutputsMissing(f"training job {job_name} completed but {missing}") from None
        from airflow_retrain.artifacts import to_uri

        return TrainingOutputs(model_uri=to_uri(targets["model"]), output_uri=to_uri(targets["output"]))

    def unpack(self, job_name: str, location: OutputLocation, target: Any) -> None:
        """Extract the tarball ``location.source`` into ``target``.

        :raises OutputsMissingError: the tarball is not there (or lacks ``location.required``).
        """
        uri = self.uri(location.source)
        with self.cloud_errors(f"download {uri}", job_name):
            try:
                body = location.source.fs.cat_file(location.source.path)
            except FileNotFoundError as e:
                raise OutputsMissingError(f"its {location.what} is missing from {self._store_name()}: {uri} "
                                          f"({self.missing_reason(e)})") from None
        written = []
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile():
                    rel = self._safe_relative(job_name, uri, member.name)
                    self._write(target, rel, tar.extractfile(member).read())
                    written.append(rel)
        self._check_required(location, written, uri)

    def copy_prefix(self, job_name: str, location: OutputLocation, target: Any) -> None:
        """Copy every file under the prefix ``location.source`` into ``target``, relative paths kept.

        :raises OutputsMissingError: the prefix holds no files (or lacks ``location.required``).
        """
        source, uri = location.source, self.uri(location.source, folder=True)
        with self.cloud_errors(f"download {uri}", job_name):
            fs = source.fs
            base = fs._strip_protocol(source.path).rstrip("/")
            try:
                files = fs.find(source.path)
            except FileNotFoundError:
                files = []
            written = []
            for remote in files:
                rel = self._safe_relative(job_name, uri, fs._strip_protocol(remote)[len(base) :].lstrip("/"))
                self._write(target, rel, fs.cat_file(remote))
                written.append(rel)
        if not written:
            raise OutputsMissingError(f"its {location.what} is missing from {uri}")
        self._check_required(location, written, uri)

    def _store_name(self) -> str:
        return {"s3": "S3", "gs": "Cloud Storage"}.get(self.scheme, f"{self.scheme}://")

    def missing_reason(self, error: FileNotFoundError) -> str:
        """The store's words for a missing object: the cloud's code and message when the client kept them
        (s3fs keeps botocore's error as the cause), else :attr:`missing_object` and the client's message."""
        cause = getattr(error, "__cause__", None)
        response = getattr(cause, "response", None)
        if isinstance(response, dict) and response.get("Error"):
            err = response["Error"]
            return f"{err.get('Code', '')}: {err.get('Message', '')}"
        return f"{self.missing_object}: {error}"

    @staticmethod
    def _check_required(location: OutputLocation, written: list[PurePosixPath], uri: str) -> None:
        if location.required and PurePosixPath(location.required) not in written:
            raise OutputsMissingError(f"its {location.what} lacks {location.required} in {uri}")

    @staticmethod
    def _safe_relative(job_name: str, uri: str, name: str) -> PurePosixPath:
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise RuntimeError(f"training job {job_name}: {uri} holds an unsafe path {name!r}")
        return PurePosixPath(*[p for p in rel.parts if p != "."])

    @staticmethod
    def _write(target: Any, rel: PurePosixPath, data: bytes) -> None:
        dest = target
        for part in rel.parts[:-1]:
            dest = dest / part
        dest.mkdir(parents=True, exist_ok=True)
        (dest / rel.parts[-1]).write_bytes(data)
