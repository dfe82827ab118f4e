"""A job's webhook events, as its runner writes them (in process: real engine, Redis,
database and storage; the hooks worker is not needed to see what the runner records).

The runner records each event in the transaction of its change and sends the message's id
to the ``webhooks`` queue; it never calls the receiver, so nothing the receiver does can
slow a job, and a broker that is down does not fail it: the sweeper sends later.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import redis
from sqlalchemy import select

from stylequeue.shared.celery_app import WEBHOOKS_QUEUE, create_celery
from stylequeue.shared.db import session_scope
from stylequeue.shared.models import WebhookMessage
from stylequeue.shared.settings import Settings
from stylequeue.shared.sweeper import sweep
from stylequeue.worker import runner
from tests.factories import get_job, make_job
from tests.services import free_port

WORKER = "test@host/1"
HOOK = "https://93.184.215.14/hook"
EVERY = ["started", "progress", "completed"]


def events(settings: Settings, job_id: str) -> list[WebhookMessage]:
    with session_scope(settings.database_url) as session:
        rows = list(
            session.scalars(
                select(WebhookMessage)
                .where(WebhookMessage.job_id == job_id)
                .order_by(WebhookMessage.created_at, WebhookMessage.id)
            )
        )
        session.expunge_all()
        return rows


def queued_ids(settings: Settings) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return [
            json.loads(raw)["headers"]["argsrepr"] for raw in client.lrange(WEBHOOKS_QUEUE, 0, -1)
        ]
    finally:
        client.close()


def with_progress_every(settings: Settings, seconds: int) -> Settings:
    return replace(settings, webhooks=replace(settings.webhooks, progress_seconds=seconds))


def test_a_job_records_started_progress_and_completed(wsettings: Settings) -> None:
    settings = with_progress_every(wsettings, 0)  # 0: one with every write of the row
    job = make_job(settings, params={"iterations": 6}, webhook_url=HOOK, webhook_events=EVERY)
    outcome = runner.execute(job.id, settings, worker_name=WORKER)
    assert outcome.status == "succeeded"
    recorded = events(settings, job.id)
    started, *progress, completed = recorded
    assert (started.event, completed.event) == ("started", "completed")
    assert progress and {m.event for m in progress} == {"progress"}
    assert (started.job_row["status"], started.job_row["attempts"]) == ("running", 1)
    # the row's progress as written (about once a second, and where the loop stopped)
    done = [m.job_row["iterations_done"] for m in progress]
    assert done == sorted(done) and done[-1] == 6
    assert completed.job_row["status"] == "succeeded"
    assert completed.job_row["result_key"] == get_job(settings, job.id).result_key
    # each sent to the webhooks queue after its commit, and stamped so
    assert all(m.enqueued_at is not None for m in recorded)
    assert sorted(queued_ids(settings)) == sorted(repr([m.id]) for m in recorded)


@pytest.mark.parametrize(
    ("asked", "expected"),
    [(["completed"], ["completed"]), (["started", "completed"], ["started", "completed"])],
)
def test_only_the_events_asked_for_are_recorded(
    wsettings: Settings, asked: list[str], expected: list[str]
) -> None:
    settings = with_progress_every(wsettings, 0)
    job = make_job(settings, params={"iterations": 3}, webhook_url=HOOK, webhook_events=asked)
    runner.execute(job.id, settings, worker_name=WORKER)
    assert [m.event for m in events(settings, job.id)] == expected


def test_progress_is_throttled_by_the_setting(wsettings: Settings) -> None:
    """An hour between progress events: a short job sends none (the first would come an
    hour after its start), and still its start and its end."""
    settings = with_progress_every(wsettings, 3600)
    job = make_job(settings, params={"iterations": 6}, webhook_url=HOOK, webhook_events=EVERY)
    runner.execute(job.id, settings, worker_name=WORKER)
    assert [m.event for m in events(settings, job.id)] == ["started", "completed"]


def test_a_job_without_a_webhook_records_nothing(wsettings: Settings) -> None:
    job = make_job(with_progress_every(wsettings, 0), params={"iterations": 3})
    runner.execute(job.id, with_progress_every(wsettings, 0), worker_name=WORKER)
    assert events(wsettings, job.id) == [] and queued_ids(wsettings) == []


def test_a_job_canceled_before_it_started_records_completed(wsettings: Settings) -> None:
    job = make_job(wsettings, cancel_requested=True, webhook_url=HOOK, webhook_events=EVERY)
    assert runner.execute(job.id, wsettings, worker_name=WORKER).action == "canceled"
    (completed,) = events(wsettings, job.id)
    assert (completed.event, completed.job_row["status"]) == ("completed", "canceled")


def test_a_broker_that_is_down_does_not_fail_the_job_the_sweeper_sends_later(
    wsettings: Settings,
) -> None:
    settings = with_progress_every(wsettings, 0)
    job = make_job(settings, params={"iterations": 4}, webhook_url=HOOK, webhook_events=EVERY)
    dead = create_celery(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        outcome = runner.execute(job.id, settings, worker_name=WORKER, celery=dead)
    finally:
        dead.close()
    assert outcome.status == "succeeded"
    recorded = events(settings, job.id)
    assert [m.event for m in recorded][:: len(recorded) - 1] == ["started", "completed"]
    assert len(recorded) >= 3 and all(m.enqueued_at is None for m in recorded)
    assert queued_ids(settings) == []
    live = create_celery(settings)
    try:
        report = sweep(replace(settings, queued_grace_seconds=0), live)
    finally:
        live.close()
    assert report.webhooks == len(recorded)
    assert sorted(queued_ids(settings)) == sorted(repr([m.id]) for m in recorded)
    assert all(m.enqueued_at is not None for m in events(settings, job.id))


def test_a_later_attempt_does_not_say_started_again(wsettings: Settings) -> None:
    """A job resumed by another runner (attempts 1 before it) keeps its first start."""
    job = make_job(
        wsettings, params={"iterations": 3}, webhook_url=HOOK, webhook_events=EVERY, attempts=1
    )
    runner.execute(job.id, wsettings, worker_name=WORKER)
    assert [m.event for m in events(wsettings, job.id)] == ["completed"]
