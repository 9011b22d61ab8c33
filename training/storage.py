"""Byte stores for checkpoints: a local directory or an S3 (or S3-compatible) prefix.

Both make a completed ``put`` all-or-nothing: locally by writing a temp file, fsyncing and renaming it;
on S3 because an object only becomes visible once its upload (single or multipart) completes.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any, Protocol


class ObjectMissing(KeyError):
    """The named object does not exist in the store."""


def check_name(name: str) -> str:
    """Refuse an object name that would leave the store's directory or prefix (``/``, ``..``, empty)."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"object name {name!r} is not a plain name inside the store's prefix")
    return name


class ByteStore(Protocol):
    """A flat namespace of named byte blobs."""

    uri: str

    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` atomically (readers see the old object, or the whole new one)."""

    def get(self, name: str) -> bytes:
        """Read ``name``; raise :class:`ObjectMissing` if it does not exist."""

    def list(self) -> list[str]:
        """Names of the complete objects in the store."""

    def delete(self, name: str) -> None:
        """Delete ``name``; a missing object is not an error."""


class LocalStore:
    """A directory on the local (or a mounted) file system."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.uri = str(self.directory)

    def put(self, name: str, data: bytes) -> None:
        """Write to a hidden temp file, fsync it, rename it into place, then fsync the directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / check_name(name)
        temp = self.directory / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        # The rename is only durable once the directory entry is on disk.
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, name: str) -> bytes:
        """Read the whole file."""
        try:
            return (self.directory / check_name(name)).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(name) from None

    def list(self) -> list[str]:
        """Files in the directory, without temp files (leftovers of a killed writer)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_file() and not p.name.startswith("."))

    def delete(self, name: str) -> None:
        """Remove the file if it exists."""
        (self.directory / check_name(name)).unlink(missing_ok=True)

    def remove_stale_temp_files(self) -> None:
        """Delete temp files left by a writer that was killed mid-write."""
        if self.directory.is_dir():
            for path in self.directory.glob(".*.tmp"):
                path.unlink(missing_ok=True)


class S3Store:
    """Objects under ``s3://bucket/prefix/``, through boto3 (endpoint overridable for MinIO and friends)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        # endpoint_url=None lets boto3 apply AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL itself.
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, name: str, data: bytes) -> None:
        """Upload (multipart above boto3's threshold); the object appears only when complete."""
        self._client.upload_fileobj(io.BytesIO(data), self.bucket, self._key(name))

    def get(self, name: str) -> bytes:
        """Download the whole object."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(name))
        except self._client.exceptions.NoSuchKey:
            raise ObjectMissing(name) from None
        body: bytes = response["Body"].read()
        return body

    def list(self) -> list[str]:
        """Object names directly under the prefix."""
        start = f"{self.prefix}/" if self.prefix else ""
        names = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                name = item["Key"][len(start) :]
                if name and "/" not in name:
                    names.append(name)
        return sorted(names)

    def delete(self, name: str) -> None:
        """Delete the object (S3 deletes are idempotent)."""
        self._client.delete_object(Bucket=self.bucket, Key=self._key(name))


def open_store(uri: str, endpoint_url: str | None = None) -> LocalStore | S3Store:
    """The store for a checkpoint URI: ``s3://bucket/prefix`` or a local directory."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        return S3Store(bucket, prefix, endpoint_url)
    return LocalStore(uri)
