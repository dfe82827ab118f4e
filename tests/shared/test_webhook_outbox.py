"""The webhook outbox: events recorded with their change, sent after the commit, swept.

Real Redis (the ``webhooks`` list kombu keeps) and the database; no worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import select

from stylequeue.shared.celery_app import DELIVER_WEBHOOK, QUEUE, WEBHOOKS_QUEUE, create_celery
from stylequeue.shared.db import get_sessionmaker, session_scope
from stylequeue.shared.jobs import request_cancel
from stylequeue.shared.models import Job, WebhookMessage
from stylequeue.shared.progress import ProgressStream
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import JobStatus, transition, utcnow
from stylequeue.shared.sweeper import sweep
from stylequeue.shared.webhook_outbox import (
    ProgressThrottle,
    change_event,
    job_from_snapshot,
    record,
    record_change,
    row_snapshot,
    send,
    send_unsent,
)
from tests.factories import get_job, insert_job
from tests.services import free_port

HOOK = "https://93.184.215.14/hook"


@pytest.fixture
def celery_app(settings: Settings) -> Iterator[Celery]:
    app = create_celery(settings)
    yield app
    app.close()


def waiting(settings: Settings, queue: str) -> list[dict[str, Any]]:
    """The messages kombu holds in ``queue``'s Redis list."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()


def messages(settings: Settings) -> list[WebhookMessage]:
    with session_scope(settings.database_url) as session:
        rows = list(session.scalars(select(WebhookMessage).order_by(WebhookMessage.created_at)))
        session.expunge_all()
        return rows


def hooked_job(settings: Settings, events: list[str] | None = None, **values: Any) -> str:
    events = ["started", "progress", "completed"] if events is None else events
    return insert_job(settings, webhook_url=HOOK, webhook_events=events, **values)


# ---- which change makes which event ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "attempts", "event"),
    [
        ("queued", 0, None),
        ("running", 1, "started"),
        ("running", 2, None),  # a later attempt (a resumed or restarted job) starts nothing
        ("succeeded", 1, "completed"),
        ("failed", 3, "completed"),
        ("canceled", 0, "completed"),
    ],
)
def test_the_event_a_state_makes(status: str, attempts: int, event: str | None) -> None:
    assert change_event(Job(status=status, attempts=attempts)) == event


def test_a_message_is_recorded_only_for_a_webhook_that_wants_the_event(
    settings: Settings,
) -> None:
    plain = insert_job(settings)
    picky = hooked_job(settings, ["completed"])
    with session_scope(settings.database_url) as session:
        for job_id in (plain, picky):
            job = session.get(Job, job_id)
            assert job is not None
            transition(job, JobStatus.RUNNING, attempts=1)
            assert record_change(session, job) is None  # no webhook / not asked for
            assert record(session, job, "progress") is None
            transition(job, JobStatus.SUCCEEDED, iterations_done=5)
            message_id = record_change(session, job)
            assert (message_id is None) == (job_id == plain)
    (message,) = messages(settings)
    assert (message.job_id, message.event, message.enqueued_at) == (picky, "completed", None)
    assert message.id.startswith("msg_") and message.attempts == 0
    # the row as it was at the event, in the same transaction as the change
    assert message.job_row["status"] == "succeeded" and message.job_row["iterations_done"] == 5


def test_the_snapshot_gives_back_the_row(settings: Settings) -> None:
    job_id = hooked_job(settings, status="running", attempts=1, started_at=utcnow())
    row = get_job(settings, job_id)
    snapshot = row_snapshot(row)
    assert json.loads(json.dumps(snapshot)) == snapshot  # JSON as it is
    again = job_from_snapshot(snapshot)
    for column in Job.__table__.columns:
        assert getattr(again, column.key) == getattr(row, column.key), column.key
    assert again.started_at is not None and again.started_at.tzinfo is not None
    older = {k: v for k, v in snapshot.items() if k != "preemptions"}  # a column added later
    assert job_from_snapshot(older).preemptions is None


# ---- sending --------------------------------------------------------------------------------


def _recorded(settings: Settings, job_id: str) -> str:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        transition(job, JobStatus.CANCELED)
        message_id = record_change(session, job)
    assert message_id is not None
    return message_id


def test_send_puts_the_id_on_the_webhooks_queue_and_stamps_it(
    settings: Settings, celery_app: Celery
) -> None:
    message_id = _recorded(settings, hooked_job(settings))
    sessions = get_sessionmaker(settings.database_url)
    assert send(sessions, celery_app, [None, message_id]) == [message_id]
    (sent,) = waiting(settings, WEBHOOKS_QUEUE)
    assert sent["headers"]["task"] == DELIVER_WEBHOOK
    assert sent["headers"]["argsrepr"] == repr([message_id])
    assert waiting(settings, QUEUE) == []  # never on the GPU workers' queue
    assert messages(settings)[0].enqueued_at is not None


def test_a_broker_that_is_down_costs_one_refused_send_not_an_error(settings: Settings) -> None:
    message_id = _recorded(settings, hooked_job(settings))
    dead = create_celery(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        assert send(get_sessionmaker(settings.database_url), dead, [message_id]) == []
    finally:
        dead.close()
    assert messages(settings)[0].enqueued_at is None  # left for the sweeper


def test_the_sweeper_sends_what_was_not_sent(settings: Settings, celery_app: Celery) -> None:
    old = _recorded(settings, hooked_job(settings))
    new = _recorded(settings, hooked_job(settings))
    with session_scope(settings.database_url) as session:
        message = session.get(WebhookMessage, old)
        assert message is not None
        message.created_at = utcnow() - timedelta(minutes=5)
    sessions = get_sessionmaker(settings.database_url)
    assert send_unsent(sessions, celery_app, grace_seconds=60) == [old]  # the new one waits
    assert send_unsent(sessions, celery_app, grace_seconds=60) == []  # sent once
    report = sweep(replace(settings, queued_grace_seconds=0), celery_app)
    assert report.webhooks == 1 and not report.errors
    sent = [m["headers"]["argsrepr"] for m in waiting(settings, WEBHOOKS_QUEUE)]
    assert sorted(sent) == sorted([repr([old]), repr([new])])


def test_a_queued_job_canceled_records_completed_for_the_caller_to_send(
    settings: Settings,
) -> None:
    job_id = hooked_job(settings, owner="api:alice")
    client = redis.Redis.from_url(settings.redis_url)
    try:
        with get_sessionmaker(settings.database_url)() as session:
            result = request_cancel(
                session, job_id, "api:alice", ProgressStream(client), stream_ttl_seconds=60
            )
    finally:
        client.close()
    (message,) = messages(settings)
    assert result.webhook_message == message.id
    assert message.job_row["status"] == "canceled"


def test_progress_is_throttled() -> None:
    now = [100.0]
    throttle = ProgressThrottle(5, clock=lambda: now[0])
    assert not throttle.due()  # the first comes 5 s after the start
    now[0] = 104.9
    assert not throttle.due()
    now[0] = 105.0
    assert throttle.due()
    throttle.sent()
    now[0] = 109.0
    assert not throttle.due()
    now[0] = 110.0
    assert throttle.due()
    assert ProgressThrottle(0, clock=lambda: now[0]).due()  # 0: every time
