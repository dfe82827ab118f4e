"""shared.jobs on SQLite and PostgreSQL, with a real Redis (broker and cancel flag)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery import Celery

from stylequeue.shared.celery_app import create_celery
from stylequeue.shared.db import get_sessionmaker, session_scope
from stylequeue.shared.jobs import (
    DEFAULT_PER_PAGE,
    MAX_PAGE,
    MAX_PER_PAGE,
    CancelOutcome,
    EnqueueFailed,
    JobNotCommitted,
    count_active_jobs,
    enqueue_job,
    get_owned_job,
    owned_jobs_page,
    request_cancel,
)
from stylequeue.shared.models import Job, new_id
from stylequeue.shared.progress import ProgressStream, cancel_key
from stylequeue.shared.redis_keys import stream_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.sweeper import pending_job_ids
from tests.factories import get_job, insert_job
from tests.services import free_port

ALICE = "api:alice"
BOB = "api:bob"


def insert(settings: Settings, owner: str = ALICE, **values: Any) -> str:
    return insert_job(settings, owner, params={"iterations": 5}, **values)


row = get_job


def columns(job: Job) -> dict[str, Any]:
    return {c.key: getattr(job, c.key) for c in Job.__table__.columns}


@pytest.fixture
def celery_app(settings: Settings, celery_of: Callable[[Settings], Celery]) -> Celery:
    return celery_of(settings)


@pytest.fixture
def broker(settings: Settings, redis_of: Callable[[Settings], redis.Redis]) -> redis.Redis:
    return redis_of(settings)


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


# ---- who sees a job -----------------------------------------------------------------------


def test_owned_job_is_found_only_by_its_owner(settings: Settings) -> None:
    job_id = insert(settings)
    with session_scope(settings.database_url) as session:
        found = get_owned_job(session, job_id, ALICE)
        assert found is not None and found.id == job_id
        assert get_owned_job(session, job_id.upper(), ALICE) is not None  # the same UUID
        assert get_owned_job(session, f"{{{job_id}}}", ALICE) is not None
        assert get_owned_job(session, job_id, BOB) is None  # someone else's: as if unknown
        assert get_owned_job(session, job_id, None) is None  # a caller without an owner id
        assert get_owned_job(session, new_id(), ALICE) is None
        for malformed in ("", "not-a-uuid", "1", "../etc", job_id[:-1], f"{job_id}\n"):
            assert get_owned_job(session, malformed, ALICE) is None, malformed
        locked = get_owned_job(session, job_id, ALICE, for_update=True)
        assert locked is not None and locked.id == job_id


def test_owned_jobs_page_is_newest_first(settings: Settings) -> None:
    now = utcnow()
    ids = [insert(settings, created_at=now - timedelta(minutes=i)) for i in range(5)]
    same_time = sorted(insert(settings, created_at=now - timedelta(hours=1)) for _ in range(2))
    insert(settings, owner=BOB)
    with session_scope(settings.database_url) as session:
        first = owned_jobs_page(session, ALICE, 1, 3)
        assert [j.id for j in first.jobs] == ids[:3]
        assert (first.total, first.has_prev, first.has_next) == (7, False, True)
        last = owned_jobs_page(session, ALICE, 3, 3)
        assert [j.id for j in last.jobs] == same_time[:1]  # ties: id descending, stable
        assert (last.has_prev, last.has_next) == (True, False)
        middle = owned_jobs_page(session, ALICE, 2, 3)
        assert [j.id for j in middle.jobs] == ids[3:] + same_time[1:]
        beyond = owned_jobs_page(session, ALICE, 9, 3)
        assert beyond.jobs == [] and beyond.total == 7 and not beyond.has_next
        nobody = owned_jobs_page(session, None, 1, DEFAULT_PER_PAGE)
        assert nobody.jobs == [] and nobody.total == 0
        assert owned_jobs_page(session, BOB, 1, MAX_PER_PAGE).total == 1


@pytest.mark.parametrize(
    ("page", "per_page"), [(0, 10), (MAX_PAGE + 1, 10), (1, 0), (1, MAX_PER_PAGE + 1)]
)
def test_owned_jobs_page_refuses_out_of_range(settings: Settings, page: int, per_page: int) -> None:
    with session_scope(settings.database_url) as session, pytest.raises(ValueError):
        owned_jobs_page(session, ALICE, page, per_page)


def test_paging_bounds() -> None:
    assert 1 <= DEFAULT_PER_PAGE <= MAX_PER_PAGE


# ---- enqueue ------------------------------------------------------------------------------


def test_enqueue_sends_then_stamps(settings: Settings, celery_app: Celery, broker: Any) -> None:
    job_id = insert(settings)
    stamp = enqueue_job(get_sessionmaker(settings.database_url), celery_app, job_id)
    assert stamp is not None
    assert pending_job_ids(broker) == {job_id}
    after = row(settings, job_id)
    assert after.status == "queued" and after.enqueued_at == stamp


def test_enqueue_refuses_an_uncommitted_row(
    settings: Settings, celery_app: Celery, broker: Any
) -> None:
    """The row is read in a session of its own: one still in the caller's open transaction is
    not there yet, and nothing is sent."""
    sessions = get_sessionmaker(settings.database_url)
    job_id = new_id()
    with sessions() as session:
        session.add(Job(id=job_id, owner=ALICE, status="queued", params={}, input_keys={},
                        iterations_total=5, created_at=utcnow()))  # fmt: skip
        session.flush()  # written in this transaction, not committed
        with pytest.raises(JobNotCommitted):
            enqueue_job(sessions, celery_app, job_id)
        session.rollback()
    assert pending_job_ids(broker) == set()


@pytest.mark.parametrize("status", ["running", "succeeded", "failed", "canceled"])
def test_enqueue_sends_only_queued_rows(
    settings: Settings, celery_app: Celery, broker: Any, status: str
) -> None:
    job_id = insert(settings, status=status)
    before = columns(row(settings, job_id))
    assert enqueue_job(get_sessionmaker(settings.database_url), celery_app, job_id) is None
    assert pending_job_ids(broker) == set()
    assert columns(row(settings, job_id)) == before


def test_enqueue_with_the_broker_down_leaves_the_row(settings: Settings) -> None:
    job_id = insert(settings)
    dead = create_celery(replace(settings, redis_url=dead_redis_url()))
    try:
        with pytest.raises(EnqueueFailed) as failed:
            enqueue_job(get_sessionmaker(settings.database_url), dead, job_id)
    finally:
        dead.close()
    assert failed.value.job_id == job_id and job_id in str(failed.value)
    after = row(settings, job_id)
    assert after.status == "queued" and after.enqueued_at is None  # the sweeper's cue


class FastWorker:
    """The real broker, plus a worker that finishes the job before the sender stamps it."""

    def __init__(self, app: Celery, settings: Settings, status: str) -> None:
        self.app, self.settings, self.status = app, settings, status

    def send_task(self, *args: Any, **kwargs: Any) -> Any:
        sent = self.app.send_task(*args, **kwargs)
        with session_scope(self.settings.database_url) as session:
            job = session.get(Job, kwargs["args"][0])
            assert job is not None
            job.status = self.status
            if self.status in ("succeeded", "failed"):
                job.finished_at = utcnow()
        return sent


@pytest.mark.parametrize(("status", "stamped"), [("running", True), ("succeeded", False)])
def test_stamp_never_touches_a_finished_row(
    settings: Settings, celery_app: Celery, broker: Any, status: str, stamped: bool
) -> None:
    job_id = insert(settings)
    fast = FastWorker(celery_app, settings, status)
    stamp = enqueue_job(get_sessionmaker(settings.database_url), fast, job_id)  # type: ignore[arg-type]
    assert stamp is not None and pending_job_ids(broker) == {job_id}
    after = row(settings, job_id)
    assert after.status == status
    assert after.enqueued_at == (stamp if stamped else None)


# ---- active jobs ----------------------------------------------------------------------


def test_count_active_jobs_counts_queued_and_running_of_the_owner(settings: Settings) -> None:
    for status in ("queued", "running", "succeeded", "failed", "canceled"):
        insert(settings, status=status)
    insert(settings, owner=BOB)
    with session_scope(settings.database_url) as session:
        assert count_active_jobs(session, ALICE) == 2
        assert count_active_jobs(session, BOB) == 1
        assert count_active_jobs(session, "api:nobody") == 0


# ---- cancel -------------------------------------------------------------------------------


@pytest.fixture
def flag(settings: Settings) -> Iterator[ProgressStream]:
    client = redis.Redis.from_url(settings.redis_url)
    yield ProgressStream(client)
    client.close()


def cancel(settings: Settings, job_id: str, owner: str | None, flag: Any) -> Any:
    with get_sessionmaker(settings.database_url)() as session:
        return request_cancel(
            session, job_id, owner, flag, stream_ttl_seconds=settings.progress_ttl_seconds
        )


def flag_set(stream: ProgressStream, job_id: str) -> bool:
    return bool(stream.redis.exists(cancel_key(job_id)))


def test_cancel_queued_job_at_once(settings: Settings, flag: ProgressStream) -> None:
    job_id = insert(settings)
    done = cancel(settings, job_id, ALICE, flag)
    assert done.outcome is CancelOutcome.CANCELED and done.accepted and done.worker_told
    assert done.job is not None and done.job.status == "canceled"
    after = row(settings, job_id)
    assert after.status == "canceled" and after.cancel_requested
    assert after.finished_at is not None
    assert flag_set(flag, job_id)  # a worker taking it right now stops too

    again = cancel(settings, job_id, ALICE, flag)
    assert again.outcome is CancelOutcome.ALREADY_CANCELED and again.accepted
    assert columns(row(settings, job_id)) == columns(after)


def test_cancel_running_job_is_a_request(settings: Settings, flag: ProgressStream) -> None:
    job_id = insert(settings, status="running", started_at=utcnow())
    for _ in range(2):  # idempotent
        done = cancel(settings, job_id, ALICE, flag)
        assert done.outcome is CancelOutcome.REQUESTED and done.accepted
        after = row(settings, job_id)
        assert after.status == "running" and after.cancel_requested
        assert after.finished_at is None
        assert flag_set(flag, job_id)


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_cancel_finished_job_changes_nothing(
    settings: Settings, flag: ProgressStream, status: str
) -> None:
    job_id = insert(settings, status=status, finished_at=utcnow())
    before = columns(row(settings, job_id))
    done = cancel(settings, job_id, ALICE, flag)
    assert done.outcome is CancelOutcome.FINISHED and not done.accepted
    assert done.job is not None and done.job.status == status
    assert columns(row(settings, job_id)) == before
    assert not flag_set(flag, job_id)


@pytest.mark.parametrize("owner", [BOB, None])
def test_cancel_of_someone_elses_job_is_not_found(
    settings: Settings, flag: ProgressStream, owner: str | None
) -> None:
    job_id = insert(settings, status="running", started_at=utcnow())
    before = columns(row(settings, job_id))
    for job_id_given in (job_id, new_id(), "not-a-uuid"):
        done = cancel(settings, job_id_given, owner, flag)
        assert done.outcome is CancelOutcome.NOT_FOUND and done.job is None
    assert columns(row(settings, job_id)) == before
    assert not flag_set(flag, job_id)


def test_cancel_of_a_requeued_job_lets_its_stream_expire(
    settings: Settings, flag: ProgressStream
) -> None:
    """An earlier attempt streamed, the sweeper re-queued the job, then it was canceled while
    queued: no runner ends it, so the cancel sets the stream's expiry itself."""
    job_id = insert(settings, attempts=1)
    flag.append(job_id, {"iteration": 1, "loss": 1.0, "content": 0, "style": 0, "tv": 0,
                         "elapsed": 1})  # fmt: skip
    assert cancel(settings, job_id, ALICE, flag).outcome is CancelOutcome.CANCELED
    assert 0 < flag.redis.ttl(stream_key(job_id)) <= settings.progress_ttl_seconds
    assert 0 < flag.redis.ttl(cancel_key(job_id)) <= settings.progress_ttl_seconds


def test_cancel_of_a_running_job_leaves_its_stream_to_the_runner(
    settings: Settings, flag: ProgressStream
) -> None:
    job_id = insert(settings, status="running", started_at=utcnow(), attempts=1)
    flag.append(job_id, {"iteration": 1, "loss": 1.0, "content": 0, "style": 0, "tv": 0,
                         "elapsed": 1})  # fmt: skip
    assert cancel(settings, job_id, ALICE, flag).outcome is CancelOutcome.REQUESTED
    assert flag.redis.ttl(stream_key(job_id)) == -1  # its runner sets it when it stops


class ExpireFails(ProgressStream):
    def expire(self, job_id: str, seconds: int) -> None:
        raise redis.ConnectionError("Redis went away")


def test_cancel_when_the_expiry_fails_still_cancels(
    settings: Settings, flag: ProgressStream
) -> None:
    job_id = insert(settings)
    done = cancel(settings, job_id, ALICE, ExpireFails(flag.redis))
    assert done.outcome is CancelOutcome.CANCELED and done.worker_told
    assert row(settings, job_id).status == "canceled"


@pytest.mark.parametrize(("status", "outcome"), [("queued", "canceled"), ("running", "requested")])
def test_cancel_without_redis_is_recorded(settings: Settings, status: str, outcome: str) -> None:
    job_id = insert(settings, status=status)
    down = redis.Redis.from_url(dead_redis_url(), socket_connect_timeout=1)
    try:
        done = cancel(settings, job_id, ALICE, ProgressStream(down))
    finally:
        down.close()
    assert done.outcome == outcome and done.worker_told is False
    assert row(settings, job_id).cancel_requested  # the database change stands
