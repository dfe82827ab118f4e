"""The webhooks worker's Celery app: ``celery -A stylequeue.hooks.app worker -Q webhooks
--pool threads --concurrency 8``.

Light: Flask and SQLAlchemy, no TensorFlow (the ``web`` extra is all it needs; a test
starts it where TensorFlow cannot be imported). Threads, since an attempt mostly waits on
a receiver; several receivers that hang cost a thread each for at most
``STYLEQUEUE_WEBHOOK_TIMEOUT_SECONDS``. The job limits do not apply here (a delivery is
bounded by its own timeout, and the threads pool has no time limits).
"""

from __future__ import annotations

from kombu import Queue

import stylequeue.hooks.tasks  # noqa: F401  (registers deliver_webhook)
from stylequeue.shared.celery_app import WEBHOOKS_QUEUE, create_celery

celery = create_celery(name="stylequeue-hooks")
celery.conf.update(
    task_queues=(Queue(WEBHOOKS_QUEUE),),  # type: ignore[no-untyped-call]
    task_default_queue=WEBHOOKS_QUEUE,
    task_soft_time_limit=None,
    task_time_limit=None,
)
