"""A job deleted while its runner has it, driven in-process (real engine, Redis, database and
folder storage): the runner stores nothing more of it, purges everything the job had (every
attempt's prefix, its checkpoints, inputs, stream, cancel flag) and ends cleanly.

The delete is done as the web does it (shared.deletion + the cancel flag), from inside the
engine's iteration callback, so it lands mid-run at a known iteration. The real worker
process is tested in tests/integration/test_delete.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from stylequeue.shared import keys
from stylequeue.shared.db import get_sessionmaker, session_scope
from stylequeue.shared.deletion import PurgeResult, delete_owned_job, purge
from stylequeue.shared.locks import lock_key
from stylequeue.shared.models import Job, JobDeletion
from stylequeue.shared.progress import ProgressStream
from stylequeue.shared.redis_keys import cancel_key, stream_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import get_storage
from stylequeue.worker import runner
from tests.factories import make_job

WORKER = "test@host/1"
OWNER = "api:alice"


@pytest.fixture
def client(wsettings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(wsettings.redis_url)
    yield client
    client.close()


def files_of(settings: Settings, job_id: str) -> list[str]:
    """Every file of the job on disk, temporary ones and all (not through Storage.list)."""
    root = Path(settings.storage_url.removeprefix("file://"), "jobs", job_id)
    return sorted(str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs)


def assert_purged(settings: Settings, client: redis.Redis, job_id: str) -> None:
    assert files_of(settings, job_id) == []
    assert not Path(settings.storage_url.removeprefix("file://"), "jobs", job_id).exists()
    assert not client.exists(stream_key(job_id), cancel_key(job_id), lock_key(job_id))
    with session_scope(settings.database_url) as session:
        assert session.get(Job, job_id) is None and session.get(JobDeletion, job_id) is None


def delete_as_the_web_does(settings: Settings, client: redis.Redis, job_id: str) -> None:
    with get_sessionmaker(settings.database_url)() as session:
        assert delete_owned_job(session, job_id, OWNER) is not None
    ProgressStream(client).request_cancel(job_id)


def earlier_attempt(settings: Settings, job_id: str) -> None:
    """What a dead first runner left: its snapshot, history and a checkpoint."""
    storage = get_storage(settings)
    storage.put(keys.snapshot_key(job_id, 2, attempt=1), b"snapshot")
    storage.put(keys.history_key(job_id, attempt=1), b"{}")
    storage.put(keys.checkpoint_key(job_id, attempt=1, iteration=2), b"not a valid one")


@pytest.fixture
def puts(wsettings: Settings, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key the store is asked to write, in order."""
    storage = get_storage(wsettings)
    written: list[str] = []
    real = storage.put

    def put(key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        written.append(key)
        real(key, data, content_type)

    monkeypatch.setattr(storage, "put", put)
    return written


def delete_at(
    monkeypatch: pytest.MonkeyPatch, iteration: int, action: Any, seen: dict[str, Any]
) -> None:
    """Run ``action()`` right after the engine reports ``iteration`` (inside its callback)."""
    from stylequeue.worker import engine

    real = engine.transfer

    def transfer(*args: Any, on_iteration: Any, **kwargs: Any) -> Any:
        def hook(report: Any) -> None:
            on_iteration(report)
            if report.iteration == iteration:
                seen["result"] = action()

        return real(*args, on_iteration=hook, **kwargs)

    monkeypatch.setattr(engine, "transfer", transfer)


def test_deleted_mid_run_the_runner_stores_nothing_more_and_leaves_nothing(
    wsettings: Settings, client: redis.Redis, puts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = replace(wsettings, lock_ttl_seconds=60)
    # a checkpoint of this attempt at iteration 3, before the delete at 4
    monkeypatch.setattr(runner._Checkpointer, "due", lambda self, it: it == 3)
    job = make_job(settings, owner=OWNER, attempts=1, params={"iterations": 40,
                                                               "snapshot_every": 1})  # fmt: skip
    earlier_attempt(settings, job.id)
    seen: dict[str, Any] = {}

    def delete() -> Any:
        before = len(puts)
        delete_as_the_web_does(settings, client, job.id)
        # the web's purge right after: the runner holds the lock, so it waits for the runner
        result = purge(
            get_sessionmaker(settings.database_url), get_storage(settings), client, job.id,
            lock_ttl_seconds=settings.lock_ttl_seconds,
        )  # fmt: skip
        return before, result, files_of(settings, job.id)

    delete_at(monkeypatch, 4, delete, seen)
    outcome = runner.execute(job.id, settings, worker_name=WORKER)

    before, result, files_then = seen["result"]
    assert result is PurgeResult.BUSY
    # by then: the inputs, attempt 1's files, this attempt's checkpoint and the snapshots
    # it waited for (the snapshot writer stores later ones off the loop thread)
    assert keys.checkpoint_key(job.id, attempt=2, iteration=3).split(f"{job.id}/")[1] in files_then
    assert "attempts/2/snapshots/000003.png" in files_then
    # after the delete: no result, history or checkpoint; at most snapshots handed to the
    # writer before the runner read the flag (purged with the rest, below)
    after = [key.split(f"{job.id}/")[1] for key in puts[before:]]
    assert all(key.startswith("attempts/2/snapshots/") for key in after), after
    assert (outcome.action, outcome.status) == ("deleted", None)
    assert 4 <= outcome.iterations < 40  # stopped by the flag (within ~0.1 s)
    assert_purged(settings, client, job.id)


def test_a_runner_presumed_dead_whose_job_was_deleted_purges_it(
    wsettings: Settings, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its lock had lapsed (no flag read: its stream writes are refused) when the job was
    deleted and the purge found the lock free and ran; the runner's own files of after the
    purge go with its ending."""
    settings = replace(wsettings, lock_ttl_seconds=600)  # our renewer does not look in time
    job = make_job(settings, owner=OWNER, params={"iterations": 40, "snapshot_every": 1})
    seen: dict[str, Any] = {}

    def lapse_and_delete() -> None:
        client.delete(lock_key(job.id))
        with get_sessionmaker(settings.database_url)() as session:
            delete_owned_job(session, job.id, OWNER)
        # the web's purge: finds the lock free and takes everything there is now
        result = purge(
            get_sessionmaker(settings.database_url), get_storage(settings), client, job.id,
            lock_ttl_seconds=settings.lock_ttl_seconds,
        )  # fmt: skip
        assert result is PurgeResult.PURGED
        # what the presumed-dead runner writes on (a snapshot in flight, say) lands after
        get_storage(settings).put(keys.snapshot_key(job.id, 3, attempt=1), b"late")

    delete_at(monkeypatch, 3, lapse_and_delete, seen)
    outcome = runner.execute(job.id, settings, worker_name=WORKER)
    assert outcome.action == "deleted"
    assert_purged(settings, client, job.id)


def test_deleted_while_its_runner_was_starting(
    wsettings: Settings, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner read the row, took the lock, and the row went before it marked it
    running: it runs nothing and, holding the lock, purges the job at once."""
    job = make_job(wsettings, owner=OWNER, attempts=1)
    earlier_attempt(wsettings, job.id)
    real = runner._Attempt._find_checkpoint

    def deleted_meanwhile(self: Any) -> Any:
        delete_as_the_web_does(wsettings, client, job.id)
        return real(self)

    monkeypatch.setattr(runner._Attempt, "_find_checkpoint", deleted_meanwhile)
    outcome = runner.execute(job.id, wsettings, worker_name=WORKER)
    assert (outcome.action, outcome.iterations) == ("missing", 0)
    assert_purged(wsettings, client, job.id)


def test_a_message_for_a_deleted_job_writes_nothing(
    wsettings: Settings, client: redis.Redis, puts: list[str]
) -> None:
    """The queued job's message was still in the broker when it was deleted (and purged):
    the worker that takes it drops it without a write."""
    job = make_job(wsettings, owner=OWNER)
    delete_as_the_web_does(wsettings, client, job.id)
    puts.clear()  # the inputs make_job stored
    outcome = runner.execute(job.id, wsettings, worker_name=WORKER)
    assert outcome.action == "missing"
    assert puts == [] and client.keys("*") == [cancel_key(job.id).encode()]  # the web's flag
