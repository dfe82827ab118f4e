"""Webhooks end to end: a real job tells a real receiver that it started, how it progresses
and that it completed.

The whole service on each backend: the web on a free port (werkzeug, in a thread), a real
``celery worker`` with the engine (random weights), the webhooks worker (its own Celery
process, where TensorFlow cannot be imported), a private Redis, and a receiver on loopback
(``STYLEQUEUE_WEBHOOK_ALLOW_PRIVATE`` and ``_ALLOW_HTTP``, as ``make run`` sets them). The
receiver checks every signature with the ``standardwebhooks`` reference library, under the
secret the API gave the job's owner.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests

from stylequeue.shared.settings import WebhookSettings
from tests.hooks_process import HooksWorker
from tests.integration.conftest import (
    WAIT,
    Stack,
    build_settings,
    cookie_session,
    get_json,
    start_stack,
    submit,
    submit_ok,
    token_session,
    wait_for_status,
    wait_until_finished,
)
from tests.webhook_receiver import Answer, Received, Receiver

N = 12  # iterations of the watched job; a progress event with each row write (SECONDS=0)
HOOKS = WebhookSettings(
    allow_private=True,
    allow_http=True,
    progress_seconds=0,
    backoff_seconds=0.2,
    # long: were a job to wait on its receiver, a hanging one would hold it for minutes
    timeout_seconds=60,
)


@pytest.fixture(scope="module")
def stack(
    stack_db_url: str, module_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    client = redis.Redis.from_url(module_redis)
    client.flushdb()
    client.close()
    settings = build_settings(
        tmp_path_factory.mktemp("var"), stack_db_url, module_redis, webhooks=HOOKS
    )
    logs = tmp_path_factory.mktemp("logs")
    hooks = HooksWorker(settings, logs)
    hooks.start()
    try:
        yield from start_stack(settings, logs)
    finally:
        print(hooks.log_tail(200), file=sys.stderr)
        hooks.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().serving() as serving:
        yield serving


def secret_for(stack: Stack, session: requests.Session) -> str:
    body = get_json(session, stack.api("/webhook-secret"))
    assert body["scope"] == "owner" and body["secret"].startswith("whsec_")
    return str(body["secret"])


def events_of(requests_: list[Received], secret: str) -> list[dict[str, Any]]:
    return [Receiver.verified(r, secret) for r in requests_]


def has_event(event: str, secret: str) -> Any:
    return lambda got: any(body["event"] == event for body in events_of(got, secret))


def _all_delivered(stack: Stack, session: Any, job_id: str, receiver: Receiver) -> list[Received]:
    """What the receiver got once every message of the job was delivered: as many requests
    as the job JSON lists deliveries, and no more for a second."""
    deadline = time.monotonic() + WAIT
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        got = receiver.received()
        listed = get_json(session, stack.api(f"/jobs/{job_id}"))["webhook_deliveries"]
        if len(got) != seen:
            seen, since = len(got), time.monotonic()
        elif len(got) == len(listed) and time.monotonic() - since > 1.0:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{seen} requests, and still arriving, after {WAIT} s")


def test_a_job_tells_its_webhook_it_started_progressed_and_completed(
    stack: Stack, receiver: Receiver
) -> None:
    session = token_session("alice")
    secret = secret_for(stack, session)
    job = submit_ok(stack, session, iterations=N, max_size=48, webhook=receiver.url)
    assert job["webhook"] == receiver.url
    assert job["webhook_events"] == ["started", "progress", "completed"]
    done = wait_until_finished(stack, session, job["id"])
    assert done["status"] == "succeeded"

    receiver.wait_until(has_event("completed", secret), "the completed event")
    got = _all_delivered(stack, session, job["id"], receiver)  # four threads deliver
    m = len(got)  # started, a progress event per write of the row, completed
    bodies = events_of(got, secret)  # each signature checked by standardwebhooks
    kinds = sorted(b["event"] for b in bodies)
    assert m >= 3 and kinds == ["completed"] + ["progress"] * (m - 2) + ["started"]
    ids = {r.headers["webhook-id"] for r in got}
    assert len(ids) == m  # one message per event
    by_event = {b["event"]: b for b in bodies}
    started, completed = by_event["started"], by_event["completed"]
    assert (started["id"], started["status"], started["attempts"]) == (job["id"], "running", 1)
    progress = sorted(b["iterations_done"] for b in bodies if b["event"] == "progress")
    # the row at each event, not at delivery; the last written where the loop ended
    assert progress[0] >= 1 and progress[-1] == N
    assert completed["status"] == "succeeded" and completed["terminal"] is True
    assert completed["result_available"] is True and completed["iterations_done"] == N
    # the body is the job JSON the API serves, plus the event's name
    now = get_json(session, stack.api(f"/jobs/{job['id']}"))
    assert set(completed) == set(now) | {"event"}
    for key in ("id", "status", "params", "best_loss", "best_iteration", "links", "webhook"):
        assert completed[key] == now[key], key
    assert stack.url + completed["links"]["result"] == stack.api(f"/jobs/{job['id']}/result")

    # every attempt is recorded and shown in the job JSON
    deadline = time.monotonic() + 60
    while True:
        deliveries = get_json(session, stack.api(f"/jobs/{job['id']}"))["webhook_deliveries"]
        if len(deliveries) == m or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(deliveries) == m
    assert {d["webhook_id"] for d in deliveries} == ids
    assert all((d["status_code"], d["attempt"], d["error"]) == (200, 1, None) for d in deliveries)
    assert sorted(d["event"] for d in deliveries) == kinds


def test_a_browsers_queued_job_canceled_tells_its_webhook(stack: Stack, receiver: Receiver) -> None:
    """A browser owner (cookie and CSRF token) with a secret of its own; its second job
    waits unsent behind its first (one slot per owner) and is canceled before it runs."""
    browser = cookie_session(stack)
    secret = secret_for(stack, browser)
    assert secret != secret_for(stack, token_session("alice"))
    running = submit_ok(stack, browser, iterations=4000, max_size=48)
    wait_for_status(stack, browser, running["id"], "running")
    waiting = submit_ok(
        stack, browser, iterations=5, max_size=48, webhook=receiver.url, webhook_events="completed"
    )
    assert waiting["status"] == "queued" and waiting["enqueued_at"] is None
    canceled = browser.post(stack.url + waiting["links"]["cancel"], timeout=30)
    assert canceled.status_code == 202, canceled.text
    (request,) = receiver.wait_for(1)
    body = Receiver.verified(request, secret)
    assert (body["event"], body["id"], body["status"]) == ("completed", waiting["id"], "canceled")
    browser.post(stack.url + running["links"]["cancel"], timeout=30)
    assert wait_until_finished(stack, browser, running["id"])["status"] == "canceled"
    with pytest.raises(AssertionError):
        receiver.wait_for(2, timeout=1)  # the first job has no webhook: nothing more


def test_cloud_metadata_is_refused_even_where_private_receivers_are_allowed(
    stack: Stack,
) -> None:
    session = token_session("bob")
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/"):
        response = submit(stack, session, iterations=5, max_size=48, webhook=url)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["field"] == "webhook" and "metadata" in error["message"]


def test_a_receiver_that_never_answers_does_not_hold_the_job(stack: Stack) -> None:
    """The runner only records and sends ids: with a receiver that holds every request
    longer than this test waits (and an attempt timeout of a minute), the job still ends
    as fast as ever. Were the runner to call the receiver, each event would hold it a
    minute. Last in the module: it leaves the webhooks worker's threads waiting."""
    with Receiver(Answer(hold=600)).serving() as hanging:
        session = token_session("alice")
        job = submit_ok(stack, session, iterations=N, max_size=48, webhook=hanging.url)
        done = wait_until_finished(stack, session, job["id"])
        assert done["status"] == "succeeded"
        hanging.wait_for(1)  # the started event reached it, and hangs there
        assert hanging.answered == 0
