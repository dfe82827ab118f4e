"""One delivery attempt against a real receiver on loopback (``hooks.delivery``).

In process, against the real database: the attempt reads the message, signs it, POSTs it
over a real socket, records the answer and says whether to try again. The receiver checks
the signatures with the ``standardwebhooks`` reference library. (The Celery task around it,
with real workers, is ``test_webhooks_worker.py``.)
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy import select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from stylequeue.hooks.delivery import backoff, deliver, max_backoff
from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job, WebhookDelivery, WebhookMessage, WebhookSecret
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import JobStatus, transition, utcnow
from stylequeue.shared.webhook_outbox import record_change
from stylequeue.shared.webhook_secrets import owner_secret, rotate_secret
from stylequeue.shared.webhook_signing import new_secret
from tests.factories import insert_job
from tests.services import free_port
from tests.webhook_receiver import Answer, Receiver

OWNER = "api:alice"


def message_for(settings: Settings, url: str, **job: Any) -> tuple[str, str]:
    """A job with a webhook to ``url``, canceled: its ``completed`` message (job id, id)."""
    job_id = insert_job(
        settings, OWNER, webhook_url=url, webhook_events=["completed"], attempts=0, **job
    )
    with session_scope(settings.database_url) as session:
        row = session.get(Job, job_id)
        assert row is not None
        transition(row, JobStatus.CANCELED, cancel_requested=True)
        message_id = record_change(session, row)
    assert message_id is not None
    return job_id, message_id


def secret_of(settings: Settings, owner: str = OWNER) -> str:
    with session_scope(settings.database_url) as session:
        return owner_secret(session, owner).secret


def attempts(settings: Settings, message_id: str) -> list[WebhookDelivery]:
    with session_scope(settings.database_url) as session:
        rows = list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.message_id == message_id)
                .order_by(WebhookDelivery.attempt)
            )
        )
        session.expunge_all()
        return rows


def message(settings: Settings, message_id: str) -> WebhookMessage:
    with session_scope(settings.database_url) as session:
        row = session.get(WebhookMessage, message_id)
        assert row is not None
        session.expunge(row)
        return row


# ---- delivered ------------------------------------------------------------------------------


def test_a_delivery_is_signed_as_standard_webhooks_says(
    hsettings: Settings, receiver: Receiver
) -> None:
    job_id, message_id = message_for(hsettings, receiver.url)
    assert deliver(hsettings, message_id).outcome == "delivered"
    (request,) = receiver.received()
    assert request.path == "/hook"
    assert request.headers["webhook-id"] == message_id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    body = Receiver.verified(request, secret_of(hsettings))  # the reference library
    assert body["event"] == "completed"
    assert (body["id"], body["status"], body["terminal"]) == (job_id, "canceled", True)
    assert body["links"]["self"] == f"/api/v1/jobs/{job_id}"  # the API's own job JSON
    assert body["webhook"] == receiver.url and body["webhook_events"] == ["completed"]
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)  # another owner's
    (attempt,) = attempts(hsettings, message_id)
    assert (attempt.attempt, attempt.status_code, attempt.error) == (1, 200, None)
    assert attempt.next_attempt_at is None
    assert message(hsettings, message_id).delivered_at is not None
    # delivered: a duplicate of the task sends nothing more
    assert deliver(hsettings, message_id).outcome == "done"
    assert len(receiver.received()) == 1


# ---- retried --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_5xx_408_and_429_are_retried_with_the_same_id_and_body(
    hsettings: Settings, receiver: Receiver, status: int
) -> None:
    _job_id, message_id = message_for(hsettings, receiver.url)
    receiver.answer(Answer(status))
    first = deliver(hsettings, message_id)
    assert first.outcome == "retry" and first.retry_in is not None and first.retry_in > 0
    failed = attempts(hsettings, message_id)[0]
    assert (failed.status_code, failed.error) == (status, f"answered {status}")
    assert failed.next_attempt_at is not None
    assert message(hsettings, message_id).failed_at is None
    assert deliver(hsettings, message_id).outcome == "delivered"
    one, two = receiver.received()
    assert one.headers["webhook-id"] == two.headers["webhook-id"] == message_id
    assert one.body == two.body  # rendered once, sent as is by every retry
    secret = secret_of(hsettings)
    assert Receiver.verified(one, secret) == Receiver.verified(two, secret)
    assert [(a.attempt, a.status_code) for a in attempts(hsettings, message_id)] == [
        (1, status),
        (2, 200),
    ]


def test_a_timeout_is_retried(with_webhooks: Callable[..., Settings], receiver: Receiver) -> None:
    settings = with_webhooks(timeout_seconds=0.5)
    _job_id, message_id = message_for(settings, receiver.url)
    receiver.answer(Answer(200, hold=30))  # answers long after the attempt's timeout
    result = deliver(settings, message_id)
    assert result.outcome == "retry"
    (attempt,) = attempts(settings, message_id)
    assert attempt.status_code is None and attempt.error == "timed out after 0.5 s"


def test_a_receiver_that_is_not_there_is_retried(hsettings: Settings) -> None:
    _job_id, message_id = message_for(hsettings, f"http://127.0.0.1:{free_port()}/hook")
    assert deliver(hsettings, message_id).outcome == "retry"
    (attempt,) = attempts(hsettings, message_id)
    assert attempt.status_code is None
    assert attempt.error is not None and "connection failed" in attempt.error


def test_retry_after_is_honoured_within_the_cap(hsettings: Settings, receiver: Receiver) -> None:
    _job_id, message_id = message_for(hsettings, receiver.url)
    receiver.answer(Answer(429, {"Retry-After": "120"}), Answer(503, {"Retry-After": "999999"}))
    assert deliver(hsettings, message_id).retry_in == 120.0
    assert deliver(hsettings, message_id).retry_in == max_backoff(hsettings)


def test_after_the_retry_window_a_delivery_is_given_up(
    with_webhooks: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = with_webhooks(retry_window_seconds=0)
    _job_id, message_id = message_for(settings, receiver.url)
    receiver.answer(Answer(500))
    assert deliver(settings, message_id).outcome == "failed"
    (attempt,) = attempts(settings, message_id)
    assert attempt.error == "answered 500; retry window over, giving up"
    assert attempt.next_attempt_at is None
    assert message(settings, message_id).failed_at is not None
    assert deliver(settings, message_id).outcome == "done"
    assert len(receiver.received()) == 1


def test_the_backoff_doubles_with_jitter_up_to_its_cap(hsettings: Settings) -> None:
    middle = [backoff(hsettings, n, lambda: 0.5) for n in (1, 2, 3, 4)]
    assert middle == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert backoff(hsettings, 1, lambda: 0.0) == pytest.approx(0.16)  # -20%
    assert backoff(hsettings, 1, lambda: 1.0) == pytest.approx(0.24)  # +20%
    assert backoff(hsettings, 40, lambda: 1.0) == max_backoff(hsettings) == 3600
    # a retry waits unacked in the hooks worker: below the broker's visibility timeout
    short = replace(hsettings, job_soft_time_limit=60, job_time_limit=100)
    assert max_backoff(short) == 100  # its visibility timeout is 700 s
    # about a day of retries with the defaults (30 s, doubled, at most an hour)
    default = replace(hsettings, webhooks=replace(hsettings.webhooks, backoff_seconds=30))
    waits = [backoff(default, n, lambda: 0.5) for n in range(1, 31)]
    assert 20 * 3600 < sum(waits[:29]) < 30 * 3600


# ---- not retried ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, "answered 400; not retried"),
        (401, "answered 401; not retried"),
        (404, "answered 404; not retried"),
        (410, "answered 410; not retried"),
        (302, "answered 302: redirects are not followed; not retried"),
    ],
)
def test_other_4xx_and_redirects_are_not_retried(
    hsettings: Settings, receiver: Receiver, status: int, error: str
) -> None:
    _job_id, message_id = message_for(hsettings, receiver.url)
    receiver.answer(Answer(status, {"Location": "http://127.0.0.1:1/elsewhere"}))
    assert deliver(hsettings, message_id).outcome == "failed"
    (attempt,) = attempts(hsettings, message_id)
    assert (attempt.status_code, attempt.error, attempt.next_attempt_at) == (status, error, None)
    assert message(hsettings, message_id).failed_at is not None
    assert deliver(hsettings, message_id).outcome == "done"
    assert len(receiver.received()) == 1


def test_a_deleted_jobs_messages_are_not_delivered(hsettings: Settings, receiver: Receiver) -> None:
    job_id, message_id = message_for(hsettings, receiver.url)
    with session_scope(hsettings.database_url) as session:
        session.delete(session.get(Job, job_id))
    assert deliver(hsettings, message_id).outcome == "gone"
    assert receiver.received() == []


# ---- secrets --------------------------------------------------------------------------------


def test_after_a_rotation_both_secrets_sign_for_a_while(
    hsettings: Settings, receiver: Receiver
) -> None:
    old = secret_of(hsettings)
    with session_scope(hsettings.database_url) as session:
        new = rotate_secret(session, OWNER).secret
    _job_id, message_id = message_for(hsettings, receiver.url)
    assert deliver(hsettings, message_id).outcome == "delivered"
    (request,) = receiver.received()
    Receiver.verified(request, old)  # a receiver not switched over yet
    Receiver.verified(request, new)  # and one that has
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    with session_scope(hsettings.database_url) as session:
        row = session.get(WebhookSecret, OWNER)
        assert row is not None
        row.previous_until = utcnow() - timedelta(seconds=1)  # the day is over
    _job_id, later = message_for(hsettings, receiver.url)
    assert deliver(hsettings, later).outcome == "delivered"
    last = receiver.received()[-1]
    Receiver.verified(last, new)
    with pytest.raises(WebhookVerificationError):
        Receiver.verified(last, old)


def test_the_deployment_secret_signs_when_the_operator_set_one(
    with_webhooks: Callable[..., Settings], receiver: Receiver
) -> None:
    deployment = new_secret()
    settings = with_webhooks(secret=deployment)
    _job_id, message_id = message_for(settings, receiver.url)
    assert deliver(settings, message_id).outcome == "delivered"
    (request,) = receiver.received()
    Receiver.verified(request, deployment)
    with session_scope(settings.database_url) as session:
        assert session.get(WebhookSecret, OWNER) is None  # no owner secret was needed


# ---- the SSRF guard at delivery: DNS rebinding, and the pinned address ----------------------


class Resolver:
    """A DNS whose answers the test sets (no DNS server can be run or changed here): names
    it knows answer the addresses given, in turn; anything else, IP literals included, goes
    to the real resolver."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = socket.getaddrinfo
        self.answers: dict[str, list[str]] = {}
        self.asked: list[str] = []
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in self.answers:
            self.asked.append(host)
            address = (
                self.answers[host].pop(0) if len(self.answers[host]) > 1 else self.answers[host][0]
            )
            return self.real(address, port, *args, **kwargs)
        return self.real(host, port, *args, **kwargs)


def test_a_name_that_rebinds_to_loopback_after_the_submit_is_refused_at_delivery(
    with_webhooks: Callable[..., Settings], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stylequeue.web import create_app
    from tests.web.helpers import ALICE, SMALL, submit

    settings = with_webhooks(allow_private=False)  # a public deployment (http allowed)
    resolver = Resolver(monkeypatch)
    url = f"http://rebind.test:{receiver.port}/hook"
    resolver.answers["rebind.test"] = ["93.184.215.14", "127.0.0.1"]  # public, then inside
    client = create_app(settings).test_client()
    created = submit(client, ALICE, fields={**SMALL, "webhook": url})
    assert created.status_code == 201, created.get_json()  # public at the submit
    job_id = created.get_json()["id"]
    client.post(f"/api/v1/jobs/{job_id}/cancel", headers=ALICE)
    with session_scope(settings.database_url) as session:
        (message_id,) = session.scalars(select(WebhookMessage.id))
    assert deliver(settings, message_id).outcome == "failed"  # loopback at the delivery
    assert receiver.received() == []
    (attempt,) = attempts(settings, message_id)
    assert attempt.status_code is None and attempt.error is not None
    assert attempt.error.startswith("refused: the host 'rebind.test' resolves to 127.0.0.1")


def test_the_connection_goes_to_the_address_that_was_checked(
    hsettings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = Resolver(monkeypatch)
    # checked: the receiver's address; any later lookup would get one where nothing listens
    resolver.answers["pinned.test"] = ["127.0.0.1", "127.0.0.2"]
    _job_id, message_id = message_for(hsettings, f"http://pinned.test:{receiver.port}/hook")
    assert deliver(hsettings, message_id).outcome == "delivered"
    assert resolver.asked == ["pinned.test"]  # one lookup: the check's
    (request,) = receiver.received()
    assert request.headers["host"] == f"pinned.test:{receiver.port}"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.parametrize(
    ("certified", "trusted", "failure"),
    [
        ("localhost", True, None),
        ("other.example", True, "doesn't match"),  # a certificate for another name
        ("localhost", False, "certificate verify failed"),  # from a CA nobody trusts
    ],
)
def test_https_is_verified_against_the_urls_host(
    with_webhooks: Callable[..., Settings],
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    certified: str,
    trusted: bool,
    failure: str | None,
) -> None:
    settings = with_webhooks(allow_http=False)
    ca_file = tmp_path / "ca.pem"
    (ca if trusted else trustme.CA()).cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the client trusts this CA only
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(certified).configure_cert(context)
    with Receiver().serving(context) as receiver:
        url = f"https://localhost:{receiver.port}/hook"
        _job_id, message_id = message_for(settings, url)
        result = deliver(settings, message_id)
        if failure is None:
            assert result.outcome == "delivered"
            (request,) = receiver.received()
            Receiver.verified(request, secret_of(settings))
            assert request.headers["host"] == f"localhost:{receiver.port}"
        else:
            assert result.outcome == "retry"
            (attempt,) = attempts(settings, message_id)
            assert attempt.error is not None and failure in attempt.error, attempt.error
            assert receiver.received() == []
