"""A job's webhook events: recorded with the change that made them, sent after the commit.

The pattern is the jobs' own (commit, then enqueue; the sweeper sends what was not sent):

1. where a job starts (its first attempt), ends, or makes progress, the code that writes
   that change also adds a :class:`~stylequeue.shared.models.WebhookMessage` in the same
   transaction (:func:`record_change`, :func:`record`), so an event exists exactly when its
   change was committed (a fenced-out runner writes neither). The message keeps the job's
   row as it was then (:func:`row_snapshot`): the body shows the job at its event, however
   late it is delivered;
2. after the commit, the writer sends ``deliver_webhook(message id)`` to the ``webhooks``
   queue, once, without waiting on a broker that is down (:func:`send`): a job never waits
   on its webhook. The light hooks worker does the HTTP (``stylequeue.hooks``);
3. the sweeper sends the messages nobody sent (:func:`send_unsent`).

``progress`` is throttled per attempt by :class:`ProgressThrottle`
(``STYLEQUEUE_WEBHOOK_PROGRESS_SECONDS``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from stylequeue.shared.celery_app import enqueue_webhook
from stylequeue.shared.models import Job, UTCDateTime, WebhookMessage
from stylequeue.shared.params import WEBHOOK_EVENTS
from stylequeue.shared.states import JobStatus, utcnow

log = logging.getLogger(__name__)

STARTED, PROGRESS, COMPLETED = WEBHOOK_EVENTS
SEND_BATCH = 200


def new_message_id() -> str:
    """A message id as Standard Webhooks' examples spell them: ``msg_`` and random."""
    return "msg_" + secrets.token_hex(16)


def wants(job: Job, event: str) -> bool:
    """Does the job have a webhook that asked for ``event``?"""
    return bool(job.webhook_url) and event in (job.webhook_events or ())


def change_event(job: Job) -> str | None:
    """The event the job's state now makes: ``started`` when its first attempt began,
    ``completed`` once it has ended; None otherwise (queued, a later attempt)."""
    status = JobStatus(job.status)
    if status.terminal:
        return COMPLETED
    if status is JobStatus.RUNNING and job.attempts == 1:
        return STARTED
    return None


def record(session: Session, job: Job, event: str) -> str | None:
    """Add ``event``'s message for ``job`` to the session (committed with it); its id, or
    None when the job wants no such event."""
    if not wants(job, event):
        return None
    message = WebhookMessage(
        id=new_message_id(),
        job_id=job.id,
        event=event,
        created_at=utcnow(),
        job_row=row_snapshot(job),
        attempts=0,
    )
    session.add(message)
    return message.id


def record_change(session: Session, job: Job) -> str | None:
    """After ``states.transition``: record the event the new state makes, if any."""
    event = change_event(job)
    return record(session, job, event) if event is not None else None


# ---- the job's row, kept with the message --------------------------------------------------


def row_snapshot(job: Job) -> dict[str, Any]:
    """Every column of the row as JSON values (times as ISO strings)."""
    out: dict[str, Any] = {}
    for column in Job.__table__.columns:
        value = getattr(job, column.key)
        out[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def job_from_snapshot(row: dict[str, Any]) -> Job:
    """A detached :class:`Job` with the snapshot's values (columns added since it was taken
    keep their defaults)."""
    values: dict[str, Any] = {}
    for column in Job.__table__.columns:
        if column.key not in row:
            continue
        value = row[column.key]
        if isinstance(column.type, UTCDateTime) and isinstance(value, str):
            value = datetime.fromisoformat(value)
        values[column.key] = value
    return Job(**values)


# ---- sending --------------------------------------------------------------------------------


def send(
    sessions: Callable[[], Session], celery: Celery, message_ids: Iterable[str | None]
) -> list[str]:
    """Send these committed messages to the ``webhooks`` queue and stamp them sent; the
    ids sent. Never raises: what the broker or the database refused is logged, and the
    sweeper sends it later."""
    sent: list[str] = []
    for message_id in message_ids:
        if message_id is None:
            continue
        try:
            enqueue_webhook(celery, message_id)
        except Exception as exc:  # kombu's errors are many; none may stop a job
            log.warning("webhook %s not sent now (%s); the sweeper sends it", message_id, exc)
            continue
        sent.append(message_id)
    if sent:
        try:
            with sessions() as session:
                session.execute(
                    update(WebhookMessage)
                    .where(WebhookMessage.id.in_(sent), WebhookMessage.enqueued_at.is_(None))
                    .values(enqueued_at=utcnow())
                )
                session.commit()
        except Exception as exc:  # sent twice at worst; the delivery drops a duplicate
            log.warning("webhooks %s sent but not stamped: %s", sent, exc)
    return sent


def send_unsent(sessions: Callable[[], Session], celery: Celery, grace_seconds: int) -> list[str]:
    """The sweeper's part: send messages written more than ``grace_seconds`` ago that were
    never sent (their writer's send failed or it died after the commit), oldest first."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    with sessions() as session:
        ids = list(
            session.scalars(
                select(WebhookMessage.id)
                .where(WebhookMessage.enqueued_at.is_(None), WebhookMessage.created_at <= cutoff)
                .order_by(WebhookMessage.created_at)
                .limit(SEND_BATCH)
            )
        )
    return send(sessions, celery, ids)


class ProgressThrottle:
    """At most one ``progress`` event per ``seconds``, the first ``seconds`` after the
    attempt started (0: one per iteration, for tests)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.last = clock()

    def due(self) -> bool:
        return self.clock() - self.last >= self.seconds

    def sent(self) -> None:
        self.last = self.clock()
