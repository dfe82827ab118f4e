"""Object storage behind one small interface: a local folder or S3 (MinIO-compatible).

Keys are ``/``-separated paths such as ``jobs/<id>/inputs/content.png``;
:mod:`stylequeue.shared.keys` says which.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from stylequeue.shared.settings import Settings


class ObjectNotFound(KeyError):
    pass


class Storage(Protocol):
    def put(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str, *, unfinished: bool = False) -> int:
        """Delete the objects under ``prefix``; with ``unfinished`` also what writes that
        never finished left there (a purge: nothing may write there any more)."""
        ...

    def check(self) -> None:
        """Raise if the store cannot be reached (readiness)."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad object key {key!r}")
    return key


def _raise(exc: OSError) -> None:
    """``os.walk``'s error hook: a folder removed meanwhile holds nothing; anything else
    (an unreadable folder) must fail the walk rather than read as empty."""
    if not isinstance(exc, FileNotFoundError):
        raise exc


class FileStorage:
    """Objects as files under ``root``; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except FileNotFoundError:  # a delete_prefix pruned the empty folder in between
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root.joinpath(*[p for p in prefix.split("/") if p])
        if not base.is_dir():
            return []
        found: list[str] = []
        # os.walk raising, not rglob: an unreadable folder must fail the listing, not read
        # as empty (a purge checks that nothing is left by listing it)
        for folder, _dirs, files in os.walk(base, onerror=_raise):
            found.extend(
                Path(folder, name).relative_to(self.root).as_posix()
                for name in files
                if not name.startswith(".tmp-")
            )
        return sorted(found)

    def delete_prefix(self, prefix: str, *, unfinished: bool = False) -> int:
        """Delete the objects under ``prefix`` and the folders left empty, above it too (a
        bucket keeps no folders either). Temporary files of writes under way are kept (not
        objects yet; the write may still finish), unless ``unfinished``: then they go too,
        whoever wrote them."""
        keys = self.list(prefix)
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        self._prune(prefix, unfinished)
        return len(keys)

    def _prune(self, prefix: str, unfinished: bool) -> None:
        base = self.root.joinpath(*[p for p in prefix.split("/") if p])
        if base == self.root or not base.is_dir():
            return
        for folder, _dirs, files in os.walk(base, topdown=False, onerror=_raise):
            for name in files:
                if unfinished and name.startswith(".tmp-"):
                    Path(folder, name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: a write landed meanwhile
                os.rmdir(folder)
        for parent in base.parents:  # and the folders above it that it leaves empty
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:  # not empty (or gone): the folders above are not either
                break

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise OSError(f"storage folder {self.root} is not writable")


class S3Storage:
    """Objects in an S3 bucket (AWS, MinIO, moto), optionally under a key prefix."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3  # the `s3` extra; imported only when S3 is configured
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"},
                connect_timeout=5,  # an unreachable MinIO must not stall /readyz for minutes
                read_timeout=30,
            ),
        )
        self._missing = (self.client.exceptions.NoSuchKey,)

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
        )

    def get(self, key: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            body: bytes = obj["Body"].read()  # boto3 is untyped here (no S3 stubs installed)
            return body
        except self._missing:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete_prefix(self, prefix: str, *, unfinished: bool = False) -> int:
        # single-part puts (all we make) leave nothing half-written: ``unfinished`` adds nothing
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self.prefix + k} for k in keys[start : start + 1000]]
            done = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}
            )
            if failed := done.get("Errors"):  # a bulk delete answers 200 even when keys fail
                first = failed[0]
                raise OSError(
                    f"S3 kept {len(failed)} of {len(chunk)} objects under {prefix!r}, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )
        return len(keys)

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


def storage_from_url(url: str, endpoint_url: str | None = None) -> Storage:
    """``file:///abs/path``, ``file://./relative`` or ``s3://bucket[/prefix]``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        # The rest of the URL as written: urlparse would cut a folder name at '#' or '?',
        # and the default URL is built from STYLEQUEUE_VAR_DIR verbatim.
        rest = url.split(":", 1)[1]
        return FileStorage((rest[2:] if rest.startswith("//") else rest) or ".")
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"STYLEQUEUE_STORAGE_URL {url!r} names no bucket")
        return S3Storage(parsed.netloc, parsed.path, endpoint_url)
    raise ValueError(f"STYLEQUEUE_STORAGE_URL must start with file:// or s3://, got {url!r}")


_cache: dict[tuple[str, str | None], Storage] = {}


def get_storage(settings: Settings) -> Storage:
    """The process's store for these settings (clients are reused)."""
    key = (settings.storage_url, settings.s3_endpoint_url)
    if key not in _cache:
        _cache[key] = storage_from_url(*key)
    return _cache[key]
