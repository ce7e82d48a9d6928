"""An fsspec filesystem for ``s3://`` on the Amazon provider's :class:`S3Hook` (boto3, one Airflow connection).

Airflow's ``ObjectStoragePath`` serves ``s3://`` through ``s3fs``, which needs ``aiobotocore``; every
``aiobotocore`` release pins ``botocore`` to an older line than the ``boto3`` this project's lock (and the
Amazon provider's SageMaker hooks) use, so the two cannot be installed together. When ``s3fs`` is absent,
:func:`airflow_retrain.artifacts.artifact_path` attaches this filesystem for the connection instead: the
same ``ObjectStoragePath`` API, the same connection (credentials, region, ``endpoint_url``), synchronous
boto3 underneath, and boto3's managed transfers (multipart, parallel) for whole files.

It implements what run artifacts need: list, stat, read (ranged GETs), write (one PUT on close),
upload/download of whole files, and recursive delete. S3 has no folders: ``mkdir`` is a no-op and a
"directory" is any prefix with objects under it.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem


def _is_not_found(error: Exception) -> bool:
    code = str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


class S3HookFileSystem(AbstractFileSystem):
    """``s3://bucket/key`` paths through :class:`~airflow.providers.amazon.aws.hooks.s3.S3Hook`.

    :param aws_conn_id: the Airflow AWS connection (``endpoint_url`` in its extra points it at a fake).
    """

    protocol = ("s3", "s3a")
    root_marker = ""
    cachable = False  # one instance per connection, held by Airflow's store cache

    def __init__(self, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id)

    @cached_property
    def client(self):
        return self.hook.get_conn()

    @staticmethod
    def split_path(path: str) -> tuple[str, str]:
        path = S3HookFileSystem._strip_protocol(path)
        bucket, _, key = path.partition("/")
        return bucket, key

    # ---------------------------------------------------------------- listing and stat

    def _objects(self, bucket: str, prefix: str, delimiter: str | None):
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        yield from paginator.paginate(**kwargs)

    @staticmethod
    def _file_entry(bucket: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": f"{bucket}/{obj['Key']}",
            "type": "file",
            "size": obj.get("Size", obj.get("ContentLength", 0)),
            "ETag": obj.get("ETag"),
            "LastModified": obj.get("LastModified"),
        }

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        bucket, key = self.split_path(path)
        prefix = f"{key.rstrip('/')}/" if key else ""
        entries: list[dict[str, Any]] = []
        for page in self._objects(bucket, prefix, "/"):
            for common in page.get("CommonPrefixes", []):
                entries.append({"name": f"{bucket}/{common['Prefix'].rstrip('/')}", "type": "directory", "size": 0})
            for obj in page.get("Contents", []):
                if obj["Key"] != prefix:  # a zero-byte "folder marker"
                    entries.append(self._file_entry(bucket, obj))
        if not entries and key:
            info = self.info(path)  # a file lists as itself; a missing path raises FileNotFoundError
            entries = [info]
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        bucket, key = self.split_path(path)
        if not key:
            try:
                self.client.head_bucket(Bucket=bucket)
            except Exception as e:
                if _is_not_found(e):
                    raise FileNotFoundError(f"s3://{bucket}") from None
                raise
            return {"name": bucket, "type": "directory", "size": 0}
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
            return self._file_entry(bucket, {**head, "Key": key})
        except Exception as e:
            if not _is_not_found(e):
                raise
        page = self.client.list_objects_v2(Bucket=bucket, Prefix=f"{key.rstrip('/')}/", MaxKeys=1)
        if page.get("KeyCount", 0) or page.get("Contents"):
            return {"name": f"{bucket}/{key.rstrip('/')}", "type": "directory", "size": 0}
        raise FileNotFoundError(f"s3://{bucket}/{key}")

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False, **kwargs):
        bucket, key = self.split_path(path)
        prefix = f"{key.rstrip('/')}/" if key else ""
        found: dict[str, dict[str, Any]] = {}
        for page in self._objects(bucket, prefix, None):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue
                depth = obj["Key"][len(prefix) :].count("/") + 1
                if maxdepth is None or depth <= maxdepth:
                    entry = self._file_entry(bucket, obj)
                    found[entry["name"]] = entry
        if not found and key:
            try:
                entry = self.info(path)
            except FileNotFoundError:
                entry = None
            if entry and entry["type"] == "file":
                found[entry["name"]] = entry
        return found if detail else sorted(found)

    # ---------------------------------------------------------------- changes

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """S3 has no folders; a prefix exists once an object is written under it."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """S3 has no folders; a prefix exists once an object is written under it."""

    def rm_file(self, path: str) -> None:
        bucket, key = self.split_path(path)
        self.client.delete_object(Bucket=bucket, Key=key)

    def rm(self, path, recursive: bool = False, maxdepth: int | None = None) -> None:
        for one in [path] if isinstance(path, str) else list(path):
            bucket, key = self.split_path(one)
            keys = [self.split_path(p)[1] for p in self.find(one)] if recursive else []
            if key and key not in keys:
                keys.append(key)
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
                batch = [{"Key": k} for k in keys[start : start + 1000]]
                response = self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                if errors := response.get("Errors"):
                    raise OSError(f"could not delete from s3://{bucket}: {errors[:3]}")

    def put_file(self, lpath: str, rpath: str, callback=None, **kwargs: Any) -> None:
        bucket, key = self.split_path(rpath)
        self.client.upload_file(str(lpath), bucket, key)

    def get_file(self, rpath: str, lpath: str, callback=None, outfile=None, **kwargs: Any) -> None:
        bucket, key = self.split_path(rpath)
        try:
            self.client.download_file(bucket, key, str(lpath))
        except Exception as e:
            if _is_not_found(e):
                raise FileNotFoundError(f"s3://{bucket}/{key}") from None
            raise

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        bucket, key = self.split_path(path)
        kwargs = {"Bucket": bucket, "Key": key}
        if start is not None or end is not None:
            kwargs["Range"] = f"bytes={start or 0}-{'' if end is None else end - 1}"
        try:
            return self.client.get_object(**kwargs)["Body"].read()
        except Exception as e:
            if _is_not_found(e):
                raise FileNotFoundError(f"s3://{bucket}/{key}") from None
            raise

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        bucket, key = self.split_path(path)
        self.client.put_object(Bucket=bucket, Key=key, Body=value)

    def _open(self, path: str, mode: str = "rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        return _S3HookFile(self, path, mode, block_size=block_size or "default", cache_options=cache_options)


class _S3HookFile(AbstractBufferedFile):
    """Reads with ranged GETs; writes buffer in memory and PUT once on close (small artifacts: JSON, reports;
    whole files go through :meth:`S3HookFileSystem.put_file`, which uses boto3's multipart transfers)."""

    fs: S3HookFileSystem

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start, end)

    def _upload_chunk(self, final: bool = False) -> bool:
        if not final:
            return False  # keep buffering; one PUT on close
        self.fs.pipe_file(self.path, self.buffer.getvalue())
        return True
