"""Deleting a job (shared/deletion.py): the row goes at once, then everything else of the job,
retried by the sweeper until nothing is left.

Real parts: SQLite and PostgreSQL, Redis, a local folder and moto's S3 server. Each test
lists the whole store afterwards: nothing of the deleted job may be left, and nothing of
the job beside it may be missing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from stylequeue.shared import keys
from stylequeue.shared.celery_app import create_celery
from stylequeue.shared.db import get_sessionmaker, session_scope
from stylequeue.shared.deletion import (
    PurgeResult,
    RemovalReason,
    count_pending,
    delete_owned_job,
    purge,
)
from stylequeue.shared.locks import JobLock
from stylequeue.shared.models import Job, JobDeletion, RemovedJobTotals
from stylequeue.shared.redis_keys import cancel_key, stream_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import get_storage
from stylequeue.shared.sweeper import sweep
from tests.deletion_helpers import OWNER, assert_nothing_left, everything, full_job
from tests.factories import make_job
from tests.services import free_port


def tombstone(settings: Settings, job_id: str) -> JobDeletion | None:
    with session_scope(settings.database_url) as session:
        item = session.get(JobDeletion, job_id)
        if item is not None:
            session.expunge(item)
        return item


def run_purge(settings: Settings, job_id: str) -> PurgeResult:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return purge(
            get_sessionmaker(settings.database_url), get_storage(settings), client, job_id,
            lock_ttl_seconds=settings.lock_ttl_seconds,
        )  # fmt: skip
    finally:
        client.close()


def delete(settings: Settings, job_id: str, owner: str = OWNER) -> Any:
    with get_sessionmaker(settings.database_url)() as session:
        return delete_owned_job(session, job_id, owner)


@pytest.fixture(params=["folder", "s3"])
def store_settings(
    request: pytest.FixtureRequest, settings: Settings, s3_endpoint: str
) -> Settings:
    """The test's settings on a local folder, or on a fresh bucket of moto's S3 server."""
    if request.param == "folder":
        return settings
    bucket = request.getfixturevalue("s3_bucket")
    return replace(settings, storage_url=f"s3://{bucket}", s3_endpoint_url=s3_endpoint)


@pytest.fixture
def celery_app(settings: Settings) -> Iterator[Any]:
    app = create_celery(settings)
    yield app
    app.close()


# ---- deleting --------------------------------------------------------------------------------


def test_the_row_goes_at_once_and_the_purge_takes_the_rest(store_settings: Settings) -> None:
    settings = store_settings
    job = full_job(settings, status="succeeded", iterations_done=8)
    other = full_job(settings, status="succeeded")  # the job beside it: untouched
    others_objects = [key for key in everything(settings) if other.id in key]

    removed = delete(settings, job.id)
    assert (removed.job_id, removed.owner, removed.was_active) == (job.id, OWNER, False)
    with session_scope(settings.database_url) as session:
        assert session.get(Job, job.id) is None  # gone for everyone at once
    item = tombstone(settings, job.id)
    assert item is not None and (item.reason, item.owner, item.tries) == ("deleted", OWNER, 0)
    assert any(job.id in key for key in everything(settings))  # the purge has not run yet

    assert run_purge(settings, job.id) is PurgeResult.PURGED
    assert_nothing_left(settings, job.id)
    assert [key for key in everything(settings) if other.id in key] == others_objects
    client = redis.Redis.from_url(settings.redis_url)
    assert client.exists(stream_key(other.id), cancel_key(other.id)) == 2
    client.close()


def test_someone_elses_job_or_none_changes_nothing(settings: Settings) -> None:
    job = full_job(settings)
    before = everything(settings)
    for job_id, owner in ((job.id, "api:bob"), (job.id, None), ("not-a-uuid", OWNER),
                          ("00000000-0000-4000-8000-000000000000", OWNER)):  # fmt: skip
        assert delete(settings, job_id, owner) is None
    with session_scope(settings.database_url) as session:
        assert session.get(Job, job.id) is not None
        assert session.scalars(select(JobDeletion)).all() == []
        assert session.scalars(select(RemovedJobTotals)).all() == []
    assert everything(settings) == before


def test_the_totals_keep_what_removed_jobs_counted(settings: Settings) -> None:
    """/metrics sums attempts, crashes and preemptions over the rows: removed rows' figures
    go into the totals, per reason."""
    a = make_job(
        settings, owner=OWNER, status="failed", attempts=3, preemptions=1, checkpoints=5,
        resumes=2,
    )  # fmt: skip
    b = make_job(settings, owner=OWNER, status="running", attempts=4, checkpoints=1)
    delete(settings, a.id)
    delete(settings, b.id)
    with session_scope(settings.database_url) as session:
        totals = session.get(RemovedJobTotals, RemovalReason.DELETED.value)
        assert totals is not None
        # crashes: (3 - 1 - 1) + (4 - 1 - 0)
        assert (totals.jobs, totals.attempts, totals.crashes, totals.preemptions) == (2, 7, 4, 1)
        assert (totals.checkpoints, totals.resumes) == (6, 2)
        assert session.get(RemovedJobTotals, RemovalReason.EXPIRED.value) is None


def test_a_runner_holding_the_lock_keeps_the_files_until_it_lets_go(settings: Settings) -> None:
    """While a runner holds the job's lock it may still write: the purge leaves everything
    (the runner purges when it stops; here it died instead, and the sweeper does it once its
    lock has gone)."""
    job = full_job(settings, status="running")
    client = redis.Redis.from_url(settings.redis_url)
    lock = JobLock(client, job.id, ttl_seconds=30)
    assert lock.acquire()
    assert delete(settings, job.id).was_active
    before = [key for key in everything(settings) if job.id in key]
    assert run_purge(settings, job.id) is PurgeResult.BUSY
    assert [key for key in everything(settings) if job.id in key] == before
    assert client.exists(stream_key(job.id)) and tombstone(settings, job.id) is not None
    lock.release()
    client.close()
    assert run_purge(settings, job.id) is PurgeResult.PURGED
    assert_nothing_left(settings, job.id)


# ---- failing halfway, retried until nothing is left -------------------------------------------


def test_an_object_that_lands_during_the_purge_keeps_the_item(
    store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete went through without an error, yet the prefix still lists an object (a
    write that landed meanwhile, a key a bulk delete skipped): the purge checks by listing
    again, so the to-do item stays and the next purge takes it."""
    settings = store_settings
    job = full_job(settings, status="succeeded")
    storage = get_storage(settings)
    real = storage.delete_prefix
    late = keys.snapshot_key(job.id, 8, attempt=2)

    def delete_then_a_late_write(prefix: str, *, unfinished: bool = False) -> int:
        count = real(prefix, unfinished=unfinished)
        if not storage.exists(late) and count > 1:  # once, after the first whole delete
            storage.put(late, b"late")
        return count

    monkeypatch.setattr(storage, "delete_prefix", delete_then_a_late_write)
    delete(settings, job.id)
    assert run_purge(settings, job.id) is PurgeResult.FAILED
    assert [key for key in everything(settings) if job.id in key] == [late]
    item = tombstone(settings, job.id)
    assert item is not None and "PurgeIncomplete" in (item.last_error or "")
    assert run_purge(settings, job.id) is PurgeResult.PURGED
    assert_nothing_left(settings, job.id)


@contextmanager
def frozen(folder: Path) -> Iterator[None]:
    """Nothing in ``folder`` can be removed or added: read-only for a user; for root (whom
    modes do not stop) the immutable attribute."""
    root = os.geteuid() == 0
    if root:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError):  # the freeze holds, or the test means nothing
            (folder / "probe").write_bytes(b"")
        yield
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def test_a_purge_that_fails_halfway_is_retried_until_nothing_is_left(
    settings: Settings, celery_app: Any
) -> None:
    """The folder store: one attempt's snapshot folder cannot be emptied. The first purge
    removes what sorts before it and fails there; the item stays with the error; the sweeper
    retries each pass; once the folder can be written to again, nothing is left."""
    job = full_job(settings, status="succeeded")
    root = Path(settings.storage_url.removeprefix("file://"))
    snapshots = root / "jobs" / job.id / "attempts" / "1" / "snapshots"
    delete(settings, job.id)
    with frozen(snapshots):
        assert run_purge(settings, job.id) is PurgeResult.FAILED
        left = [key for key in everything(settings) if job.id in key]
        assert keys.snapshot_key(job.id, 4, attempt=1) in left  # where it stopped
        assert keys.history_key(job.id, attempt=1) not in left  # halfway: this went
        item = tombstone(settings, job.id)
        assert item is not None and item.tries == 1
        assert item.last_error and "PermissionError" in item.last_error

        report = sweep(settings, celery_app)  # retried, and failing again
        assert (report.purged, report.purge_pending) == (0, 1)
        assert any(job.id in error for error in report.errors)
        item = tombstone(settings, job.id)
        assert item is not None and item.tries == 2
    report = sweep(settings, celery_app)
    assert (report.purged, report.purge_pending, report.errors) == (1, 0, [])
    assert_nothing_left(settings, job.id)


def test_s3_down_is_retried_until_nothing_is_left(
    settings: Settings, s3_bucket: str, s3_endpoint: str, celery_app: Any
) -> None:
    """S3 unreachable (connection refused: what a stopped server looks like to the client)
    while the job is deleted and on the sweeper's next pass; back up, the pass after purges
    it. Redis was reachable: the stream went at the first try."""
    up = replace(settings, storage_url=f"s3://{s3_bucket}", s3_endpoint_url=s3_endpoint)
    down = replace(up, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    job = full_job(up, status="canceled")
    stored = [key for key in everything(up) if job.id in key]
    assert len(stored) == 10  # 2 inputs, 2 x 3 attempt files, a checkpoint, a thumbnail

    delete(up, job.id)
    assert run_purge(down, job.id) is PurgeResult.FAILED
    report = sweep(down, celery_app)
    assert (report.purged, report.purge_pending) == (0, 1)
    item = tombstone(up, job.id)
    assert item is not None and item.tries == 2 and "Connect" in (item.last_error or "")
    assert [key for key in everything(up) if job.id in key] == stored  # all still there
    client = redis.Redis.from_url(up.redis_url)
    assert not client.exists(stream_key(job.id))  # Redis was up: that part is done
    client.close()

    report = sweep(up, celery_app)
    assert (report.purged, report.purge_pending, report.errors) == (1, 0, [])
    assert_nothing_left(up, job.id)
    assert count_pending(get_sessionmaker(up.database_url)) == 0


def test_a_pass_stops_after_a_few_failures_and_tries_the_least_failed_first(
    settings: Settings, s3_bucket: str, s3_endpoint: str, celery_app: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Storage down with many items: a pass gives up after PURGE_FAILURES, not after waiting
    out every item; the next pass starts with those not tried yet."""
    from stylequeue.shared import sweeper

    up = replace(settings, storage_url=f"s3://{s3_bucket}", s3_endpoint_url=s3_endpoint)
    down = replace(up, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(sweeper, "PURGE_FAILURES", 2)
    jobs = [make_job(up, owner=OWNER, status="succeeded") for _ in range(5)]
    for job in jobs:
        delete(up, job.id)

    def tried() -> list[int]:
        return sorted(t.tries for t in [tombstone(up, j.id) for j in jobs] if t is not None)

    sweep(down, celery_app)
    assert tried() == [0, 0, 0, 1, 1]
    sweep(down, celery_app)
    assert tried() == [0, 1, 1, 1, 1]
    report = sweep(up, celery_app)
    assert (report.purged, report.purge_pending) == (5, 0)
    for job in jobs:
        assert_nothing_left(up, job.id)
