"""The webhooks worker's one task, registered by name (the senders use the name only)."""

from __future__ import annotations

from celery import Task, shared_task

from stylequeue.shared.celery_app import DELIVER_WEBHOOK
from stylequeue.shared.settings import get_settings


@shared_task(name=DELIVER_WEBHOOK, bind=True, acks_late=True, ignore_result=True)
def deliver_webhook(self: Task, message_id: str) -> str:
    """One attempt (``hooks.delivery``); a retry is Celery's own, after the back-off the
    attempt chose, as a new message with the same id (the message keeps its body and id)."""
    from stylequeue.hooks.delivery import deliver

    result = deliver(get_settings(), message_id)
    if result.retry_in is not None:
        raise self.retry(countdown=result.retry_in, max_retries=None)
    return result.outcome
