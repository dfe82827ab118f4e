"""The Celery app object: DESIGN's settings for long GPU jobs, and what enqueue puts on a
real Redis broker."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery

from stylequeue.shared.celery_app import (
    QUEUE,
    RUN_JOB,
    SWEEP,
    SWEEP_INTERVAL_SECONDS,
    celery_config,
    create_celery,
    enqueue_run_job,
)
from stylequeue.shared.settings import Settings

JOB = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


@pytest.fixture
def app(make_settings: Callable[..., Settings], redis_url: str) -> Iterator[Celery]:
    celery = create_celery(make_settings(redis_url=redis_url))
    yield celery
    celery.close()


def test_long_job_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(job_soft_time_limit=7200, job_time_limit=7300)
    conf = create_celery(settings).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit == 7200
    assert conf.task_time_limit == 7300
    assert conf.task_soft_time_limit < conf.task_time_limit
    options = conf.broker_transport_options
    assert options["visibility_timeout"] > settings.job_time_limit
    assert options["unacked_restore_interval"] > 0
    assert options["unacked_restore_throttle"] >= 0
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    assert conf.task_ignore_result is True
    assert conf.result_backend is None
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"


@pytest.mark.parametrize("hard", [61, 3660, 86_400])
def test_visibility_timeout_follows_the_job_time_limit(
    make_settings: Callable[..., Settings], hard: int
) -> None:
    config = celery_config(make_settings(job_soft_time_limit=60, job_time_limit=hard))
    assert config["broker_transport_options"]["visibility_timeout"] > hard


def test_routes_and_queue(make_settings: Callable[..., Settings]) -> None:
    conf = create_celery(make_settings()).conf
    assert conf.task_default_queue == QUEUE == "style"
    assert [q.name for q in conf.task_queues] == [QUEUE]
    assert conf.task_routes[RUN_JOB] == {"queue": QUEUE}
    assert conf.task_routes[SWEEP] == {"queue": QUEUE}
    assert RUN_JOB == "stylequeue.run_job"


def test_sweep_schedule_expires(make_settings: Callable[..., Settings]) -> None:
    beat = create_celery(make_settings()).conf.beat_schedule["sweep-queued"]
    assert beat["task"] == SWEEP
    assert beat["schedule"] == SWEEP_INTERVAL_SECONDS
    assert beat["options"]["expires"] == SWEEP_INTERVAL_SECONDS


def test_broker_is_the_settings_redis(make_settings: Callable[..., Settings]) -> None:
    app = create_celery(make_settings(redis_url="redis://broker.example:6390/4"))
    assert app.conf.broker_url == "redis://broker.example:6390/4"


def test_app_is_not_made_current(make_settings: Callable[..., Settings]) -> None:
    import celery

    before = celery.current_app
    create_celery(make_settings(), name="not-current")
    assert celery.current_app is before
    assert celery.current_app.main != "not-current"


def _messages(redis_url: str) -> list[dict]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(raw) for raw in client.lrange(QUEUE, 0, -1)]
    finally:
        client.close()


def _args(message: dict) -> list:
    assert message["properties"]["body_encoding"] == "base64"
    body = json.loads(base64.b64decode(message["body"]))
    args, kwargs, _embed = body
    assert kwargs == {}
    return args


def test_enqueue_puts_one_message_on_the_style_list(app: Celery, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.llen(QUEUE) == 0
        enqueue_run_job(app, JOB)
        assert client.llen(QUEUE) == 1
        assert client.llen("celery") == 0  # not the default Celery queue
    finally:
        client.close()
    (message,) = _messages(redis_url)
    headers = message["headers"]
    assert headers["task"] == RUN_JOB
    assert headers["id"].startswith(f"run-{JOB}-")
    assert _args(message) == [JOB]
    assert message["content-type"] == "application/json"
    assert message["properties"]["delivery_info"]["routing_key"] == QUEUE


def test_each_enqueue_is_its_own_task(app: Celery, redis_url: str) -> None:
    enqueue_run_job(app, JOB)
    enqueue_run_job(app, JOB)  # a re-send (sweeper) must not be deduplicated away by id
    messages = _messages(redis_url)
    assert len(messages) == 2
    ids = {m["headers"]["id"] for m in messages}
    assert len(ids) == 2
    assert all(_args(m) == [JOB] for m in messages)
