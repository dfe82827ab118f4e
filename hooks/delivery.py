"""One delivery attempt of a webhook message, recorded, and whether to try again.

An attempt: read the message (its body is rendered on the first attempt and kept, so every
retry sends the same bytes under the same ``webhook-id``), check the URL against this
server's rules again and resolve it (``shared.webhook_targets``), POST the signed body to
the checked address (``hooks.transport``), record what happened
(:class:`~stylequeue.shared.models.WebhookDelivery`) and decide:

- a 2xx answer: delivered;
- a 5xx, 408 or 429 answer, a timeout, a connection that failed, a host that does not
  resolve now: try again after an exponential back-off (``STYLEQUEUE_WEBHOOK_BACKOFF_SECONDS``
  doubled at each attempt, at most an hour, jittered; a 429's or 503's ``Retry-After`` is
  honoured within that), until ``STYLEQUEUE_WEBHOOK_RETRY_WINDOW_SECONDS`` (a day) after the
  event;
- any other answer (a 4xx, a redirect) or an address this server may not call: no retry.

No transaction is open while the receiver is called (a slow one holds no lock), and none of
this runs in a GPU worker: jobs only write the message and send its id.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from stylequeue.hooks.body import render
from stylequeue.hooks.transport import Answer, post
from stylequeue.shared.celery_app import visibility_timeout
from stylequeue.shared.db import get_sessionmaker
from stylequeue.shared.models import WebhookDelivery, WebhookMessage
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.webhook_secrets import signing_secrets
from stylequeue.shared.webhook_signing import webhook_headers
from stylequeue.shared.webhook_targets import TargetRefused, check_target

log = logging.getLogger("stylequeue.hooks")

MAX_BACKOFF_SECONDS = 3600.0
RESTORE_MARGIN_SECONDS = 600
RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx
MAX_ERROR_CHARS = 255


@dataclass(frozen=True)
class Result:
    """What an attempt did: ``delivered``, ``retry`` (in ``retry_in`` seconds), ``failed``
    (no more attempts), ``gone`` (no such message: its job was deleted) or ``done`` (a
    duplicate of a message already delivered or given up)."""

    outcome: str
    retry_in: float | None = None


@dataclass(frozen=True)
class _Prepared:
    message_id: str
    job_id: str
    event: str
    url: str
    body: bytes
    secrets: list[str]
    attempt: int
    created_at: datetime


def max_backoff(settings: Settings) -> float:
    """The longest wait between two attempts: an hour, and ten minutes less than the
    broker's visibility timeout (a retry waits unacked in the hooks worker until it is due;
    the broker must not hand it out a second time meanwhile)."""
    return float(min(MAX_BACKOFF_SECONDS, visibility_timeout(settings) - RESTORE_MARGIN_SECONDS))


def backoff(settings: Settings, attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds before the attempt after ``attempt`` (1+): the base doubled each time,
    jittered by +-20%, at most :func:`max_backoff`."""
    delay = settings.webhooks.backoff_seconds * 2.0 ** min(attempt - 1, 30)
    return min(max_backoff(settings), delay * (0.8 + 0.4 * rng()))


def retried(answer: Answer) -> bool:
    """Is this answer worth another attempt? No answer at all, a 5xx, 408 or 429."""
    if answer.status is None:
        return True
    return answer.status in RETRIED_STATUSES or 500 <= answer.status <= 599


def deliver(settings: Settings, message_id: str) -> Result:
    """One attempt at ``message_id``; never raises for the receiver's trouble."""
    prepared = _prepare(settings, message_id)
    if isinstance(prepared, Result):
        return prepared
    answer, may_retry = _call(settings, prepared)
    return _record(settings, prepared, answer, may_retry)


def _prepare(settings: Settings, message_id: str) -> _Prepared | Result:
    """Read the message, render its body once, count the attempt, pick the secrets."""
    with get_sessionmaker(settings.database_url)() as session:
        message = session.get(WebhookMessage, message_id, with_for_update=True)
        if message is None:
            log.info("webhook %s: no such message (its job was deleted?)", message_id)
            return Result("gone")
        if message.delivered_at is not None or message.failed_at is not None:
            return Result("done")
        if message.body is None:
            message.body = render(settings, message)
        message.enqueued_at = message.enqueued_at or utcnow()
        message.attempts += 1
        prepared = _Prepared(
            message_id=message.id,
            job_id=message.job_id,
            event=message.event,
            url=str(message.job_row.get("webhook_url") or ""),
            body=message.body.encode(),
            secrets=[],
            attempt=message.attempts,
            created_at=message.created_at,
        )
        owner = str(message.job_row["owner"])
        session.commit()
        secrets = signing_secrets(session, owner, settings.webhooks)
    return replace(prepared, secrets=secrets)


def _call(settings: Settings, prepared: _Prepared) -> tuple[Answer, bool]:
    """Check the target again (DNS may have changed since the submit), then POST."""
    try:
        target = check_target(prepared.url, settings.webhooks)
    except TargetRefused as exc:
        return Answer(None, f"refused: {exc.reason}"), exc.temporary
    headers = webhook_headers(
        prepared.secrets, prepared.message_id, int(time.time()), prepared.body
    )
    answer = post(target, prepared.body, headers, settings.webhooks.timeout_seconds)
    return answer, retried(answer)


def _describe(answer: Answer) -> str | None:
    status = answer.status
    if status is None:
        return answer.error
    if 200 <= status <= 299:
        return None
    if 300 <= status <= 399:
        return f"answered {status}: redirects are not followed"
    return f"answered {status}"


def _record(settings: Settings, prepared: _Prepared, answer: Answer, may_retry: bool) -> Result:
    now = utcnow()
    delivered = answer.status is not None and 200 <= answer.status <= 299
    error = _describe(answer)
    retry_in: float | None = None
    if not delivered and may_retry:
        retry_in = backoff(settings, prepared.attempt)
        if answer.retry_after is not None and answer.status in (429, 503):
            retry_in = max(retry_in, min(answer.retry_after, max_backoff(settings)))
        window = timedelta(seconds=settings.webhooks.retry_window_seconds)
        if now + timedelta(seconds=retry_in) > prepared.created_at + window:
            retry_in = None
            error = f"{error}; retry window over, giving up"
    elif not delivered:
        error = f"{error}; not retried"
    with get_sessionmaker(settings.database_url)() as session:
        message = session.get(WebhookMessage, prepared.message_id, with_for_update=True)
        if message is None:  # the job was deleted meanwhile, its messages with it
            return Result("gone")
        session.add(
            WebhookDelivery(
                message_id=prepared.message_id,
                job_id=prepared.job_id,
                attempt=prepared.attempt,
                attempted_at=now,
                status_code=answer.status,
                error=error[:MAX_ERROR_CHARS] if error else None,
                next_attempt_at=now + timedelta(seconds=retry_in) if retry_in is not None else None,
            )
        )
        if delivered:
            message.delivered_at = now
        elif retry_in is None:
            message.failed_at = now
        session.commit()
    log.info(
        "webhook %s (%s of job %s) attempt %d: %s%s",
        prepared.message_id, prepared.event, prepared.job_id, prepared.attempt,
        answer.status if answer.status is not None else "no answer",
        f", retry in {retry_in:.1f}s" if retry_in is not None else "",
    )  # fmt: skip
    if delivered:
        return Result("delivered")
    return Result("retry", retry_in) if retry_in is not None else Result("failed")
