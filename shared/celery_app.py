"""The Celery app object: configuration and routes, no tasks.

The web enqueues by task name through this app (it never imports ``worker``); the worker
builds the same app and registers the tasks. Settings for long GPU jobs follow DESIGN.md:
acks late, reject on worker lost, prefetch 1, a visibility timeout above the longest job,
and a fast restore of unacked messages when a worker dies.
"""

from __future__ import annotations

import secrets
from typing import Any

from celery import Celery
from kombu import Queue

from stylequeue.shared.scheduling import INTERACTIVE, PRIORITY_SEP, PRIORITY_STEPS
from stylequeue.shared.settings import Settings, get_settings

QUEUE = "style"
RUN_JOB = "stylequeue.run_job"
SWEEP = "stylequeue.sweep_queued"
# Job webhooks go on a queue of their own, consumed by the light hooks worker
# (``celery -A stylequeue.hooks.app``); a GPU worker never takes it (worker/app.py).
WEBHOOKS_QUEUE = "webhooks"
DELIVER_WEBHOOK = "stylequeue.deliver_webhook"
SWEEP_INTERVAL_SECONDS = 30.0


def visibility_timeout(settings: Settings) -> int:
    """Seconds a message may stay unacked before the broker hands it out again: above the
    longest job. (A webhook retry waits unacked too: its back-off stays below this.)"""
    return settings.job_time_limit + 600


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.redis_url,
        "result_backend": None,  # job state lives in the database, not in Celery results
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": QUEUE,
        # kombu ships py.typed but leaves Queue.__init__ unannotated
        "task_queues": (Queue(QUEUE),),  # type: ignore[no-untyped-call]
        "task_routes": {
            RUN_JOB: {"queue": QUEUE},
            SWEEP: {"queue": QUEUE},
            DELIVER_WEBHOOK: {"queue": WEBHOOKS_QUEUE},
        },
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        # A broker blip must not kill an hour of GPU work: the task keeps running (the runner
        # rides out Redis outages), its per-job lock keeps a re-delivery from running it
        # twice, and a late re-delivery finds the job finished and does nothing.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_soft_time_limit": settings.job_soft_time_limit,
        "task_time_limit": settings.job_time_limit,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # A message not acked within this is handed to another worker: must exceed the
            # longest job, or a long job would run twice.
            "visibility_timeout": visibility_timeout(settings),
            # How often unacked messages older than visibility_timeout are restored (Redis
            # transport). A SIGKILLed worker's message thus comes back only after the
            # visibility timeout; its job is recovered sooner by the per-job lock expiring and
            # the sweeper re-queueing it (shared/sweeper.py). A killed pool child's message is
            # requeued at once (task_reject_on_worker_lost).
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            # One list per priority step; a worker takes the lowest step first (0 runs
            # first). Which job gets which step: shared/scheduling.py. The broker readers
            # (shared/broker.py, the sweeper) take the steps from here.
            "priority_steps": list(PRIORITY_STEPS),
            "sep": PRIORITY_SEP,
            "queue_order_strategy": "priority",
        },
        # Only for those who run `celery beat`; the default sweeper is its own process
        # (`stylequeue sweep --every 30`), which never waits behind a long job.
        "beat_schedule": {
            # Expires: a sweep stuck behind a long job is dropped, not run 100 times later.
            "sweep-queued": {
                "task": SWEEP,
                "schedule": SWEEP_INTERVAL_SECONDS,
                "options": {"expires": SWEEP_INTERVAL_SECONDS},
            },
        },
        "worker_hijack_root_logger": False,
        # SIGTERM (warm shutdown): worker.app tells the running job to checkpoint and go back
        # to the queue, which takes an iteration or so. A second signal (or Ctrl-C twice)
        # still gives the job this long before Celery cancels it (soft, then cold shutdown).
        "worker_soft_shutdown_timeout": float(settings.shutdown_grace_seconds),
    }


def create_celery(settings: Settings | None = None, name: str = "stylequeue") -> Celery:
    settings = settings or get_settings()
    app = Celery(name, set_as_current=False)
    app.config_from_object(celery_config(settings))
    return app


def enqueue_run_job(app: Celery, job_id: str, priority: int = INTERACTIVE) -> None:
    """Send ``run_job(job_id)`` by name at ``priority`` (kombu's Redis transport: lower runs
    first). Call only after the job row is committed."""
    app.send_task(
        RUN_JOB,
        args=[job_id],
        queue=QUEUE,
        priority=priority,
        task_id=f"run-{job_id}-{secrets.token_hex(4)}",  # one id per send: re-sends differ
        retry=True,
        retry_policy={
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
    )


def enqueue_webhook(app: Celery, message_id: str) -> None:
    """Send ``deliver_webhook(message_id)`` by name to the ``webhooks`` queue, once, without
    retrying: a broker that is down must not hold up the job that made the event (the
    sweeper sends what was not sent, shared/webhook_outbox.py). Call after the commit."""
    app.send_task(
        DELIVER_WEBHOOK,
        args=[message_id],
        queue=WEBHOOKS_QUEUE,
        task_id=f"hook-{message_id}-{secrets.token_hex(4)}",
        retry=False,
    )
