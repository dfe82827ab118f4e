"""``GET /metrics``: values for known rows, broker messages and workers; who may scrape.

Real Redis (the broker's own lists, filled by Celery and kombu), SQLite and PostgreSQL. The
output is parsed with prometheus_client's own parser; expected figures are worked out by
hand from the rows each test writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta

import prometheus_client
import pytest
import redis
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from stylequeue.shared.celery_app import QUEUE, RUN_JOB, create_celery, enqueue_run_job
from stylequeue.shared.fleet import announce
from stylequeue.shared.redis_keys import stream_key
from stylequeue.shared.settings import Settings, load_settings
from stylequeue.shared.states import utcnow
from stylequeue.web import create_app, metrics_collector
from stylequeue.web.metrics import is_loopback
from tests.factories import insert_job
from tests.services import free_port
from tests.web.helpers import ALICE, error_of

Samples = dict[str, list[Sample]]
TOKEN = "scrape-me-please"
REMOTE = {"REMOTE_ADDR": "10.1.2.3"}


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return parse(response.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample ``name`` with exactly these labels."""
    found = [s.value for s in samples.get(name, []) if s.labels == labels]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def bucket(samples: Samples, name: str, le: float, **labels: str) -> float:
    found = [
        s.value
        for s in samples[name + "_bucket"]
        if float(s.labels["le"]) == le
        and {k: v for k, v in s.labels.items() if k != "le"} == labels
    ]
    assert len(found) == 1, (name, le, labels)
    return found[0]


def ago(seconds: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(seconds=seconds)


# ---- jobs -----------------------------------------------------------------------------------


def test_jobs_by_status_and_oldest_queued_age(settings: Settings, client: FlaskClient) -> None:
    insert_job(settings, status="queued", created_at=ago(600))
    insert_job(settings, status="queued", created_at=ago(60))
    insert_job(settings, status="running", started_at=ago(5), worker="celery@a/1", attempts=1)
    for _ in range(3):
        insert_job(settings, status="succeeded", started_at=ago(9), finished_at=ago(1))
    insert_job(settings, status="failed", started_at=ago(9), finished_at=ago(1))
    samples = scrape(client)
    expected = {"queued": 2, "running": 1, "succeeded": 3, "failed": 1, "canceled": 0}
    for status, n in expected.items():
        assert value(samples, "stylequeue_jobs", status=status) == n, status
    age = value(samples, "stylequeue_oldest_queued_job_age_seconds")
    assert 600 <= age < 660


def test_an_empty_fleet(client: FlaskClient) -> None:
    samples = scrape(client)
    assert value(samples, "stylequeue_oldest_queued_job_age_seconds") == 0
    assert value(samples, "stylequeue_jobs", status="queued") == 0
    assert value(samples, "stylequeue_workers_online") == 0
    assert samples.get("stylequeue_workers", []) == []
    for source in ("database", "broker", "fleet"):
        assert value(samples, "stylequeue_metrics_source_up", source=source) == 1


def test_queue_wait_and_run_time_histograms(settings: Settings, client: FlaskClient) -> None:
    now = utcnow()
    # name: (created, started, finished) seconds ago, status
    rows = [
        ("succeeded", 300, 290, 190),  # wait 10, run 100
        ("failed", 1000, 400, 100),  # wait 600, run 300
        ("canceled", 100, 95, 50),  # wait 5, run 45
        ("running", 60, 20, None),  # wait 40, still running
        ("succeeded", 7300, 7200, 1800),  # started before the window: run 5400 only
        ("succeeded", 10800, 10400, 9000),  # all before the window: neither
    ]
    for status, created, started, finished in rows:
        insert_job(
            settings,
            status=status,
            created_at=ago(created, now),
            started_at=ago(started, now),
            finished_at=None if finished is None else ago(finished, now),
        )
    # canceled while queued: never started, in neither histogram
    insert_job(settings, status="canceled", created_at=ago(30, now), finished_at=ago(10, now))
    samples = scrape(client)

    wait = "stylequeue_job_queue_wait_seconds"
    assert value(samples, wait + "_count") == 4
    assert value(samples, wait + "_sum") == pytest.approx(655, abs=0.01)
    for le, n in [(1, 0), (5, 1), (15, 2), (60, 3), (300, 3), (600, 4), (float("inf"), 4)]:
        assert bucket(samples, wait, le) == n, le

    run = "stylequeue_job_run_seconds"
    assert value(samples, run + "_count", status="succeeded") == 2
    assert value(samples, run + "_sum", status="succeeded") == pytest.approx(5500, abs=0.01)
    assert bucket(samples, run, 120, status="succeeded") == 1
    assert bucket(samples, run, 3600, status="succeeded") == 1
    assert bucket(samples, run, 7200, status="succeeded") == 2
    assert value(samples, run + "_count", status="failed") == 1
    assert value(samples, run + "_sum", status="failed") == pytest.approx(300, abs=0.01)
    assert bucket(samples, run, 300, status="failed") == 1
    assert bucket(samples, run, 120, status="failed") == 0
    assert value(samples, run + "_count", status="canceled") == 1
    assert value(samples, run + "_sum", status="canceled") == pytest.approx(45, abs=0.01)


def test_attempt_crash_and_preemption_counters(settings: Settings, client: FlaskClient) -> None:
    rows = [  # (attempts, preemptions, status, checkpoints, resumes)
        (0, 0, "queued", 0, 0), (1, 0, "succeeded", 3, 0), (3, 0, "failed", 0, 0),
        (2, 0, "running", 1, 1),
        (3, 2, "succeeded", 4, 2),  # two preemptions, no crash
        (2, 1, "queued", 2, 0),  # preempted, waiting to resume
        (4, 1, "running", 5, 3),  # one preemption and two crashes
    ]  # fmt: skip
    for attempts, preemptions, status, checkpoints, resumes in rows:
        insert_job(
            settings, status=status, attempts=attempts, preemptions=preemptions,
            checkpoints=checkpoints, resumes=resumes, started_at=ago(5),
        )  # fmt: skip
    samples = scrape(client)
    assert value(samples, "stylequeue_job_attempts_total") == 15
    assert value(samples, "stylequeue_job_preemptions_total") == 4
    # a later attempt after a preemption is no crash: (3-1) + (2-1) + 0 + 0 + (4-1-1)
    assert value(samples, "stylequeue_job_crashes_total") == 5
    assert value(samples, "stylequeue_job_checkpoints_total") == 15
    assert value(samples, "stylequeue_job_resumes_total") == 6


# ---- the broker -----------------------------------------------------------------------------


def send(app: Celery, job_id: str, priority: int) -> None:
    app.send_task(RUN_JOB, args=[job_id], queue=QUEUE, priority=priority)


def test_queue_depth_sums_the_priority_lists(settings: Settings, redis_url: str) -> None:
    celery = create_celery(settings)
    client = create_app(settings, celery=celery).test_client()
    for priority in (0, 0, 3, 5, 9):
        send(celery, insert_job(settings), priority)
    broker = redis.Redis.from_url(redis_url)
    # kombu's own layout, read without our code: a plain LLEN sees the step-0 list only
    assert broker.llen(QUEUE) == 2
    assert broker.llen(f"{QUEUE}\x06\x163") == 2 and broker.llen(f"{QUEUE}\x06\x169") == 1
    samples = scrape(client)
    expected = {"0": 2, "3": 2, "6": 0, "9": 1}
    for step, n in expected.items():
        assert value(samples, "stylequeue_queue_messages", queue=QUEUE, priority=step) == n
        assert value(samples, "stylequeue_queue_depth", queue=QUEUE, priority=step) == n
    assert sum(s.value for s in samples["stylequeue_queue_messages"]) == 5


def test_queue_depth_follows_configured_priority_steps(settings: Settings) -> None:
    celery = create_celery(settings)
    options = dict(celery.conf.broker_transport_options)
    celery.conf.broker_transport_options = {**options, "priority_steps": list(range(10))}
    client = create_app(settings, celery=celery).test_client()
    for priority in (1, 7, 7, 0):
        send(celery, insert_job(settings), priority)
    samples = scrape(client)
    messages = {s.labels["priority"]: s.value for s in samples["stylequeue_queue_messages"]}
    assert messages == {str(step): 0.0 for step in range(10)} | {"0": 1.0, "1": 1.0, "7": 2.0}


@contextmanager
def taken_by_a_worker(app: Celery, count: int) -> Iterator[None]:
    """``count`` messages taken off the queue and not acked, as a worker holds them; they
    go back to the queue when the connection closes."""
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        messages = [channel.basic_get(QUEUE, no_ack=False) for _ in range(count)]
        assert all(m is not None for m in messages)
        yield


def test_reserved_messages_count_taken_jobs_not_started(settings: Settings, redis_url: str) -> None:
    celery = create_celery(settings)
    client = create_app(settings, celery=celery).test_client()
    running = insert_job(settings, status="running", worker="celery@a/1", started_at=ago(3))
    reserved = insert_job(settings)
    waiting = insert_job(settings)
    enqueue_run_job(celery, running)
    enqueue_run_job(celery, reserved)
    send(celery, waiting, 6)
    broker = redis.Redis.from_url(redis_url)
    with taken_by_a_worker(celery, 2):
        assert broker.hlen("unacked") == 2 and broker.llen(QUEUE) == 0
        samples = scrape(client)
    labels = {"queue": QUEUE, "priority": "0"}
    assert value(samples, "stylequeue_queue_unacked_messages", **labels) == 2
    assert value(samples, "stylequeue_queue_reserved_messages", **labels) == 1
    assert value(samples, "stylequeue_queue_messages", **labels) == 0
    assert value(samples, "stylequeue_queue_depth", **labels) == 1  # the reserved one
    six = {"queue": QUEUE, "priority": "6"}
    assert value(samples, "stylequeue_queue_messages", **six) == 1
    assert value(samples, "stylequeue_queue_depth", **six) == 1
    assert value(samples, "stylequeue_queue_reserved_messages", **six) == 0


def test_unacked_entries_of_other_queues_or_garbled_are_left_out(
    client: FlaskClient, redis_url: str
) -> None:
    broker = redis.Redis.from_url(redis_url)
    other = [{"headers": {"task": RUN_JOB}, "properties": {"priority": 3}}, "other", "other"]
    odd = [{"headers": {"task": "x"}, "properties": {"priority": "high"}}, "style", "style"]
    loud = [{"headers": {"task": "x"}, "properties": {"priority": 42}}, "", QUEUE]
    entries = {"a": "not json", "b": json.dumps(other), "c": json.dumps(odd), "d": json.dumps(loud)}
    broker.hset("unacked", mapping=entries)
    samples = scrape(client)
    unacked = {s.labels["priority"]: s.value for s in samples["stylequeue_queue_unacked_messages"]}
    assert unacked == {"0": 1, "3": 0, "6": 0, "9": 1}  # 42: the last step
    assert value(samples, "stylequeue_queue_reserved_messages", queue=QUEUE, priority="0") == 1


# ---- workers --------------------------------------------------------------------------------


def test_workers_by_weights_precision_and_state(
    settings: Settings, client: FlaskClient, redis_url: str
) -> None:
    broker = redis.Redis.from_url(redis_url)
    announce(broker, "celery@a", {"weights": "imagenet", "precision": "float32", "pid": 11})
    announce(broker, "celery@b", {"weights": "imagenet", "precision": "float32", "pid": 12})
    announce(broker, "celery@c", {"weights": "random", "precision": "mixed_bfloat16", "pid": 13})
    insert_job(
        settings, status="running", worker="celery@a/11", iterations_done=100, started_at=ago(50)
    )
    samples = scrape(client)
    assert value(samples, "stylequeue_workers_online") == 3
    workers = {
        (s.labels["weights"], s.labels["precision"], s.labels["state"]): s.value
        for s in samples["stylequeue_workers"]
    }
    assert workers == {
        ("imagenet", "float32", "busy"): 1,
        ("imagenet", "float32", "idle"): 1,
        ("random", "mixed_bfloat16", "idle"): 1,
    }
    rate = value(samples, "stylequeue_worker_iterations_per_second", worker="celery@a/11")
    assert 100 / 55 < rate <= 100 / 50
    assert len(samples["stylequeue_worker_iterations_per_second"]) == 1


def test_iteration_rates_come_from_the_progress_streams(
    settings: Settings, client: FlaskClient, redis_url: str
) -> None:
    broker = redis.Redis.from_url(redis_url)
    seconds, micros = broker.time()
    now_ms = seconds * 1000 + micros // 1000

    def running(worker: str, points: list[tuple[int, int]]) -> None:
        """A running job (row average: 1 it/s) whose stream has (ms ago, iteration) entries."""
        job_id = insert_job(
            settings, status="running", worker=worker, iterations_done=100, started_at=ago(100)
        )
        for ms_ago, iteration in points:
            broker.xadd(stream_key(job_id), {"iteration": iteration}, id=f"{now_ms - ms_ago}-0")

    running("celery@fast/1", [(10_000, 10), (5_000, 20), (1_000, 28)])  # 18 in 9 s
    running("celery@stalled/2", [(300_000, 10), (290_000, 30)])  # nothing for 290 s
    running("celery@new/3", [(1_000, 1)])  # one entry: the row's average stands in
    samples = scrape(client)
    name = "stylequeue_worker_iterations_per_second"
    assert value(samples, name, worker="celery@fast/1") == pytest.approx(2.0)
    assert value(samples, name, worker="celery@stalled/2") == 0
    assert 100 / 105 < value(samples, name, worker="celery@new/3") <= 1.0


# ---- a source that cannot be read -----------------------------------------------------------


def test_redis_down_keeps_the_database_figures(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_job(settings, status="queued")
    dead = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    registry_reads: list[object] = []
    monkeypatch.setattr(metrics_collector, "list_workers", registry_reads.append)
    samples = scrape(create_app(dead).test_client())
    assert registry_reads == []  # Redis was not tried again after the broker's failure
    assert value(samples, "stylequeue_jobs", status="queued") == 1
    assert value(samples, "stylequeue_metrics_source_up", source="database") == 1
    assert value(samples, "stylequeue_metrics_source_up", source="broker") == 0
    assert value(samples, "stylequeue_metrics_source_up", source="fleet") == 0
    assert "stylequeue_queue_messages" not in samples
    assert "stylequeue_workers_online" not in samples


def test_database_down_keeps_the_broker_figures(settings: Settings) -> None:
    dead_db = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nope"
    celery = create_celery(settings)
    client = create_app(replace(settings, database_url=dead_db), celery=celery).test_client()
    send(celery, "not-a-row", 3)
    samples = scrape(client)
    assert value(samples, "stylequeue_metrics_source_up", source="database") == 0
    assert value(samples, "stylequeue_queue_messages", queue=QUEUE, priority="3") == 1
    assert "stylequeue_jobs" not in samples
    assert "stylequeue_queue_reserved_messages" not in samples  # needs the rows
    assert value(samples, "stylequeue_workers_online") == 0


def test_the_global_registry_stays_empty_of_ours(client: FlaskClient) -> None:
    scrape(client)
    assert b"stylequeue_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


# ---- who may scrape -------------------------------------------------------------------------


@pytest.fixture
def guarded(settings: Settings) -> Flask:
    return create_app(replace(settings, metrics_token=TOKEN))


def test_without_a_token_setting_loopback_may_scrape(client: FlaskClient) -> None:
    assert client.get("/metrics").status_code == 200
    ipv6 = client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"})
    assert ipv6.status_code == 200


def test_without_a_token_setting_others_are_refused(client: FlaskClient) -> None:
    response = client.get("/metrics", environ_base=REMOTE)
    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"
    assert "STYLEQUEUE_METRICS_TOKEN" in error_of(response)["message"]
    # an API token is no metrics token
    assert client.get("/metrics", environ_base=REMOTE, headers=ALICE).status_code == 403


def test_with_a_token_setting_the_token_is_needed(guarded: Flask) -> None:
    client = guarded.test_client()
    missing = client.get("/metrics")  # loopback too: the token is required once set
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert error_of(missing)["code"] == "unauthorized"
    basic = client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403 and error_of(wrong)["code"] == "forbidden"
    assert client.get("/metrics", headers=ALICE).status_code == 403
    right = {"Authorization": f"Bearer {TOKEN}"}
    for environ in ({}, REMOTE):
        response = client.get("/metrics", headers=right, environ_base=environ)
        assert response.status_code == 200
        assert "stylequeue_jobs" in parse(response.get_data(as_text=True))


def test_metrics_errors_are_json(client: FlaskClient) -> None:
    response = client.post("/metrics")
    assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"


def test_metrics_token_setting() -> None:
    assert load_settings({}).metrics_token is None
    assert load_settings({"STYLEQUEUE_METRICS_TOKEN": "  "}).metrics_token is None
    assert load_settings({"STYLEQUEUE_METRICS_TOKEN": "abc"}).metrics_token == "abc"


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("192.168.1.1", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_is_loopback(address: str | None, loopback: bool) -> None:
    assert is_loopback(address) is loopback
