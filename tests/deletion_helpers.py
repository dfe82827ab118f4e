"""A job with every kind of object and Redis key, and checks that nothing of it is left:
for the tests of deleting (tests/shared/test_deletion.py, tests/web/test_delete.py, the
integration and browser tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3
import redis

from stylequeue.shared import keys
from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job, JobDeletion
from stylequeue.shared.progress import ProgressStream
from stylequeue.shared.redis_keys import cancel_key, lock_key, stream_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import FileStorage, get_storage
from stylequeue.web.media import thumb_key
from tests.factories import content_image, make_job, png_bytes

OWNER = "api:alice"
ENTRY = {"iteration": 1, "loss": 1.0, "content": 0, "style": 0, "tv": 0, "elapsed": 1}


def full_job(settings: Settings, owner: str = OWNER, **fields: Any) -> Job:
    """A job with every kind of object and key: inputs, two attempts' snapshots, results and
    histories (the row points at attempt 2's, so the API serves them), a checkpoint, a cached
    thumbnail, a half-written temporary file (folder store), its progress stream and its
    cancel flag."""
    job = make_job(settings, owner=owner, **{"attempts": 2, **fields})
    storage = get_storage(settings)
    picture = png_bytes(content_image())
    for attempt in (1, 2):
        storage.put(keys.snapshot_key(job.id, 4, attempt=attempt), picture, "image/png")
        storage.put(keys.result_key(job.id, attempt=attempt), picture, "image/png")
        storage.put(keys.history_key(job.id, attempt=attempt), b'{"entries": []}')
    storage.put(keys.checkpoint_key(job.id, attempt=2, iteration=4), b"checkpoint")
    storage.put(thumb_key(job.id, "content", 160), b"thumb")
    if isinstance(storage, FileStorage):  # what a process killed mid-write leaves
        (storage.root / "jobs" / job.id / "attempts" / "2" / ".tmp-killed").write_bytes(b"x")
    with session_scope(settings.database_url) as session:
        row = session.get(Job, job.id)
        assert row is not None
        row.result_key = keys.result_key(job.id, attempt=2)
        row.history_key = keys.history_key(job.id, attempt=2)
        row.snapshot_iterations = [4]
    client = redis.Redis.from_url(settings.redis_url)
    ProgressStream(client).append(job.id, ENTRY)
    ProgressStream(client).request_cancel(job.id)
    client.close()
    return job


def everything(settings: Settings) -> list[str]:
    """Every object in the store, listed by the backend's own means (not our Storage)."""
    if settings.storage_url.startswith("s3://"):
        bucket = settings.storage_url.removeprefix("s3://")
        s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))
    root = Path(settings.storage_url.removeprefix("file://"))
    return sorted(
        str(Path(folder, name).relative_to(root))
        for folder, _dirs, files in os.walk(root)
        for name in files
    )


def assert_nothing_left(settings: Settings, job_id: str) -> None:
    assert [key for key in everything(settings) if job_id in key] == []
    if settings.storage_url.startswith("file://"):  # no empty folders either
        assert not (Path(settings.storage_url.removeprefix("file://")) / "jobs" / job_id).exists()
    client = redis.Redis.from_url(settings.redis_url)
    assert not client.exists(stream_key(job_id), cancel_key(job_id), lock_key(job_id))
    client.close()
    with session_scope(settings.database_url) as session:
        assert session.get(Job, job_id) is None
        assert session.get(JobDeletion, job_id) is None
