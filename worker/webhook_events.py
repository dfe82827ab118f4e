"""An attempt's webhook events: recorded inside its fenced writes, sent after their commit.

The runner adds a message where it writes the change (``shared.webhook_outbox.record``:
started, completed, throttled progress) and calls :meth:`AttemptWebhooks.send` once the
transaction has committed. Sending is one ``send_task`` to the ``webhooks`` queue, never
retried here: a slow or dead receiver is the hooks worker's business, and a broker that
is down costs the job one refused send (the sweeper sends the message later).
"""

from __future__ import annotations

from celery import Celery

from stylequeue.shared.celery_app import create_celery
from stylequeue.shared.db import get_sessionmaker
from stylequeue.shared.models import Job
from stylequeue.shared.settings import Settings
from stylequeue.shared.webhook_outbox import PROGRESS, ProgressThrottle, send, wants


class AttemptWebhooks:
    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        self.settings = settings
        self._celery = celery
        self._own: Celery | None = None  # made here when the caller gave none; closed here
        self.pending: list[str] = []
        self.wants_progress = False
        self.throttle = ProgressThrottle(settings.webhooks.progress_seconds)

    def watch(self, job: Job) -> None:
        """The attempt runs ``job``: progress events are due only if it asked for them."""
        self.wants_progress = wants(job, PROGRESS)
        self.throttle.sent()  # the first one comes ``progress_seconds`` after the start

    def note(self, message_id: str | None) -> None:
        """A message recorded in the transaction being written (None: no event)."""
        if message_id is not None:
            self.pending.append(message_id)

    def progress_due(self) -> bool:
        return self.wants_progress and self.throttle.due()

    def progress_recorded(self) -> None:
        self.throttle.sent()

    def send(self) -> None:
        """After the commit: send what was recorded. (An id whose transaction rolled back
        names no message; its delivery finds none and does nothing.)"""
        ids, self.pending = self.pending, []
        if ids:
            send(get_sessionmaker(self.settings.database_url), self._app(), ids)

    def _app(self) -> Celery:
        if self._celery is not None:
            return self._celery
        if self._own is None:
            self._own = create_celery(self.settings)
        return self._own

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None
