"""Submitting a job: stored inputs, a committed row, a message in the broker, in that order."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from dataclasses import replace
from typing import Any

import pytest
import redis
from flask import Flask

from stylequeue.shared import keys
from stylequeue.shared.celery_app import QUEUE, RUN_JOB, create_celery
from stylequeue.shared.db import get_sessionmaker
from stylequeue.shared.models import Job
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import Storage, get_storage
from stylequeue.shared.uploads import output_size
from stylequeue.web import create_app
from stylequeue.web.extensions import EXTENSION_KEY
from tests.services import free_port
from tests.web import images
from tests.web.helpers import (
    ALICE,
    ALICE_OWNER,
    count_jobs,
    error_of,
    load_job,
    submit,
    update_job,
    with_settings,
)


def broker_messages(redis_url: str) -> list[dict[str, Any]]:
    """The messages waiting in the Celery queue ``style`` (kombu's Redis list)."""
    client = redis.Redis.from_url(redis_url)
    return [json.loads(raw) for raw in client.lrange(QUEUE, 0, -1)]


def test_submit_stores_commits_and_enqueues(client, settings: Settings, storage: Storage) -> None:
    response = submit(client, styles=[images.jpeg(), images.png(color="navy")])

    assert response.status_code == 201, response.get_json()
    job = response.get_json()
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["iterations_total"] == 5 and job["iterations_done"] == 0
    assert (job["width"], job["height"]) == (48, 32)  # smaller than max_size: not scaled
    assert job["params"]["iterations"] == 5 and job["params"]["max_size"] == 64
    assert job["n_styles"] == 2
    assert job["enqueued_at"] is not None

    row = load_job(settings, job["id"])
    assert row.status == "queued" and row.owner == ALICE_OWNER
    assert row.enqueued_at is not None
    # the PNGs become lossless WebP, the JPEG is kept as sent
    assert row.input_keys == {
        "content": keys.content_key(job["id"], "webp"),
        "styles": [keys.style_key(job["id"], 0, "jpg"), keys.style_key(job["id"], 1, "webp")],
    }
    for key in [row.input_keys["content"], *row.input_keys["styles"]]:
        stored = images.open_stored(storage.get(key))
        assert stored.mode == "RGB"

    messages = broker_messages(settings.redis_url)
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == RUN_JOB
    args, _kwargs, _embed = json.loads(base64.b64decode(messages[0]["body"]))
    assert args == [job["id"]]


def test_content_is_scaled_to_max_size(client) -> None:
    response = submit(
        client, content=images.png((200, 100)), fields={"max_size": "50", "iterations": "3"}
    )
    assert response.status_code == 201
    assert (response.get_json()["width"], response.get_json()["height"]) == (50, 25)
    assert output_size(101, 33, 64) == (64, 21)


def test_preset_is_applied_and_overridden(client) -> None:
    response = submit(client, fields={"preset": "quick", "max_size": "64", "seed": "7"})
    assert response.status_code == 201, response.get_json()
    job = response.get_json()
    assert job["preset"] == "quick"
    assert job["params"]["iterations"] == 100 and job["params"]["seed"] == 7


class RecordingCelery:
    """Stands in for Celery: when the web sends, the row must already be committed."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.seen: list[tuple[str, str]] = []

    def send_task(self, name: str, args: list[str], **_options: Any) -> None:
        # A brand-new session on its own connection sees only committed rows.
        with get_sessionmaker(self.database_url)() as session:
            job = session.get(Job, args[0])
            assert job is not None, "enqueued before the row was committed"
            self.seen.append((name, job.status))


def test_row_is_committed_before_enqueue(settings: Settings) -> None:
    fake = RecordingCelery(settings.database_url)
    client = create_app(settings, celery=fake).test_client()  # type: ignore[arg-type]
    response = submit(client)
    assert response.status_code == 201
    assert fake.seen == [(RUN_JOB, "queued")]
    assert load_job(settings, response.get_json()["id"]).enqueued_at is not None


def test_an_owner_has_one_job_in_the_broker_at_a_time(client, settings: Settings) -> None:
    """Fair share: while the owner's first job waits in the broker, the second is committed
    but not sent (shared.jobs.top_up_owner); it is sent when the first is done."""
    first = submit(client).get_json()
    second = submit(client).get_json()
    assert first["enqueued_at"] is not None
    assert second["status"] == "queued" and second["enqueued_at"] is None
    assert [
        json.loads(base64.b64decode(m["body"]))[0] for m in broker_messages(settings.redis_url)
    ] == [[first["id"]]]


def test_canceling_the_waiting_job_sends_the_next(client, settings: Settings) -> None:
    first = submit(client).get_json()["id"]
    second = submit(client).get_json()["id"]
    assert load_job(settings, second).enqueued_at is None
    response = client.post(f"/api/v1/jobs/{first}/cancel", headers=ALICE)
    assert response.status_code == 202
    assert load_job(settings, second).enqueued_at is not None  # its slot was freed


def test_broker_down_keeps_the_job_queued(settings: Settings) -> None:
    dead = create_celery(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    client = create_app(settings, celery=dead).test_client()
    response = submit(client)
    assert response.status_code == 201, response.get_json()
    job = response.get_json()
    assert job["status"] == "queued" and job["enqueued_at"] is None
    row = load_job(settings, job["id"])
    assert row.status == "queued" and row.enqueued_at is None  # the sweeper's cue
    assert broker_messages(settings.redis_url) == []


class FailingStorage:
    """Takes ``ok`` puts, then fails like an unreachable object store."""

    def __init__(self, inner: Storage, ok: int) -> None:
        self.inner, self.ok = inner, ok

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.ok <= 0:
            raise OSError("object store unreachable")
        self.ok -= 1
        self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_storage_failure_cleans_up_and_answers_503(
    app: Flask, client, settings: Settings, storage: Storage
) -> None:
    svc = app.extensions[EXTENSION_KEY]
    app.extensions[EXTENSION_KEY] = replace(svc, storage=FailingStorage(storage, ok=2))
    response = submit(client, styles=[images.jpeg(), images.jpeg()])
    assert response.status_code == 503
    assert error_of(response)["code"] == "storage_unavailable"
    assert storage.list("jobs/") == []
    assert count_jobs(settings) == 0
    assert broker_messages(settings.redis_url) == []


def test_active_job_limit(settings: Settings) -> None:
    client = create_app(with_settings(settings, max_active_jobs=2)).test_client()
    first = submit(client).get_json()["id"]
    assert submit(client).status_code == 201
    third = submit(client)
    assert third.status_code == 429
    assert error_of(third)["code"] == "too_many_active_jobs"
    assert third.headers["Retry-After"]
    assert count_jobs(settings) == 2
    # Another owner is not affected; a finished job frees a slot.
    assert submit(client, {"Authorization": "Bearer bob-token"}).status_code == 201
    update_job(settings, first, status="succeeded")
    assert submit(client).status_code == 201


def test_concurrent_submits_never_pass_the_active_limit(
    settings: Settings, database_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two submits for the owner's last slot at once both pass the early check; the insert's
    own count decides: one 201, one 429 that leaves no row and no stored file."""
    from stylequeue.web import submission

    barrier = threading.Barrier(2)
    real = submission._store_inputs

    def store_then_wait(*args: Any) -> Any:
        stored = real(*args)
        # both are past check_active_limit and have stored their inputs
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)
        return stored

    monkeypatch.setattr(submission, "_store_inputs", store_then_wait)
    app = create_app(with_settings(settings, max_active_jobs=1))
    responses: list[Any] = []

    def submit_one() -> None:
        responses.append(submit(app.test_client()))

    threads = [threading.Thread(target=submit_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(r.status_code for r in responses) == [201, 429]
    (created,) = [r for r in responses if r.status_code == 201]
    (refused,) = [r for r in responses if r.status_code == 429]
    assert error_of(refused)["code"] == "too_many_active_jobs"
    assert count_jobs(settings) == 1
    job_id = created.get_json()["id"]
    stored = get_storage(settings).list("jobs/")
    assert stored and all(key.startswith(keys.job_prefix(job_id)) for key in stored)


@pytest.fixture
def s3_settings(settings: Settings, s3_bucket: str, s3_endpoint: str) -> Settings:
    return replace(settings, storage_url=f"s3://{s3_bucket}/sq", s3_endpoint_url=s3_endpoint)


def test_submit_and_result_on_s3(s3_settings: Settings) -> None:
    client = create_app(s3_settings).test_client()
    storage = get_storage(s3_settings)

    bad = submit(client, content=b"not an image")
    assert bad.status_code == 415
    assert storage.list("jobs/") == [] and count_jobs(s3_settings) == 0

    response = submit(client)
    assert response.status_code == 201, response.get_json()
    job_id = response.get_json()["id"]
    assert storage.list(f"jobs/{job_id}/") == [
        keys.content_key(job_id, "webp"),
        keys.style_key(job_id, 0, "jpg"),
    ]
    content = client.get(f"/api/v1/jobs/{job_id}/inputs/content", headers=ALICE)
    assert content.status_code == 200 and images.open_stored(content.data).size == (48, 32)

    assert client.get(f"/api/v1/jobs/{job_id}/result", headers=ALICE).status_code == 404
    result_png = images.png((48, 32), "red")
    key = keys.result_key(job_id, attempt=0)
    storage.put(key, result_png, "image/png")
    update_job(s3_settings, job_id, status="succeeded", result_key=key)
    result = client.get(f"/api/v1/jobs/{job_id}/result", headers=ALICE)
    assert result.status_code == 200
    assert result.mimetype == "image/png" and result.data == result_png


def test_large_inputs_are_stored_at_twice_the_output_limit(
    client, settings: Settings, storage: Storage
) -> None:
    """A big photo is kept at 2 x max_size (aspect kept), not at full resolution."""
    side = 2 * settings.limits.max_size
    response = submit(
        client, content=images.png((side * 3, side)), styles=[images.jpeg((side + 40, side * 2))]
    )
    assert response.status_code == 201, response.get_json()
    row = load_job(settings, response.get_json()["id"])
    assert images.open_stored(storage.get(row.input_keys["content"])).size == (side, side // 3)
    assert images.open_stored(storage.get(row.input_keys["styles"][0])).size == (
        round((side + 40) / 2),
        side,
    )
