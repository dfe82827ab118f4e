"""``DELETE /api/v1/jobs/<id>`` and ``expires_at``: the owner's job goes with everything of
it, and afterwards every path of it answers as for a job that never existed.

Real Redis, SQLite and PostgreSQL, a local folder (moto's S3 in tests/shared/test_deletion.py
and tests/integration/test_delete.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from stylequeue.shared.db import session_scope
from stylequeue.shared.locks import JobLock
from stylequeue.shared.models import Job, JobDeletion
from stylequeue.shared.redis_keys import cancel_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.web import create_app
from tests.deletion_helpers import assert_nothing_left, everything, full_job
from tests.web.helpers import ALICE, ALICE_OWNER, BOB, error_of, load_job, update_job

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def job_paths(job_id: str) -> list[str]:
    """Every GET path of a job: the API's JSON and images (thumbnails too), and its page."""
    api = f"/api/v1/jobs/{job_id}"
    return [
        api, f"{api}/progress", f"{api}/progress?after=1-0", f"{api}/result",
        f"{api}/result?download=1", f"{api}/result?thumb=160", f"{api}/snapshots",
        f"{api}/snapshots/4", f"{api}/snapshots/4?thumb=96", f"{api}/inputs/content",
        f"{api}/inputs/content?thumb=160", f"{api}/inputs/style/0",
        f"{api}/inputs/style/0?thumb=320", f"/jobs/{job_id}",
    ]  # fmt: skip


def answers(client: FlaskClient, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    response = client.get(path, headers=headers)
    body = response.get_json() if response.is_json else response.get_data(as_text=True)
    return response.status_code, body


def test_the_owner_deletes_and_every_path_is_a_404(settings: Settings, client: FlaskClient) -> None:
    job = full_job(settings, owner=ALICE_OWNER, status="succeeded", finished_at=utcnow())
    for path in job_paths(job.id):  # all there before
        assert client.get(path, headers=ALICE).status_code == 200, path

    response = client.delete(f"/api/v1/jobs/{job.id}", headers=ALICE)
    assert response.status_code == 204 and response.get_data() == b""
    assert_nothing_left(settings, job.id)

    for path in job_paths(job.id):
        # what an id that never existed answers, byte for byte
        assert answers(client, path, ALICE) == answers(
            client, path.replace(job.id, UNKNOWN), ALICE
        ), path
        assert client.get(path, headers=ALICE).status_code == 404, path
    assert error_of(client.get(f"/api/v1/jobs/{job.id}", headers=ALICE))["code"] == "job_not_found"
    assert client.get("/api/v1/jobs", headers=ALICE).get_json()["jobs"] == []
    for method in ("delete", "post"):
        path = f"/api/v1/jobs/{job.id}" + ("/cancel" if method == "post" else "")
        assert getattr(client, method)(path, headers=ALICE).status_code == 404  # twice: 404


@pytest.mark.parametrize("job_id", ["theirs", UNKNOWN, "not-a-uuid"])
def test_anyone_else_gets_the_same_404_and_nothing_changes(
    settings: Settings, client: FlaskClient, job_id: str
) -> None:
    job = full_job(settings, owner=ALICE_OWNER, status="succeeded")
    before = everything(settings)
    target = job.id if job_id == "theirs" else job_id
    response = client.delete(f"/api/v1/jobs/{target}", headers=BOB)
    assert response.status_code == 404
    assert response.get_json() == client.delete(f"/api/v1/jobs/{UNKNOWN}", headers=BOB).get_json()
    assert load_job(settings, job.id).status == "succeeded"
    assert everything(settings) == before
    assert client.get(f"/api/v1/jobs/{job.id}/result", headers=ALICE).status_code == 200


def test_a_browser_session_needs_the_csrf_token(
    settings: Settings, app: Flask, client: FlaskClient
) -> None:
    owner = client.get("/api/v1/session").get_json()
    job = full_job(settings, owner=owner["owner"], status="failed")
    refused = client.delete(f"/api/v1/jobs/{job.id}")
    assert refused.status_code == 403 and error_of(refused)["code"] == "csrf_failed"
    wrong = client.delete(f"/api/v1/jobs/{job.id}", headers={"X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 403
    assert load_job(settings, job.id).status == "failed"  # still there, files and all
    assert any(job.id in key for key in everything(settings))
    done = client.delete(f"/api/v1/jobs/{job.id}", headers={"X-CSRF-Token": owner["csrf_token"]})
    assert done.status_code == 204
    assert_nothing_left(settings, job.id)
    # another browser's session cannot delete it either (a 404, as for anyone else)
    other = app.test_client()
    token = other.get("/api/v1/session").get_json()["csrf_token"]
    job2 = full_job(settings, owner=owner["owner"])
    refused = other.delete(f"/api/v1/jobs/{job2.id}", headers={"X-CSRF-Token": token})
    assert refused.status_code == 404


def test_a_running_job_is_stopped_and_purged_once_its_runner_lets_go(
    settings: Settings, client: FlaskClient
) -> None:
    """The runner holds the job's lock: the row goes at once, its worker is told (the cancel
    flag), and the files wait for the runner (which purges them itself when it stops; here it
    just lets go and the purge is retried)."""
    from stylequeue.shared.db import get_sessionmaker
    from stylequeue.shared.deletion import PurgeResult, purge
    from stylequeue.shared.storage import get_storage

    job = full_job(settings, owner=ALICE_OWNER, status="running", started_at=utcnow())
    r = redis.Redis.from_url(settings.redis_url)
    r.delete(cancel_key(job.id))
    lock = JobLock(r, job.id, ttl_seconds=30)
    assert lock.acquire()
    assert client.delete(f"/api/v1/jobs/{job.id}", headers=ALICE).status_code == 204
    assert client.get(f"/api/v1/jobs/{job.id}", headers=ALICE).status_code == 404
    assert r.get(cancel_key(job.id)) == b"1"  # what its runner reads each iteration
    assert any(job.id in key for key in everything(settings))  # not while it holds the lock
    lock.release()
    sessions = get_sessionmaker(settings.database_url)
    result = purge(sessions, get_storage(settings), r, job.id, lock_ttl_seconds=30)
    assert result is PurgeResult.PURGED
    r.close()
    assert_nothing_left(settings, job.id)


def test_deleting_a_queued_job_sends_the_owners_next_one(
    settings: Settings, client: FlaskClient
) -> None:
    """The per-owner bound (one in the broker): the deleted job held the slot."""
    a = full_job(settings, owner=ALICE_OWNER, enqueued_at=utcnow())  # in the broker
    b = full_job(settings, owner=ALICE_OWNER)  # waiting its turn, unsent
    assert load_job(settings, b.id).enqueued_at is None
    assert client.delete(f"/api/v1/jobs/{a.id}", headers=ALICE).status_code == 204
    assert load_job(settings, b.id).enqueued_at is not None


# ---- expires_at ------------------------------------------------------------------------------


def test_expires_at_says_when_retention_deletes_a_finished_job(
    settings: Settings, client: FlaskClient
) -> None:
    job = full_job(settings, owner=ALICE_OWNER)
    url = f"/api/v1/jobs/{job.id}"
    assert client.get(url, headers=ALICE).get_json()["expires_at"] is None  # queued
    update_job(settings, job.id, status="running", started_at=utcnow())
    assert client.get(url, headers=ALICE).get_json()["expires_at"] is None  # running
    ended = utcnow().replace(microsecond=250_000)
    update_job(settings, job.id, status="succeeded", finished_at=ended)
    data = client.get(url, headers=ALICE).get_json()
    expected = ended + timedelta(days=30)  # the default retention
    assert data["expires_at"] == expected.strftime("%Y-%m-%dT%H:%M:%S.250Z")
    listed = client.get("/api/v1/jobs", headers=ALICE).get_json()["jobs"][0]
    assert listed["expires_at"] == data["expires_at"]

    kept = create_app(replace(settings, retention_days=0)).test_client()
    assert kept.get(url, headers=ALICE).get_json()["expires_at"] is None
    week = create_app(replace(settings, retention_days=7)).test_client()
    assert (
        week.get(url, headers=ALICE)
        .get_json()["expires_at"]
        .startswith((ended + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S"))
    )


def test_the_dashboard_says_when_the_job_expires(settings: Settings, client: FlaskClient) -> None:
    job = full_job(settings, owner=ALICE_OWNER, status="canceled", finished_at=utcnow())
    html = client.get(f"/jobs/{job.id}", headers=ALICE).get_data(as_text=True)
    expires = client.get(f"/api/v1/jobs/{job.id}", headers=ALICE).get_json()["expires_at"]
    assert f'<time datetime="{expires}" id="expires-at">' in html
    assert 'id="delete"' in html and 'id="delete-dialog"' in html


# ---- a thumbnail made while the job is deleted -------------------------------------------------


def test_a_thumbnail_cached_after_the_purge_goes_too(
    settings: Settings, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thumbnail request found the job, then the job was deleted and purged while the
    thumbnail was being made: the cached copy it writes afterwards must not stay behind."""
    from stylequeue.web import media

    job = full_job(settings, owner=ALICE_OWNER, status="succeeded", finished_at=utcnow())
    real = media.make_thumbnail
    deleted: list[int] = []

    def slow_thumbnail(data: bytes, px: int, max_pixels: int) -> bytes:
        if not deleted:  # another request deletes the job meanwhile
            deleted.append(client.delete(f"/api/v1/jobs/{job.id}", headers=ALICE).status_code)
        return real(data, px, max_pixels)

    monkeypatch.setattr(media, "make_thumbnail", slow_thumbnail)
    response = client.get(f"/api/v1/jobs/{job.id}/result?thumb=96", headers=ALICE)
    assert deleted == [204] and response.status_code == 200  # it was the caller's job then
    assert_nothing_left(settings, job.id)


def test_metrics_count_what_was_removed(settings: Settings, client: FlaskClient) -> None:
    from tests.web.test_metrics import scrape, value

    job = full_job(
        settings, owner=ALICE_OWNER, status="failed", attempts=3, checkpoints=4, resumes=2
    )
    before = scrape(client)
    assert value(before, "stylequeue_jobs_removed_total", reason="deleted") == 0
    counters = ("attempts", "checkpoints", "resumes")
    totals = [value(before, f"stylequeue_job_{name}_total") for name in counters]
    assert totals == [3, 4, 2]
    assert client.delete(f"/api/v1/jobs/{job.id}", headers=ALICE).status_code == 204
    after = scrape(client)
    assert value(after, "stylequeue_jobs_removed_total", reason="deleted") == 1
    assert value(after, "stylequeue_jobs_removed_total", reason="expired") == 0
    assert value(after, "stylequeue_job_purges_pending") == 0
    # a counter never drops
    assert [value(after, f"stylequeue_job_{name}_total") for name in counters] == totals
    with session_scope(settings.database_url) as session:
        assert session.get(Job, job.id) is None and session.get(JobDeletion, job.id) is None


def test_with_redis_down_the_delete_holds_and_the_sweeper_finishes_it(
    settings: Settings, client: FlaskClient
) -> None:
    """Redis unreachable: the purge cannot take the job's lock, so it touches nothing (a
    runner might be writing); the row is gone all the same and the sweeper, once Redis is
    back, purges everything."""
    from stylequeue.shared.celery_app import create_celery
    from stylequeue.shared.sweeper import sweep
    from tests.services import free_port

    job = full_job(settings, owner=ALICE_OWNER, status="succeeded", finished_at=utcnow())
    before = [key for key in everything(settings) if job.id in key]
    down = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    response = down.test_client().delete(f"/api/v1/jobs/{job.id}", headers=ALICE)
    assert response.status_code == 204
    assert client.get(f"/api/v1/jobs/{job.id}", headers=ALICE).status_code == 404
    assert [key for key in everything(settings) if job.id in key] == before
    with session_scope(settings.database_url) as session:
        item = session.get(JobDeletion, job.id)
        assert item is not None and item.tries == 1 and "ConnectionError" in item.last_error
    app = create_celery(settings)
    report = sweep(settings, app)
    app.close()
    assert (report.purged, report.purge_pending) == (1, 0)
    assert_nothing_left(settings, job.id)
