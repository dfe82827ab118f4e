"""Progress: entries after an id from the Redis stream, or from the saved history when the
stream is gone or Redis cannot be reached."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import redis

from stylequeue.shared import keys
from stylequeue.shared.progress import ProgressStream, stream_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.storage import Storage
from stylequeue.web import create_app
from tests.services import free_port
from tests.web.helpers import ALICE, error_of, insert_job, update_job


def entry(i: int) -> dict[str, float]:
    return {"iteration": i, "loss": 100.0 / i, "content": 1.0, "style": 2.0, "tv": 0.5,
            "elapsed": 0.1 * i}  # fmt: skip


@pytest.fixture
def stream(settings: Settings) -> ProgressStream:
    return ProgressStream(redis.Redis.from_url(settings.redis_url), maxlen=settings.progress_maxlen)


def write_stream(stream: ProgressStream, job_id: str, n: int) -> list[str]:
    return [stream.append(job_id, entry(i)) for i in range(1, n + 1)]


def save_history(settings: Settings, storage: Storage, job_id: str, ids: list[str]) -> None:
    """What the worker saves when a job ends: the same entries, the same ids."""
    doc = {
        "job_id": job_id,
        "weights": "random",
        "params": {},
        "entries": [{"id": sid, **entry(i)} for i, sid in enumerate(ids, start=1)],
    }
    key = keys.history_key(job_id, attempt=0)
    storage.put(key, json.dumps(doc).encode(), "application/json")
    update_job(settings, job_id, status="succeeded", finished_at=utcnow(),
               history_key=key, iterations_done=len(ids))  # fmt: skip


def progress(client, job_id: str, **query: str):  # type: ignore[no-untyped-def]
    return client.get(f"/api/v1/jobs/{job_id}/progress", query_string=query, headers=ALICE)


def test_entries_after_an_id(client, settings: Settings, stream: ProgressStream) -> None:
    job_id = insert_job(settings, status="running", started_at=utcnow())
    ids = write_stream(stream, job_id, 5)

    everything = progress(client, job_id).get_json()
    assert everything["source"] == "stream" and everything["status"] == "running"
    assert [e["iteration"] for e in everything["entries"]] == [1, 2, 3, 4, 5]
    assert everything["entries"][0] == {"id": ids[0], **entry(1)}
    assert everything["last_id"] == ids[-1] and everything["more"] is False

    newer = progress(client, job_id, after=ids[1]).get_json()
    assert [e["id"] for e in newer["entries"]] == ids[2:]
    assert newer["last_id"] == ids[-1]
    idle = progress(client, job_id, after=ids[-1]).get_json()
    assert idle["entries"] == [] and idle["last_id"] == ids[-1]


def test_paging_with_limit(client, settings: Settings, stream: ProgressStream) -> None:
    job_id = insert_job(settings, status="running", started_at=utcnow())
    ids = write_stream(stream, job_id, 5)
    seen: list[str] = []
    after = ""
    for _ in range(5):
        page = progress(client, job_id, after=after, limit="2").get_json()
        seen += [e["id"] for e in page["entries"]]
        after = page["last_id"]
        if not page["more"]:
            break
    assert seen == ids


def test_no_entries_yet(client, settings: Settings) -> None:
    job_id = insert_job(settings)
    body = progress(client, job_id).get_json()
    assert body == {"entries": [], "last_id": None, "more": False, "source": "stream",
                    "status": "queued", "iterations_done": 0, "iterations_total": 5,
                    "tiles": None}  # fmt: skip


def test_non_finite_losses_are_null(client, settings: Settings, stream: ProgressStream) -> None:
    job_id = insert_job(settings, status="running", started_at=utcnow())
    stream.append(job_id, {**entry(1), "loss": float("nan"), "style": float("inf")})
    response = progress(client, job_id)
    assert b"NaN" not in response.data and b"Infinity" not in response.data
    first = response.get_json()["entries"][0]
    assert first["loss"] is None and first["style"] is None and first["content"] == 1.0


@pytest.mark.parametrize(
    "after",
    ["abc", "1-2-3", "-1", "12", "1-x", "$", "+", "(1-0",
     "1-0\n", "\u0661-0", "18446744073709551616-0"],  # newline, non-ASCII digit, > uint64
)  # fmt: skip
def test_after_is_validated(client, settings: Settings, after: str) -> None:
    job_id = insert_job(settings)
    response = progress(client, job_id, after=after)
    assert response.status_code == 400
    assert error_of(response)["field"] == "after"


# "\u00b2" (a superscript 2) and Arabic-Indic "10" are digits to str.isdigit() but no
# integer of the document (ASCII); the first was a 500
@pytest.mark.parametrize("limit", ["0", "1001", "x", "\u00b2", "\u0661\u0660", "+5", " 5"])
def test_limit_is_validated(client, settings: Settings, limit: str) -> None:
    response = progress(client, insert_job(settings), limit=limit)
    assert response.status_code == 400
    assert error_of(response)["field"] == "limit"


def test_history_after_the_stream_is_gone(
    client, settings: Settings, storage: Storage, stream: ProgressStream
) -> None:
    job_id = insert_job(settings, status="running", started_at=utcnow())
    ids = write_stream(stream, job_id, 4)
    save_history(settings, storage, job_id, ids)
    redis.Redis.from_url(settings.redis_url).flushdb()  # Redis forgot (or the stream expired)
    assert not redis.Redis.from_url(settings.redis_url).exists(stream_key(job_id))

    body = progress(client, job_id).get_json()
    assert body["source"] == "history" and body["status"] == "succeeded"
    assert [e["id"] for e in body["entries"]] == ids
    assert body["entries"][1] == {"id": ids[1], **entry(2)}
    # A dashboard that had seen the first two entries goes on from there.
    tail = progress(client, job_id, after=ids[1]).get_json()
    assert [e["id"] for e in tail["entries"]] == ids[2:] and tail["last_id"] == ids[-1]
    paged = progress(client, job_id, limit="3").get_json()
    assert len(paged["entries"]) == 3 and paged["more"] is True
    # The job record is still served too.
    assert client.get(f"/api/v1/jobs/{job_id}", headers=ALICE).get_json()["iterations_done"] == 4


def test_history_when_redis_is_unreachable(
    settings: Settings, storage: Storage, stream: ProgressStream
) -> None:
    done = insert_job(settings, status="running", started_at=utcnow())
    ids = write_stream(stream, done, 3)
    save_history(settings, storage, done, ids)
    running = insert_job(settings, status="running", started_at=utcnow())

    no_redis = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = create_app(no_redis).test_client()
    body = progress(client, done, after=ids[0]).get_json()
    assert body["source"] == "history"
    assert [e["id"] for e in body["entries"]] == ids[1:]

    unavailable = progress(client, running)
    assert unavailable.status_code == 503
    assert error_of(unavailable)["code"] == "progress_unavailable"
