"""Reading jobs: the job JSON, the paginated list, cancelling, and the images."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from stylequeue.shared import keys
from stylequeue.shared.jobs import DEFAULT_PER_PAGE
from stylequeue.shared.progress import cancel_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.storage import Storage
from stylequeue.web import create_app
from tests.services import free_port
from tests.web import images
from tests.web.helpers import ALICE, ALICE_OWNER, BOB, error_of, insert_job, load_job, submit
from tests.web.helpers import update_job as update

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JOB_KEYS = {
    "id", "status", "terminal", "params", "preset", "weights", "iterations_done",
    "iterations_total", "resumed_from", "iterations_computed", "best_loss", "best_iteration",
    "result_available", "error",
    "cancel_requested", "attempts", "preemptions", "resumes_at", "worker", "width", "height",
    "n_styles", "snapshots",
    "created_at", "enqueued_at", "started_at", "finished_at", "duration_seconds", "links",
    "expires_at",
    "webhook", "webhook_events", "webhook_deliveries",
}  # fmt: skip


def test_job_json(client, settings: Settings) -> None:
    job_id = submit(client).get_json()["id"]
    start = utcnow() - timedelta(seconds=10)
    update(settings, job_id, status="running", started_at=start, iterations_done=3,
           best_loss=float("nan"), best_iteration=2, snapshot_iterations=[2, 1], attempts=1,
           weights="random", worker="gpu-0")  # fmt: skip
    job = client.get(f"/api/v1/jobs/{job_id}", headers=ALICE).get_json()
    assert set(job) == JOB_KEYS
    assert (job["resumed_from"], job["iterations_computed"]) == (None, 0)
    update(settings, job_id, resumed_from=2, iterations_computed=5)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=ALICE).get_json()
    assert (job["resumed_from"], job["iterations_computed"]) == (2, 5)
    assert (job["preemptions"], job["resumes_at"]) == (0, None)  # running: nothing to resume
    update(settings, job_id, status="queued", preemptions=1, iterations_done=4,
           checkpoint_iteration=4)  # fmt: skip
    job = client.get(f"/api/v1/jobs/{job_id}", headers=ALICE).get_json()
    assert (job["preemptions"], job["resumes_at"]) == (1, 5)
    # re-queued after a crash: the dead runner reached 9, its newest checkpoint is at 6
    update(settings, job_id, iterations_done=9, checkpoint_iteration=6)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=ALICE).get_json()["resumes_at"] == 7
    update(settings, job_id, checkpoint_iteration=None)  # died before its first checkpoint
    assert client.get(f"/api/v1/jobs/{job_id}", headers=ALICE).get_json()["resumes_at"] == 1
    update(settings, job_id, status="running", iterations_done=3)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=ALICE).get_json()
    assert job["status"] == "running" and job["terminal"] is False
    assert job["iterations_done"] == 3 and job["best_iteration"] == 2
    assert job["best_loss"] is None  # NaN is not JSON
    assert job["snapshots"] == [1, 2]
    assert ISO_UTC.match(job["created_at"]) and ISO_UTC.match(job["started_at"])
    assert job["finished_at"] is None and job["duration_seconds"] >= 10
    base = f"/api/v1/jobs/{job_id}"
    assert job["links"] == {
        "self": base,
        "progress": f"{base}/progress",
        "result": f"{base}/result",
        "download": f"{base}/result?download=1",
        "snapshots": f"{base}/snapshots",
        "cancel": f"{base}/cancel",
        "dashboard": f"/jobs/{job_id}",
        "content": f"{base}/inputs/content",
        "styles": [f"{base}/inputs/style/0"],
        "thumbnail": f"{base}/snapshots/2?thumb=160",
    }


def test_list_is_newest_first_and_paginated(client, settings: Settings) -> None:
    now = utcnow()
    ids = [insert_job(settings, created_at=now - timedelta(minutes=i)) for i in range(5)]
    insert_job(settings, owner="api:bob")

    first = client.get("/api/v1/jobs?per_page=2", headers=ALICE).get_json()
    assert [j["id"] for j in first["jobs"]] == ids[:2]
    assert (first["page"], first["per_page"], first["total"]) == (1, 2, 5)
    assert first["next"] == "/api/v1/jobs?page=2&per_page=2" and first["prev"] is None
    second = client.get(first["next"], headers=ALICE).get_json()
    assert [j["id"] for j in second["jobs"]] == ids[2:4]
    third = client.get(second["next"], headers=ALICE).get_json()
    assert [j["id"] for j in third["jobs"]] == ids[4:] and third["next"] is None
    beyond = client.get("/api/v1/jobs?page=9", headers=ALICE).get_json()
    assert beyond["jobs"] == [] and beyond["total"] == 5
    default = client.get("/api/v1/jobs", headers=ALICE).get_json()
    assert default["per_page"] == 20 and len(default["jobs"]) == 5
    assert client.get("/api/v1/jobs", headers=BOB).get_json()["total"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "page=0", "page=-1", "page=x", "page=1000001", "per_page=0", "per_page=101",
        "per_page=2.5", "per_page=%C2%B2", "page=%D9%A3",  # "²" and Arabic-Indic 3: not 0-9
    ],
)  # fmt: skip
def test_list_rejects_bad_paging(client, query: str) -> None:
    response = client.get(f"/api/v1/jobs?{query}", headers=ALICE)
    assert response.status_code == 400
    assert error_of(response)["field"] == query.split("=")[0]


# ---- cancel -------------------------------------------------------------------------------


def flag_set(settings: Settings, job_id: str) -> bool:
    return bool(redis.Redis.from_url(settings.redis_url).exists(cancel_key(job_id)))


def test_cancel_queued_job(client, settings: Settings) -> None:
    job_id = submit(client).get_json()["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=ALICE)
    assert response.status_code == 202
    assert response.get_json()["status"] == "canceled"
    row = load_job(settings, job_id)
    assert row.status == "canceled" and row.finished_at is not None and row.cancel_requested
    assert flag_set(settings, job_id)  # a worker that took it just now stops too
    again = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=ALICE)
    assert again.status_code == 202 and again.get_json()["status"] == "canceled"


def test_cancel_running_job_is_a_request(client, settings: Settings) -> None:
    job_id = insert_job(settings, status="running", started_at=utcnow())
    for _ in range(2):  # idempotent
        response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=ALICE)
        assert response.status_code == 202
        job = response.get_json()
        assert job["status"] == "running" and job["cancel_requested"] is True
        assert flag_set(settings, job_id)
    assert load_job(settings, job_id).cancel_requested is True


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_cancel_finished_job_is_409(client, settings: Settings, status: str) -> None:
    job_id = insert_job(settings, status=status, finished_at=utcnow())
    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=ALICE)
    assert response.status_code == 409
    assert error_of(response)["code"] == "job_finished"
    assert load_job(settings, job_id).status == status
    assert not flag_set(settings, job_id)


def test_cancel_with_redis_down(settings: Settings) -> None:
    """The cancel is in the database either way; a running job's worker reads the Redis flag,
    so without Redis the answer is 503 (try again); a queued job is canceled all the same."""
    app = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    client = app.test_client()
    running = insert_job(settings, status="running", started_at=utcnow())
    response = client.post(f"/api/v1/jobs/{running}/cancel", headers=ALICE)
    assert response.status_code == 503 and error_of(response)["code"] == "redis_unavailable"
    assert load_job(settings, running).cancel_requested is True
    queued = insert_job(settings)
    response = client.post(f"/api/v1/jobs/{queued}/cancel", headers=ALICE)
    assert response.status_code == 202 and response.get_json()["status"] == "canceled"


# ---- the pages ----------------------------------------------------------------------------


def page_config(html: bytes) -> dict[str, Any]:
    found = re.search(rb'<script type="application/json" id="page-config">(.*?)</script>', html)
    assert found, html[:300]
    return json.loads(found.group(1))


def browser_with_a_job(app: Flask) -> tuple[FlaskClient, str]:
    browser = app.test_client()
    csrf = browser.get("/api/v1/session").get_json()["csrf_token"]
    response = submit(browser, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201
    return browser, response.get_json()["id"]


@pytest.mark.parametrize(
    ("query", "page", "per_page"),
    [
        ("", 1, DEFAULT_PER_PAGE),  # the API's default (the list page used to ask for 10)
        ("?page=3&per_page=100", 3, 100),
        ("?page=0&per_page=101", 1, DEFAULT_PER_PAGE),  # bad values: the defaults, no error
        ("?page=x&per_page=%C2%B2", 1, DEFAULT_PER_PAGE),
    ],
)
def test_jobs_page_pages_as_the_api(client, query: str, page: int, per_page: int) -> None:
    response = client.get(f"/jobs{query}")
    assert response.status_code == 200 and response.mimetype == "text/html"
    config = page_config(response.data)
    assert (config["page"], config["per_page"]) == (page, per_page)
    # What the list page asks the API for is always an answer, never a 400.
    api = client.get(f"{config['urls']['jobs']}?page={page}&per_page={per_page}")
    assert api.status_code == 200 and api.get_json()["per_page"] == per_page
    assert client.get(config["urls"]["jobs"]).get_json()["per_page"] == DEFAULT_PER_PAGE


def test_dashboard_is_the_owners_only(app: Flask, settings: Settings) -> None:
    browser, job_id = browser_with_a_job(app)
    mine = browser.get(f"/jobs/{job_id}")
    assert mine.status_code == 200 and mine.mimetype == "text/html"
    assert page_config(mine.data)["job"]["id"] == job_id

    stranger = app.test_client()
    stranger.get("/api/v1/session")  # a browser with an owner id of its own
    never_seen = app.test_client()  # and one without any
    for who in (stranger, never_seen):
        for path in (job_id, str(uuid.uuid4()), "not-a-uuid"):
            response = who.get(f"/jobs/{path}")
            assert response.status_code == 404 and response.mimetype == "text/html"
            assert b"No such job here" in response.data
    assert browser.get("/no-such-page").status_code == 404
    assert b"Page not found" in browser.get("/no-such-page").data


# ---- images -------------------------------------------------------------------------------


def test_result_before_and_after(client, settings: Settings, storage: Storage) -> None:
    job_id = submit(client).get_json()["id"]
    url = f"/api/v1/jobs/{job_id}/result"
    early = client.get(url, headers=ALICE)
    assert early.status_code == 404
    assert error_of(early)["code"] == "result_not_ready"
    assert "queued" in error_of(early)["message"]

    best = images.png((48, 32), "red")
    key = keys.result_key(job_id, attempt=0)
    storage.put(key, best, "image/png")
    update(settings, job_id, status="succeeded", finished_at=utcnow(),
           result_key=key, best_loss=12.5, best_iteration=4)  # fmt: skip
    response = client.get(url, headers=ALICE)
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.data == best
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "immutable" in response.headers["Cache-Control"]
    assert "private" in response.headers["Cache-Control"]
    assert "Content-Disposition" not in response.headers
    etag = response.headers["ETag"]
    cached = client.get(url, headers={**ALICE, "If-None-Match": etag})
    assert cached.status_code == 304 and cached.data == b""

    download = client.get(f"{url}?download=1", headers=ALICE)
    assert download.headers["Content-Disposition"] == (
        f"attachment; filename=stylequeue-{job_id}.png"
    )
    job = client.get(f"/api/v1/jobs/{job_id}", headers=ALICE).get_json()
    assert job["result_available"] is True and job["links"]["thumbnail"] == f"{url}?thumb=160"


def test_failed_job_without_result(client, settings: Settings) -> None:
    job_id = insert_job(settings, status="failed", error="out of memory", finished_at=utcnow())
    response = client.get(f"/api/v1/jobs/{job_id}/result", headers=ALICE)
    assert response.status_code == 404
    assert "failed" in error_of(response)["message"]


def test_snapshots(client, settings: Settings, storage: Storage) -> None:
    job_id = submit(client).get_json()["id"]
    base = f"/api/v1/jobs/{job_id}/snapshots"
    assert client.get(base, headers=ALICE).get_json() == {"snapshots": []}
    assert client.get(f"{base}/10", headers=ALICE).status_code == 404

    shots = {it: images.png((48, 32), color) for it, color in [(10, "red"), (20, "blue")]}
    for it, data in shots.items():
        storage.put(keys.snapshot_key(job_id, it, attempt=0), data, "image/png")
    update(settings, job_id, status="running", started_at=utcnow(), snapshot_iterations=[10, 20])
    listing = client.get(base, headers=ALICE).get_json()
    assert listing == {
        "snapshots": [
            {"iteration": 10, "url": f"{base}/10", "thumb_url": f"{base}/10?thumb=160"},
            {"iteration": 20, "url": f"{base}/20", "thumb_url": f"{base}/20?thumb=160"},
        ]
    }
    running = client.get(f"{base}/20", headers=ALICE)
    assert running.status_code == 200 and running.data == shots[20]
    assert "no-cache" in running.headers["Cache-Control"]  # a restart may rewrite it
    assert client.get(f"{base}/30", headers=ALICE).status_code == 404
    assert client.get(f"{base}/abc", headers=ALICE).status_code == 404

    update(settings, job_id, status="succeeded", finished_at=utcnow())
    done = client.get(f"{base}/10", headers=ALICE)
    assert done.data == shots[10] and "immutable" in done.headers["Cache-Control"]


def test_inputs(client) -> None:
    job_id = submit(client, styles=[images.jpeg(), images.png((30, 30))]).get_json()["id"]
    base = f"/api/v1/jobs/{job_id}/inputs"
    content = client.get(f"{base}/content", headers=ALICE)
    assert content.status_code == 200 and images.open_stored(content.data).size == (48, 32)
    assert content.mimetype == "image/webp"  # a PNG is kept as lossless WebP
    assert "immutable" in content.headers["Cache-Control"]
    first = client.get(f"{base}/style/0", headers=ALICE)
    assert first.mimetype == "image/jpeg" and first.data == images.jpeg()  # kept as sent
    second = client.get(f"{base}/style/1", headers=ALICE)
    assert images.open_stored(second.data).size == (30, 30)
    assert client.get(f"{base}/style/2", headers=ALICE).status_code == 404


def test_gets_change_nothing(client, settings: Settings) -> None:
    job_id = submit(client).get_json()["id"]
    before = load_job(settings, job_id)
    for suffix in ("", "/progress", "/result", "/snapshots", "/inputs/content"):
        client.get(f"/api/v1/jobs/{job_id}{suffix}", headers=ALICE)
    after = load_job(settings, job_id)
    columns = [c.key for c in type(before).__table__.columns]
    assert {c: getattr(before, c) for c in columns} == {c: getattr(after, c) for c in columns}
    assert after.owner == ALICE_OWNER
