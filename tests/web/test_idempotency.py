"""Idempotency-Key on POST /api/v1/jobs: a retry answers the job it made, once per owner
and key within 24 h; the same key with other inputs is a 422; concurrent retries make one
job, because the database refuses a second row (a unique index, not a lookup first)."""

from __future__ import annotations

import contextlib
import io
import threading
from datetime import timedelta
from typing import Any

import pytest
import requests

from stylequeue.shared import keys
from stylequeue.shared.idempotency import KEY_TTL
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.storage import get_storage
from stylequeue.web import create_app
from tests.web import images
from tests.web.helpers import (
    ALICE,
    BOB,
    count_jobs,
    error_of,
    load_job,
    submit,
    update_job,
    with_settings,
)
from tests.web.live import serve

KEY = "Idempotency-Key"


def keyed(key: str, who: dict[str, str] = ALICE) -> dict[str, str]:
    return {**who, KEY: key}


def stored_jobs(settings: Settings) -> set[str]:
    return {key.split("/")[1] for key in get_storage(settings).list("jobs/")}


def test_a_retry_answers_the_job_it_made(client, settings: Settings) -> None:
    first = submit(client, keyed("retry-1"))
    assert first.status_code == 201
    job = first.get_json()
    again = submit(client, keyed("retry-1"))
    assert again.status_code == 200
    assert again.get_json() == job  # nothing happened to it in between: the same body
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_jobs(settings) == 1
    assert stored_jobs(settings) == {job["id"]}
    assert load_job(settings, job["id"]).idempotency_key == "retry-1"


def test_a_retry_answers_the_job_as_it_is_now(client, settings: Settings) -> None:
    job_id = submit(client, keyed("k")).get_json()["id"]
    update_job(settings, job_id, status="running", iterations_done=3)
    again = submit(client, keyed("k"))
    assert again.status_code == 200
    assert (again.get_json()["id"], again.get_json()["iterations_done"]) == (job_id, 3)


def test_the_same_key_with_other_inputs_is_a_422_naming_the_header(
    client, settings: Settings
) -> None:
    job_id = submit(client, keyed("k")).get_json()["id"]
    for other in (
        submit(client, keyed("k"), fields={"iterations": "6", "max_size": "64"}),
        submit(client, keyed("k"), content=images.png(color="navy")),
        submit(client, keyed("k"), styles=[images.jpeg(), images.jpeg()]),
    ):
        assert other.status_code == 422
        error = error_of(other)
        assert (error["code"], error["field"]) == ("idempotency_key_reused", KEY)
        assert job_id in error["message"]
    assert count_jobs(settings) == 1
    assert stored_jobs(settings) == {job_id}


def test_keys_belong_to_their_owner(client, settings: Settings) -> None:
    mine = submit(client, keyed("shared")).get_json()["id"]
    theirs = submit(client, keyed("shared", BOB))
    assert theirs.status_code == 201 and theirs.get_json()["id"] != mine
    assert count_jobs(settings) == 2


def test_a_key_names_its_job_for_24_hours(client, settings: Settings) -> None:
    old = submit(client, keyed("daily")).get_json()["id"]
    update_job(settings, old, created_at=utcnow() - KEY_TTL - timedelta(minutes=1))
    new = submit(client, keyed("daily"), fields={"iterations": "7", "max_size": "64"})
    assert new.status_code == 201 and new.get_json()["id"] != old
    assert load_job(settings, old).idempotency_key is None  # released, the job kept
    assert load_job(settings, new.get_json()["id"]).idempotency_key == "daily"
    # within the window it holds: 23 h 59 min later the retry still answers the job
    update_job(settings, new.get_json()["id"], created_at=utcnow() - KEY_TTL + timedelta(minutes=1))
    replay = submit(client, keyed("daily"), fields={"iterations": "7", "max_size": "64"})
    assert replay.status_code == 200


@pytest.mark.parametrize("key", ["", "with space", "x" * 256, "caf\u00e9"])
def test_a_malformed_key_is_a_400_naming_the_header(client, settings: Settings, key: str) -> None:
    response = submit(client, keyed(key))
    assert response.status_code == 400
    assert error_of(response)["field"] == KEY
    assert count_jobs(settings) == 0 and stored_jobs(settings) == set()


def test_a_refused_request_does_not_take_the_key(client, settings: Settings) -> None:
    refused = submit(client, keyed("k"), fields={"iterations": "0"})
    assert refused.status_code == 422 and error_of(refused)["field"] == "iterations"
    assert submit(client, keyed("k")).status_code == 201  # the fixed request goes through


def test_a_retry_at_the_active_limit_still_answers_its_job(settings: Settings) -> None:
    client = create_app(with_settings(settings, max_active_jobs=1)).test_client()
    job_id = submit(client, keyed("k")).get_json()["id"]
    assert submit(client).status_code == 429  # a new job: no room
    again = submit(client, keyed("k"))
    assert again.status_code == 200 and again.get_json()["id"] == job_id


def test_the_unique_index_decides_when_the_lookup_missed(
    client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race, one step at a time: the second request's lookup ran before the first
    request's row existed (forced here), so it stores its inputs and inserts; the index
    refuses the row, its inputs are deleted and it answers the first request's job."""
    from stylequeue.web import idempotency

    job_id = submit(client, keyed("race")).get_json()["id"]
    real_find = idempotency.find_keyed_job
    lookups: list[str] = []

    def late_then_real(*args: Any, **kwargs: Any) -> Any:
        lookups.append("miss" if not lookups else "winner")
        return None if len(lookups) == 1 else real_find(*args, **kwargs)

    monkeypatch.setattr(idempotency, "find_keyed_job", late_then_real)
    again = submit(client, keyed("race"))
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] == job_id
    assert count_jobs(settings) == 1
    assert stored_jobs(settings) == {job_id}  # the loser's inputs are gone
    assert lookups == ["miss", "winner"]  # answered through the refused insert


def test_concurrent_identical_submits_make_one_job(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight identical requests at once, over HTTP, each past the lookup before any inserts
    (a barrier after storing the inputs): the unique index lets one row in; every request
    answers that job, one 201 and the rest 200, and only its inputs stay stored."""
    from stylequeue.web import submission

    clients = 8
    barrier = threading.Barrier(clients)
    real_store = submission._store_inputs

    def store_then_wait(*args: Any) -> Any:
        stored = real_store(*args)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=20)
        return stored

    monkeypatch.setattr(submission, "_store_inputs", store_then_wait)
    content, style = images.png(), images.jpeg()
    answers: list[requests.Response] = []
    lock = threading.Lock()

    with serve(create_app(settings)) as (base, _log):

        def post() -> None:
            files = [
                ("content", ("c.png", io.BytesIO(content), "image/png")),
                ("style", ("s.jpg", io.BytesIO(style), "image/jpeg")),
            ]
            response = requests.post(
                f"{base}/api/v1/jobs",
                headers=keyed("together"),
                files=files,
                data={"iterations": "5", "max_size": "64"},
                timeout=60,
            )
            with lock:
                answers.append(response)

        threads = [threading.Thread(target=post) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)

    assert sorted(a.status_code for a in answers) == [200] * (clients - 1) + [201], [
        a.text for a in answers
    ]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    (job_id,) = ids
    assert count_jobs(settings) == 1
    stored = get_storage(settings).list("jobs/")
    assert stored and all(key.startswith(keys.job_prefix(job_id)) for key in stored)
