"""Webhooks through the API: the submit's checks (SSRF guard), the job JSON, the secret.

A webhook URL a server may not call is a 422 naming ``webhook`` that stores nothing; the
secret endpoint gives each owner their own ``whsec_`` secret, rotates it (CSRF-checked for
browsers) and never shows a deployment's secret.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from stylequeue.shared.db import session_scope
from stylequeue.shared.models import WebhookDelivery, WebhookMessage
from stylequeue.shared.settings import Settings, WebhookSettings
from stylequeue.shared.states import utcnow
from stylequeue.shared.storage import Storage
from stylequeue.shared.webhook_signing import secret_key
from stylequeue.web import create_app
from tests.web.helpers import ALICE, BOB, SMALL, count_jobs, error_of, load_job, submit

PUBLIC = "https://93.184.215.14/hook"  # an IP literal: no DNS needed to check it


def webhook_app(settings: Settings, **webhooks: Any) -> Flask:
    return create_app(replace(settings, webhooks=replace(settings.webhooks, **webhooks)))


def stored_objects(storage: Storage) -> list[str]:
    return storage.list("jobs/")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://127.0.0.1:8443/hook", "loopback"),
        ("https://localhost/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://10.0.0.7/hook", "private"),
        ("https://192.168.1.20/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://[fd00:ec2::254]/", "metadata"),
        ("https://100.100.100.200/", "metadata"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://2130706433/", "loopback"),  # 127.0.0.1 written as one number
        ("https://0.0.0.0/", "unspecified"),
        ("https://100.64.0.1/", "not a public address"),
        ("http://93.184.215.14/hook", "https"),  # plain http is not allowed here
        ("https://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_a_webhook_this_server_may_not_call_is_refused_and_stores_nothing(
    settings: Settings, storage: Storage, url: str, says: str
) -> None:
    client = webhook_app(settings).test_client()
    response = submit(client, fields={**SMALL, "webhook": url})
    assert response.status_code == 422, response.get_json()
    error = error_of(response)
    assert (error["code"], error["field"]) == ("webhook_refused", "webhook")
    assert says in error["message"], error["message"]
    assert count_jobs(settings) == 0
    assert stored_objects(storage) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"webhook": "ftp://93.184.215.14/"}, "webhook"),
        ({"webhook": "https://user:pw@93.184.215.14/"}, "webhook"),
        ({"webhook": PUBLIC, "webhook_events": "started,finished"}, "webhook_events"),
        ({"webhook_events": "completed"}, "webhook_events"),
    ],
)
def test_bad_webhook_fields_are_422_naming_them(
    client, settings: Settings, storage: Storage, fields: dict[str, str], field: str
) -> None:
    response = submit(client, fields={**SMALL, **fields})
    assert response.status_code == 422, response.get_json()
    error = error_of(response)
    assert (error["code"], error["field"]) == ("invalid_parameter", field)
    assert count_jobs(settings) == 0 and stored_objects(storage) == []


def test_a_public_https_webhook_is_kept_with_the_job(client, settings: Settings) -> None:
    response = submit(client, fields={**SMALL, "webhook": PUBLIC, "webhook_events": "completed"})
    assert response.status_code == 201, response.get_json()
    job = response.get_json()
    assert (job["webhook"], job["webhook_events"], job["webhook_deliveries"]) == (
        PUBLIC,
        ["completed"],
        [],
    )
    row = load_job(settings, job["id"])
    assert (row.webhook_url, row.webhook_events) == (PUBLIC, ["completed"])
    plain = submit(client).get_json()
    assert (plain["webhook"], plain["webhook_events"]) == (None, [])


def test_private_and_http_receivers_where_the_operator_allows_them(settings: Settings) -> None:
    client = webhook_app(settings, allow_private=True, allow_http=True).test_client()
    response = submit(client, fields={**SMALL, "webhook": "http://localhost:9/hook"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["webhook_events"] == ["started", "progress", "completed"]
    metadata = submit(client, fields={**SMALL, "webhook": "http://169.254.169.254/"})
    assert "metadata" in error_of(metadata)["message"]  # never, whatever is allowed
    only_private = webhook_app(settings, allow_private=True).test_client()
    refused = submit(only_private, fields={**SMALL, "webhook": "http://localhost:9/hook"})
    assert error_of(refused)["field"] == "webhook"


def test_the_job_json_lists_its_latest_delivery_attempts(client, settings: Settings) -> None:
    job_id = submit(client, fields={**SMALL, "webhook": PUBLIC}).get_json()["id"]
    now = utcnow()
    with session_scope(settings.database_url) as session:
        session.add(
            WebhookMessage(
                id="msg_1", job_id=job_id, event="started", created_at=now, job_row={}, attempts=2
            )
        )
        session.flush()
        for n, (status, error) in enumerate([(503, "answered 503"), (200, None)], start=1):
            session.add(
                WebhookDelivery(
                    message_id="msg_1",
                    job_id=job_id,
                    attempt=n,
                    attempted_at=now + timedelta(seconds=n),
                    status_code=status,
                    error=error,
                    next_attempt_at=now + timedelta(seconds=5) if n == 1 else None,
                )
            )
    job = client.get(f"/api/v1/jobs/{job_id}", headers=ALICE).get_json()
    first, second = job["webhook_deliveries"]
    assert first["event"] == second["event"] == "started"
    assert first["webhook_id"] == second["webhook_id"] == "msg_1"
    assert (first["attempt"], first["status_code"], first["error"]) == (1, 503, "answered 503")
    assert first["next_attempt_at"] is not None and first["time"] < second["time"]
    assert (second["attempt"], second["status_code"], second["next_attempt_at"]) == (2, 200, None)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=BOB).status_code == 404


def test_canceling_a_queued_job_records_its_completed_event(client, settings: Settings) -> None:
    job_id = submit(client, fields={**SMALL, "webhook": PUBLIC}).get_json()["id"]
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=ALICE).status_code == 202
    with session_scope(settings.database_url) as session:
        (message,) = session.scalars(select(WebhookMessage).where(WebhookMessage.job_id == job_id))
        assert message.event == "completed"
        assert message.job_row["status"] == "canceled"
        assert message.enqueued_at is not None  # sent to the webhooks queue after the commit
    # canceled again: nothing new happened, no second event
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=ALICE).status_code == 202
    with session_scope(settings.database_url) as session:
        assert len(list(session.scalars(select(WebhookMessage.id)))) == 1


# ---- the secret ----------------------------------------------------------------------------


def test_each_owner_gets_a_secret_of_their_own(client) -> None:
    alice = client.get("/api/v1/webhook-secret", headers=ALICE)
    assert alice.status_code == 200
    assert alice.headers["Cache-Control"] == "no-store"
    body = alice.get_json()
    assert body["scope"] == "owner" and body["previous_expires_at"] is None
    assert body["secret"].startswith("whsec_") and len(secret_key(body["secret"])) == 32
    again = client.get("/api/v1/webhook-secret", headers=ALICE).get_json()
    assert again["secret"] == body["secret"]  # made once, then the same answer
    bob = client.get("/api/v1/webhook-secret", headers=BOB).get_json()
    assert bob["secret"] != body["secret"]


def test_rotating_gives_a_new_secret_and_keeps_the_old_one_for_a_day(client) -> None:
    old = client.get("/api/v1/webhook-secret", headers=ALICE).get_json()["secret"]
    rotated = client.post("/api/v1/webhook-secret", headers=ALICE)
    assert rotated.status_code == 200
    new = rotated.get_json()
    assert new["secret"] != old and new["secret"].startswith("whsec_")
    assert new["previous_expires_at"] is not None
    assert client.get("/api/v1/webhook-secret", headers=ALICE).get_json()["secret"] == new["secret"]


def test_a_browser_needs_its_csrf_token_to_rotate(client) -> None:
    session = client.get("/api/v1/session").get_json()
    mine = client.get("/api/v1/webhook-secret").get_json()["secret"]
    refused = client.post("/api/v1/webhook-secret")
    assert refused.status_code == 403 and error_of(refused)["code"] == "csrf_failed"
    assert client.get("/api/v1/webhook-secret").get_json()["secret"] == mine
    done = client.post("/api/v1/webhook-secret", headers={"X-CSRF-Token": session["csrf_token"]})
    assert done.status_code == 200 and done.get_json()["secret"] != mine


def test_a_deployment_secret_is_never_shown_nor_rotated_here(settings: Settings) -> None:
    secret = "whsec_" + "A" * 43 + "="
    app = create_app(replace(settings, webhooks=WebhookSettings(secret=secret)))
    client = app.test_client()
    body = client.get("/api/v1/webhook-secret", headers=ALICE).get_json()
    assert body["scope"] == "deployment" and body["secret"] is None
    assert secret not in client.get("/api/v1/webhook-secret", headers=ALICE).get_data(True)
    refused = client.post("/api/v1/webhook-secret", headers=ALICE)
    assert refused.status_code == 409 and error_of(refused)["code"] == "deployment_secret"
