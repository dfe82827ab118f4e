"""A job's webhook in its JSON: the URL, the events asked for, the latest attempts.

``webhook_deliveries`` lists the last :data:`DELIVERIES_SHOWN` attempts, oldest first: when,
which event and message (``webhook_id``, the header the receiver saw), the attempt's number,
the receiver's status code (null: no HTTP answer, ``error`` says why) and when the next
attempt is due (null: delivered, or no more attempts). A job without a webhook costs no
query.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from stylequeue.shared.models import Job, WebhookDelivery, WebhookMessage
from stylequeue.web.extensions import services

DELIVERIES_SHOWN = 20


def delivery_json(delivery: WebhookDelivery, event: str) -> dict[str, Any]:
    from stylequeue.web.job_json import iso  # job_json imports this module

    return {
        "time": iso(delivery.attempted_at),
        "event": event,
        "webhook_id": delivery.message_id,
        "attempt": delivery.attempt,
        "status_code": delivery.status_code,
        "error": delivery.error,
        "next_attempt_at": iso(delivery.next_attempt_at),
    }


def webhook_json(job: Job) -> dict[str, Any]:
    if not job.webhook_url:
        return {"webhook": None, "webhook_events": [], "webhook_deliveries": []}
    query = (
        select(WebhookDelivery, WebhookMessage.event)
        .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
        .where(WebhookDelivery.job_id == job.id)
        .order_by(WebhookDelivery.attempted_at.desc(), WebhookDelivery.id.desc())
        .limit(DELIVERIES_SHOWN)
    )
    with services().db() as session:
        rows = [(d, str(event)) for d, event in session.execute(query).all()]
    return {
        "webhook": job.webhook_url,
        "webhook_events": list(job.webhook_events or []),
        "webhook_deliveries": [delivery_json(d, event) for d, event in reversed(rows)],
    }
