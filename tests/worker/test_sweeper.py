"""The sweeper against a real Redis broker and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis

from stylequeue.shared.celery_app import create_celery
from stylequeue.shared.locks import JobLock, lock_key
from stylequeue.shared.scheduling import AGE_AFTER_SECONDS, INTERACTIVE, LONG
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.sweeper import SWEEP_LOCK_KEY, pending_job_ids, pending_jobs, sweep
from tests.broker_messages import run_job_ids, waiting
from tests.factories import enqueue, get_job, make_job
from tests.services import free_port


@pytest.fixture
def app(wsettings: Settings, celery_of: Callable[[Settings], Any]) -> Any:
    return celery_of(wsettings)


@pytest.fixture
def client(wsettings: Settings, redis_of: Callable[[Settings], redis.Redis]) -> redis.Redis:
    return redis_of(wsettings)


def test_never_sent_queued_row_is_enqueued(wsettings: Settings, app: Any, client: Any) -> None:
    job = make_job(wsettings)  # committed, but the broker was down: enqueued_at NULL
    assert job.enqueued_at is None
    report = sweep(wsettings, app)
    assert (report.requeued, report.recovered, report.errors) == (1, 0, [])
    assert _pending_list(client) == [job.id]
    assert pending_job_ids(client) == {job.id}  # and the sweeper reads it as it is
    assert get_job(wsettings, job.id).enqueued_at is not None
    assert get_job(wsettings, job.id).status == "queued"


def test_queued_grace_and_no_duplicates(wsettings: Settings, app: Any, client: Any) -> None:
    settings = replace(wsettings, queued_grace_seconds=3600)
    old = utcnow() - timedelta(hours=2)
    fresh = make_job(settings, enqueued_at=utcnow())  # sent just now: inside the grace
    lost = make_job(settings, enqueued_at=old)  # sent long ago, message gone (Redis restart)
    waiting = make_job(settings)
    enqueue(settings, app, waiting.id)  # message still waiting in the broker...
    _backdate(settings, waiting.id, old)  # ...for a long time (a long backlog)
    fresh_stamp = get_job(settings, fresh.id).enqueued_at

    report = sweep(settings, app)
    assert report.requeued == 1
    pending = _pending_list(client)
    assert sorted(pending) == sorted([lost.id, waiting.id])  # no duplicate for `waiting`
    assert get_job(settings, fresh.id).enqueued_at == fresh_stamp  # left alone
    assert get_job(settings, lost.id).enqueued_at > old


def test_orphaned_running_job_is_recovered(wsettings: Settings, app: Any, client: Any) -> None:
    orphan = make_job(wsettings, status="running", attempts=1, worker="dead@host/1",
                      started_at=utcnow())  # fmt: skip
    alive = make_job(wsettings, status="running", attempts=1, worker="live@host/2",
                     started_at=utcnow())  # fmt: skip
    lock = JobLock(client, alive.id, ttl_seconds=30)
    assert lock.acquire()  # a live runner holds this one

    report = sweep(wsettings, app)
    assert (report.recovered, report.requeued) == (1, 0)
    back = get_job(wsettings, orphan.id)
    assert back.status == "queued" and back.started_at is None and back.attempts == 1
    assert back.enqueued_at is not None
    assert get_job(wsettings, alive.id).status == "running"
    assert _pending_list(client) == [orphan.id]

    # The next sweep sees the message waiting: nothing more to do.
    assert (sweep(wsettings, app).requeued, sweep(wsettings, app).recovered) == (0, 0)
    lock.release()


def test_terminal_rows_are_never_touched(wsettings: Settings, app: Any, client: Any) -> None:
    old = utcnow() - timedelta(days=1)
    ids = [
        make_job(wsettings, status=s, enqueued_at=old, finished_at=old).id
        for s in ("succeeded", "failed", "canceled")
    ]
    before = {i: get_job(wsettings, i) for i in ids}
    report = sweep(wsettings, app)
    assert (report.requeued, report.recovered) == (0, 0)
    assert waiting(client) == []  # no message of any kind
    for job_id, job in before.items():
        after = get_job(wsettings, job_id)
        assert (after.status, after.enqueued_at, after.finished_at) == (
            job.status, job.enqueued_at, job.finished_at,
        )  # fmt: skip


def test_one_sweep_at_a_time(wsettings: Settings, app: Any, client: Any) -> None:
    make_job(wsettings)
    client.set(SWEEP_LOCK_KEY, "another-sweeper", ex=30)
    report = sweep(wsettings, app)
    assert report.skipped and report.requeued == 0
    client.delete(SWEEP_LOCK_KEY)
    assert sweep(wsettings, app).requeued == 1
    assert not client.exists(SWEEP_LOCK_KEY)  # given back after the pass


def test_broker_down_leaves_rows_alone(wsettings: Settings) -> None:
    down = replace(wsettings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    job = make_job(down)
    app = create_celery(down)
    try:
        report = sweep(down, app)
    finally:
        app.close()
    assert report.errors and report.requeued == 0
    after = get_job(down, job.id)
    assert after.status == "queued" and after.enqueued_at is None


def test_recovered_job_whose_send_fails_stays_queued(wsettings: Settings, client: Any) -> None:
    """Redis answers (locks) but the broker send fails: the row is queued, enqueued_at NULL,
    so the next sweep sends it."""
    orphan = make_job(wsettings, status="running", attempts=1, started_at=utcnow())

    class BrokenApp:
        conf = create_celery(wsettings).conf  # the sweeper reads the broker layout from it

        def send_task(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("broker unreachable")

    report = sweep(wsettings, BrokenApp())  # type: ignore[arg-type]
    assert report.recovered == 1 and report.errors
    after = get_job(wsettings, orphan.id)
    assert after.status == "queued" and after.enqueued_at is None
    assert not client.exists(lock_key(orphan.id))


# ---- priority and aging --------------------------------------------------------------------

BIG = {"iterations": 1000, "max_size": 512}  # ≈ 13 min on the reference machine: long


def _steps(client: redis.Redis, job_id: str) -> list[int]:
    """The priority steps of ``job_id``'s waiting messages, read without the sweeper's code."""
    return [
        m.step for m in waiting(client) if m.task == "stylequeue.run_job" and m.args == [job_id]
    ]


def test_messages_carry_the_cost_class(wsettings: Settings, app: Any, client: Any) -> None:
    small = make_job(wsettings)
    big = make_job(wsettings, params=BIG, owner="web:big")
    sweep(wsettings, app)  # both never sent: the sweep sends them, each at its class
    assert INTERACTIVE < LONG
    assert (_steps(client, small.id), _steps(client, big.id)) == ([INTERACTIVE], [LONG])
    # The sweeper reads every priority list: neither is sent again.
    assert pending_jobs(client, None) == {small.id: INTERACTIVE, big.id: LONG}
    assert pending_job_ids(client) == {small.id, big.id}
    assert sweep(wsettings, app).requeued == 0
    assert sorted(run_job_ids(client)) == sorted([small.id, big.id])


def test_a_long_job_past_the_aging_threshold_is_sent_again_first(
    wsettings: Settings, app: Any, client: Any
) -> None:
    settings = replace(wsettings, queued_grace_seconds=3600)  # only aging may re-send here
    now = utcnow()
    aged = make_job(settings, params=BIG, created_at=now - timedelta(seconds=AGE_AFTER_SECONDS))
    young = make_job(
        settings, params=BIG, created_at=now - timedelta(seconds=AGE_AFTER_SECONDS - 60)
    )
    enqueue(settings, app, young.id)
    _backdate(settings, aged.id, now - timedelta(seconds=AGE_AFTER_SECONDS - 60))
    _send_at(app, aged.id, LONG)  # as it was sent when it was young
    assert (_steps(client, aged.id), _steps(client, young.id)) == ([LONG], [LONG])

    report = sweep(settings, app)
    assert (report.promoted, report.requeued, report.errors) == (1, 0, [])
    assert _steps(client, aged.id) == [INTERACTIVE, LONG]  # first in line now
    assert _steps(client, young.id) == [LONG]  # not yet
    assert sweep(settings, app).promoted == 0  # already waiting first: not sent again


# ---- fair share: the per-owner bound --------------------------------------------------------


def _ids_in_order(client: redis.Redis) -> list[str]:
    return run_job_ids(client)  # in the order a worker takes them


def _finish(settings: Settings, job_id: str) -> None:
    from stylequeue.shared.db import session_scope
    from stylequeue.shared.models import Job

    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.finished_at = "succeeded", utcnow()


def test_sweeper_honours_the_per_owner_bound(wsettings: Settings, app: Any, client: Any) -> None:
    start = utcnow() - timedelta(minutes=5)
    a = [
        make_job(wsettings, owner="web:a", created_at=start + timedelta(seconds=i))
        for i in range(3)
    ]
    b = make_job(wsettings, owner="web:b", created_at=start + timedelta(seconds=10))
    busy = make_job(wsettings, owner="web:c", status="running", attempts=1, started_at=start)
    held = make_job(wsettings, owner="web:c", created_at=start - timedelta(seconds=1))
    lock = JobLock(client, busy.id, ttl_seconds=30)
    assert lock.acquire()  # c's one slot is taken by its running job

    report = sweep(wsettings, app)
    assert (report.requeued, report.errors) == (2, [])
    assert _ids_in_order(client) == [a[0].id, b.id]  # one each, the oldest owner first
    assert get_job(wsettings, held.id).enqueued_at is None
    assert all(get_job(wsettings, j.id).enqueued_at is None for j in a[1:])
    assert sweep(wsettings, app).requeued == 0  # still full

    client.delete("style")  # a[0] and b taken by workers...
    _finish(wsettings, a[0].id)  # ...a[0] done; b's message gone: sent long ago, re-sent
    _finish(wsettings, busy.id)
    lock.release()
    report = sweep(wsettings, app)
    assert sorted(_ids_in_order(client)) == sorted([b.id, held.id, a[1].id])
    assert get_job(wsettings, a[2].id).enqueued_at is None


def test_the_bound_is_a_setting(wsettings: Settings, app: Any, client: Any) -> None:
    settings = replace(wsettings, owner_slots=2)
    start = utcnow() - timedelta(minutes=5)
    a = [
        make_job(settings, owner="web:a", created_at=start + timedelta(seconds=i)) for i in range(3)
    ]
    assert sweep(settings, app).requeued == 2
    assert _ids_in_order(client) == [a[0].id, a[1].id]


def test_end_of_job_and_submit_top_up_the_owner(wsettings: Settings, app: Any, client: Any) -> None:
    from stylequeue.shared.db import get_sessionmaker
    from stylequeue.shared.jobs import top_up_owner
    from stylequeue.worker.tasks import top_up_after

    sessions = get_sessionmaker(wsettings.database_url)
    first, second = make_job(wsettings, owner="web:a"), make_job(wsettings, owner="web:a")
    assert top_up_owner(sessions, app, "web:a", client) == [first.id]  # the submit's call
    assert top_up_owner(sessions, app, "web:a", client) == []  # full
    _finish(wsettings, first.id)
    top_up_after(wsettings, app, first.id)  # what run_job does after the runner returns
    assert _ids_in_order(client) == [first.id, second.id]
    assert get_job(wsettings, second.id).enqueued_at is not None


def _send_at(app: Any, job_id: str, priority: int) -> None:
    from stylequeue.shared.celery_app import enqueue_run_job

    enqueue_run_job(app, job_id, priority)


# ---- helpers -----------------------------------------------------------------------------


def _pending_list(client: redis.Redis) -> list[str]:
    """Job ids of waiting run_job messages, with repeats (to catch duplicates), decoded
    independently of the sweeper's own parser."""
    return run_job_ids(client)


def _backdate(settings: Settings, job_id: str, when: Any) -> None:
    from stylequeue.shared.db import session_scope
    from stylequeue.shared.models import Job

    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.enqueued_at = when


def test_stylequeue_sweep_command(
    wsettings: Settings, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stylequeue sweep`` runs one pass with the environment's settings."""
    from click.testing import CliRunner

    from stylequeue.cli.admin import sweep as sweep_command
    from stylequeue.shared.settings import get_settings
    from tests.worker_process import settings_env

    job = make_job(wsettings)
    # Another owner's: one owner's orphan would fill its one slot in the broker.
    orphan = make_job(
        wsettings, owner="web:other", status="running", attempts=1, started_at=utcnow()
    )
    env = {k: v for k, v in settings_env(wsettings).items() if k.startswith("STYLEQUEUE_")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(sweep_command, [])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "re-enqueued 1 queued, recovered 1 orphaned" in result.output
    assert sorted(_pending_list(client)) == sorted([job.id, orphan.id])


def test_database_down_is_reported_not_raised(wsettings: Settings, app: Any, client: Any) -> None:
    """A database outage mid-pass is one error in the report, like a Redis outage: the
    ``stylequeue sweep --every`` loop (and ``make run`` with it) must outlive it."""
    down = replace(wsettings, database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x")
    report = sweep(down, app)
    assert report.errors and "database unavailable" in report.errors[0]
    assert (report.requeued, report.recovered) == (0, 0)
    assert not client.exists(SWEEP_LOCK_KEY)  # given back even so
