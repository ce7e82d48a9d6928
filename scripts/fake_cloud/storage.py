"""A training job's S3 side on the fake cloud: the source dir, channels and checkpoints it downloads into
each host's container root, and the ``model.tar.gz``/``output.tar.gz`` and checkpoints it uploads."""

from __future__ import annotations

import io
import tarfile
import urllib.parse
from pathlib import Path
from typing import Any

from airflow_retrain.training import container


class JobInputError(Exception):
    """The job cannot run because of its inputs (reported as ``ClientError: ...``)."""


def _split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise JobInputError(f"{uri!r} is not an s3:// URI")
    return parsed.netloc, parsed.path.lstrip("/")


class JobStorage:
    """The S3 transfers of :class:`~jobs.TrainingRun` (which provides ``request``, ``name``, ``region``,
    ``client()``)."""

    request: dict[str, Any]
    name: str
    region: str
    job: Any

    def client(self, service: str) -> Any:  # pragma: no cover - provided by TrainingRun
        raise NotImplementedError

    def _output_bucket_problem(self) -> str | None:
        """Checked before any instance time is billed, like SageMaker's own pre-flight checks."""
        uri = (self.request.get("OutputDataConfig") or {}).get("S3OutputPath", "")
        try:
            bucket, _ = _split_s3_uri(uri)
            self.client("s3").head_bucket(Bucket=bucket)
        except JobInputError as exc:
            return f"ClientError: OutputDataConfig.S3OutputPath {exc}"
        except Exception:  # noqa: BLE001 - botocore ClientError
            return f"ClientError: the output bucket of OutputDataConfig.S3OutputPath {uri} does not exist or is not accessible"
        return None

    def _download_prefix(self, uri: str, target: Path) -> int:
        bucket, prefix = _split_s3_uri(uri)
        s3 = self.client("s3")
        count = 0
        try:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):
                        continue
                    relative = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
                    dest = (target / relative).resolve()
                    if not dest.is_relative_to(target.resolve()):
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, key, str(dest))
                    count += 1
        except JobInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - NoSuchBucket and friends
            raise JobInputError(f"Data download failed: cannot read {uri}: {exc}") from None
        return count

    def _download_source(self, root: Path) -> str:
        hps = self.request.get("HyperParameters") or {}
        program = container.decode_hyperparameter(hps.get("sagemaker_program", ""))
        submit = container.decode_hyperparameter(hps.get("sagemaker_submit_directory", ""))
        if not program or not isinstance(program, str):
            raise JobInputError(
                "the fake cloud runs framework-mode jobs only: hyperparameter sagemaker_program "
                "(the entry point, JSON-encoded) is missing"
            )
        code_dir = root / "code"
        if submit:
            if not isinstance(submit, str):
                raise JobInputError(f"hyperparameter sagemaker_submit_directory={submit!r} is not an S3 URI")
            bucket, key = _split_s3_uri(submit)
            archive = root / "tmp" / "sourcedir.tar.gz"
            try:
                self.client("s3").download_file(bucket, key, str(archive))
            except Exception as exc:  # noqa: BLE001
                raise JobInputError(f"cannot download sagemaker_submit_directory {submit}: {exc}") from None
            try:
                with tarfile.open(archive) as tar:
                    tar.extractall(code_dir, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise JobInputError(
                    f"sagemaker_submit_directory {submit} is not a readable tar.gz: {exc}"
                ) from None
        if not (code_dir / program).is_file():
            raise JobInputError(
                f"sagemaker_program {program!r} is not in the source directory {submit or '(none given)'}"
            )
        return program

    def _download_channels(self, root: Path) -> None:
        for channel in self.request.get("InputDataConfig") or []:
            name = channel["ChannelName"]
            source = (channel.get("DataSource") or {}).get("S3DataSource")
            if not source:
                raise JobInputError(
                    f"channel {name!r}: only S3DataSource channels are supported by the fake cloud"
                )
            if source.get("S3DataType", "S3Prefix") != "S3Prefix":
                raise JobInputError(
                    f"channel {name!r}: S3DataType {source.get('S3DataType')} is not supported by the fake cloud"
                )
            mode = channel.get("InputMode") or (self.request.get("AlgorithmSpecification") or {}).get(
                "TrainingInputMode", "File"
            )
            if mode == "Pipe":
                raise JobInputError(f"channel {name!r}: InputMode Pipe is not supported by the fake cloud")
            target = root / "input" / "data" / name
            target.mkdir(parents=True, exist_ok=True)
            uri = source["S3Uri"]
            if self._download_prefix(uri, target) == 0:
                bucket, _ = _split_s3_uri(uri)
                raise JobInputError(
                    f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that the '
                    f"bucket exists in the selected region ({self.region}), that objects exist under that S3 "
                    f"prefix, and that the role {self.request.get('RoleArn')} has s3:ListBucket permissions on "
                    f'bucket "{bucket}".'
                )

    def _download_checkpoints(self, root: Path) -> None:
        checkpoint = self.request.get("CheckpointConfig") or {}
        if checkpoint.get("S3Uri"):
            try:
                self._download_prefix(checkpoint["S3Uri"], root / "checkpoints")
            except JobInputError:
                pass  # no checkpoint yet is the normal first start

    def _output_prefix(self) -> tuple[str, str]:
        bucket, prefix = _split_s3_uri((self.request.get("OutputDataConfig") or {})["S3OutputPath"])
        prefix = "/".join(p for p in (prefix.strip("/"), self.name, "output") if p)
        return bucket, prefix

    def _upload_outputs(self, roots: list[Path]) -> None:
        root = roots[0]  # the first host's model and output data, as distributed scripts write them on rank 0
        bucket, prefix = self._output_prefix()
        s3 = self.client("s3")
        for name, folder in (("model.tar.gz", root / "model"), ("output.tar.gz", root / "output" / "data")):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                for path in sorted(folder.rglob("*")):
                    tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=buffer.getvalue())
        self.job.model_artifacts = {"S3ModelArtifacts": f"s3://{bucket}/{prefix}/model.tar.gz"}
        for each in roots:
            self._upload_checkpoints(each)

    def _upload_checkpoints(self, root: Path) -> None:
        uri = (self.request.get("CheckpointConfig") or {}).get("S3Uri")
        if not uri:
            return
        bucket, prefix = _split_s3_uri(uri)
        s3 = self.client("s3")
        for path in sorted((root / "checkpoints").rglob("*")):
            if path.is_file():
                s3.upload_file(
                    str(path),
                    bucket,
                    "/".join(
                        p for p in (prefix.strip("/"), str(path.relative_to(root / "checkpoints"))) if p
                    ),
                )
