"""Deleting over HTTP with a real worker running the job: the worker stops, writes nothing
more, and nothing of the job is left: no object (inputs, every attempt's snapshots,
checkpoints), no Redis key, no row. On a folder (SQLite and PostgreSQL) and on moto's S3,
whose bucket is listed afterwards; and ``stylequeue delete`` as a user runs it.

Workers checkpoint every second here, so the deleted job has checkpoints to lose.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import requests

from stylequeue.shared import keys
from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job, JobDeletion
from stylequeue.shared.redis_keys import cancel_key, lock_key, stream_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import get_storage
from tests import services
from tests.integration.conftest import (
    TOKENS,
    Stack,
    build_settings,
    start_stack,
    submit_ok,
    token_session,
    wait_for_job,
    wait_until_finished,
)
from tests.integration.test_submit_cli import described, stylequeue
from tests.services import wait_for

LONG = {"iterations": 5000, "max_size": 48, "snapshot_every": 5}


@pytest.fixture(scope="module")
def stack(
    stack_db_url: str, module_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The module's stack (a folder for objects), its worker checkpointing every second."""
    client = redis.Redis.from_url(module_redis)
    client.flushdb()
    client.close()
    settings = build_settings(
        tmp_path_factory.mktemp("var"), stack_db_url, module_redis, checkpoint_seconds=1
    )
    yield from start_stack(settings, tmp_path_factory.mktemp("logs"))


@pytest.fixture
def s3_stack(
    database_url: str, s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> Iterator[Stack]:
    """A stack of its own whose objects live in a bucket of moto's S3 server (``s3_bucket``
    put the AWS settings in the environment the worker inherits)."""
    assert os.environ["STYLEQUEUE_S3_ENDPOINT_URL"] == s3_endpoint
    with services.private_redis(tmp_path / "redis") as (redis_url, _proc):
        settings = build_settings(
            tmp_path / "var", database_url, redis_url, storage_url=f"s3://{s3_bucket}",
            s3_endpoint_url=s3_endpoint, checkpoint_seconds=1,
        )  # fmt: skip
        yield from start_stack(settings, tmp_path / "logs")


def everything(settings: Settings) -> list[str]:
    """Every object in the store, listed by the backend's own means."""
    if settings.storage_url.startswith("s3://"):
        s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url)
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=settings.storage_url.removeprefix("s3://")
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))
    root = Path(settings.storage_url.removeprefix("file://"))
    return sorted(str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs)


def of_job(settings: Settings, job_id: str) -> list[str]:
    return [key for key in everything(settings) if job_id in key]


def delete_while_running(stack: Stack, session: requests.Session) -> dict[str, Any]:
    """Submit a long job, let it checkpoint, delete it; checks the API's answers."""
    job = submit_ok(stack, session, **LONG)
    wait_for_job(stack, session, job["id"], lambda j: j["iterations_done"] >= 10, "10 iterations")
    checkpoints = keys.checkpoint_prefix(job["id"])
    wait_for(lambda: get_storage(stack.settings).list(checkpoints), timeout=120,
             what="a checkpoint of the running job")  # fmt: skip
    stored = of_job(stack.settings, job["id"])
    assert any("/snapshots/" in key for key in stored) and any("checkpoints" in k for k in stored)

    deleted = session.delete(stack.api(f"/jobs/{job['id']}"), timeout=30)
    assert deleted.status_code == 204, deleted.text
    for link in ("self", "progress", "result", "snapshots", "content", "thumbnail"):
        url = job["links"][link]
        assert session.get(stack.url + url, timeout=30).status_code == 404, link
    assert session.get(stack.url + job["links"]["dashboard"], timeout=30).status_code == 404
    return job


def assert_gone(stack: Stack, job_id: str) -> None:
    """The worker has stopped the job and purged it: nothing of it anywhere."""
    wait_for(lambda: f"job {job_id}: deleted while running" in stack.worker.log_text(),
             timeout=120, what="the worker stopping the deleted job")  # fmt: skip
    client = stack.redis()
    wait_for(lambda: not client.exists(lock_key(job_id)), timeout=60, what="its lock released")
    assert of_job(stack.settings, job_id) == []
    assert not client.exists(stream_key(job_id), cancel_key(job_id))
    client.close()
    with session_scope(stack.settings.database_url) as session:
        assert session.get(Job, job_id) is None and session.get(JobDeletion, job_id) is None
    log = stack.worker.log_text()
    assert f"job {job_id}: purged" in log
    assert "Traceback" not in log and f"job {job_id} failed" not in log


def test_a_job_deleted_while_running_leaves_nothing(stack: Stack) -> None:
    session = token_session("alice")
    job = delete_while_running(stack, session)
    assert_gone(stack, job["id"])
    if stack.settings.storage_url.startswith("file://"):  # nor an empty folder
        root = Path(stack.settings.storage_url.removeprefix("file://"))
        assert not (root / "jobs" / job["id"]).exists()
    # the worker ended the attempt cleanly and takes the next job
    nxt = submit_ok(stack, session, iterations=4, max_size=32)
    assert wait_until_finished(stack, session, nxt["id"])["status"] == "succeeded"


def test_on_s3_the_bucket_keeps_nothing_of_a_job_deleted_while_running(s3_stack: Stack) -> None:
    session = token_session("bob")
    keep = submit_ok(s3_stack, session, iterations=4, max_size=32)
    assert wait_until_finished(s3_stack, session, keep["id"])["status"] == "succeeded"
    kept = of_job(s3_stack.settings, keep["id"])
    job = delete_while_running(s3_stack, session)
    assert_gone(s3_stack, job["id"])
    assert of_job(s3_stack.settings, keep["id"]) == kept  # the job beside it untouched
    assert everything(s3_stack.settings) == kept  # the bucket (the test's own) holds no more


def test_the_delete_command(stack: Stack) -> None:
    session = token_session("alice")
    job = submit_ok(stack, session, iterations=4, max_size=32)
    assert wait_until_finished(stack, session, job["id"])["status"] == "succeeded"
    assert of_job(stack.settings, job["id"])
    as_bob = stylequeue("delete", job["id"], "--server", stack.url, "--token", TOKENS["bob"])
    assert as_bob.returncode == 1, described(as_bob)
    assert "no such job for this token" in as_bob.stderr
    proc = stylequeue("delete", job["id"], "--server", stack.url, "--token", TOKENS["alice"])
    assert proc.returncode == 0, described(proc)
    assert proc.stdout == f"deleted {job['id']}\n"
    assert session.get(stack.api(f"/jobs/{job['id']}"), timeout=30).status_code == 404
    assert of_job(stack.settings, job["id"]) == []
