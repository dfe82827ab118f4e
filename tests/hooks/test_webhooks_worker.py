"""The webhooks worker as it runs: a real ``celery worker`` process on the ``webhooks``
queue of a private Redis, a real database (SQLite, and PostgreSQL when one answers), a
real receiver on loopback. Retries are Celery's own (``Task.retry`` after the back-off,
shortened here by ``STYLEQUEUE_WEBHOOK_BACKOFF_SECONDS``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace

import pytest
import redis
from celery import Celery
from sqlalchemy import select

from stylequeue.shared.celery_app import QUEUE, WEBHOOKS_QUEUE, create_celery
from stylequeue.shared.db import get_sessionmaker, session_scope
from stylequeue.shared.models import WebhookDelivery, WebhookMessage
from stylequeue.shared.settings import Settings, load_settings
from stylequeue.shared.webhook_outbox import send
from tests import services
from tests.conftest import POSTGRES_ENV, TEST_LIMITS
from tests.hooks.conftest import LOCAL
from tests.hooks.test_delivery import message_for, secret_of
from tests.hooks_process import HooksWorker
from tests.webhook_receiver import Answer, Receiver

BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get(POSTGRES_ENV) else [])
WAIT = 120.0


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.private_redis(tmp_path_factory.mktemp("redis")) as (url, _proc):
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def hooks_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, module_redis: str
) -> Iterator[Settings]:
    client = redis.Redis.from_url(module_redis)
    client.flushdb()
    client.close()
    with services.migrated_database(request.param, tmp_path_factory.mktemp("db")) as url:
        base = load_settings({"STYLEQUEUE_VAR_DIR": str(tmp_path_factory.mktemp("var"))})
        yield replace(
            base, database_url=url, redis_url=module_redis, limits=TEST_LIMITS, webhooks=LOCAL
        )


@pytest.fixture(scope="module")
def hooks_worker(
    hooks_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HooksWorker]:
    worker = HooksWorker(hooks_settings, tmp_path_factory.mktemp("hooks-logs"))
    try:
        worker.start()
        yield worker
    finally:
        print(worker.log_tail(120), file=sys.stderr)
        worker.stop()


@pytest.fixture(scope="module")
def producer(hooks_settings: Settings) -> Iterator[Celery]:
    app = create_celery(hooks_settings)
    yield app
    app.close()


def send_message(settings: Settings, producer: Celery, url: str) -> str:
    _job_id, message_id = message_for(settings, url)
    assert send(get_sessionmaker(settings.database_url), producer, [message_id]) == [message_id]
    return message_id


def wait_for_message(settings: Settings, message_id: str, worker: HooksWorker) -> WebhookMessage:
    """Poll until the message is delivered or given up (never a timing assertion)."""
    import time

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with session_scope(settings.database_url) as session:
            message = session.get(WebhookMessage, message_id)
            assert message is not None
            if message.delivered_at is not None or message.failed_at is not None:
                session.expunge(message)
                return message
        time.sleep(0.05)
    raise AssertionError(f"{message_id} neither delivered nor given up\n{worker.log_tail()}")


def wait_until_acked(client: redis.Redis, message_id: str) -> None:
    """kombu keeps a delivered, unacked message in its ``unacked`` hash (acks late: until
    the task returns, just after the attempt was recorded)."""
    import time

    deadline = time.monotonic() + WAIT
    while [v for v in client.hvals("unacked") if message_id.encode() in v]:
        assert time.monotonic() < deadline, f"{message_id} never acked"
        time.sleep(0.05)


def statuses(settings: Settings, message_id: str) -> list[tuple[int, int | None]]:
    with session_scope(settings.database_url) as session:
        rows = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.message_id == message_id)
            .order_by(WebhookDelivery.attempt)
        )
        return [(d.attempt, d.status_code) for d in rows]


def test_a_500_is_retried_after_the_backoff_then_delivered(
    hooks_settings: Settings, hooks_worker: HooksWorker, producer: Celery
) -> None:
    with Receiver().serving() as receiver:
        receiver.answer(Answer(500), Answer(503))
        message_id = send_message(hooks_settings, producer, receiver.url)
        message = wait_for_message(hooks_settings, message_id, hooks_worker)
        requests = receiver.received()
    assert message.delivered_at is not None and message.failed_at is None
    assert statuses(hooks_settings, message_id) == [(1, 500), (2, 503), (3, 200)]
    assert len(requests) == 3
    assert {r.headers["webhook-id"] for r in requests} == {message_id}
    assert len({r.body for r in requests}) == 1
    secret = secret_of(hooks_settings)
    assert all(Receiver.verified(r, secret)["event"] == "completed" for r in requests)
    timestamps = [int(r.headers["webhook-timestamp"]) for r in requests]
    assert timestamps == sorted(timestamps)  # each attempt signs its own time


def test_a_400_is_not_retried(
    hooks_settings: Settings, hooks_worker: HooksWorker, producer: Celery
) -> None:
    with Receiver().serving() as receiver:
        receiver.answer(Answer(400))
        message_id = send_message(hooks_settings, producer, receiver.url)
        message = wait_for_message(hooks_settings, message_id, hooks_worker)
        # given up for good: once its task is acked, nothing waits in the broker for it
        client = redis.Redis.from_url(hooks_settings.redis_url)
        try:
            wait_until_acked(client, message_id)
            assert client.llen(WEBHOOKS_QUEUE) == 0
        finally:
            client.close()
        assert len(receiver.received()) == 1
    assert message.failed_at is not None and message.delivered_at is None
    assert statuses(hooks_settings, message_id) == [(1, 400)]


def test_the_webhooks_worker_runs_without_tensorflow(
    hooks_settings: Settings, hooks_worker: HooksWorker, producer: Celery
) -> None:
    """It delivered (the tests above) where importing TensorFlow raises, and the live
    process has no TensorFlow library mapped."""
    with Receiver().serving() as receiver:
        message_id = send_message(hooks_settings, producer, receiver.url)
        assert wait_for_message(hooks_settings, message_id, hooks_worker).delivered_at
    assert "must not import TensorFlow" not in hooks_worker.log_text()
    mapped = hooks_worker.loaded_libraries()
    assert not [path for path in mapped if "tensorflow" in path.lower()]
    assert any("python" in path for path in mapped)  # the listing is real


def test_a_gpu_worker_never_consumes_the_webhooks_queue() -> None:
    """Even started with ``-Q style,webhooks``: worker/app.py drops the queue at start-up
    (celeryd_after_setup, after -Q is applied and before the consumer starts)."""
    from stylequeue.worker.app import _never_take_webhooks, celery

    queues = celery.amqp.queues
    queues.select([QUEUE, WEBHOOKS_QUEUE])
    assert set(queues.consume_from) == {QUEUE, WEBHOOKS_QUEUE}
    try:
        _never_take_webhooks("gpu@test", instance=SimpleNamespace(app=celery))
        assert set(queues.consume_from) == {QUEUE}
    finally:
        queues.select([QUEUE])
