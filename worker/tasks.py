"""Celery tasks, registered by name (the web sends them by name through ``shared``).

Thin wrappers: the work is in :mod:`worker.runner` and :mod:`shared.sweeper`, which take
explicit settings and know nothing of Celery requests.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Task, shared_task

from stylequeue.shared.celery_app import RUN_JOB, SWEEP
from stylequeue.shared.settings import Settings, get_settings

log = logging.getLogger(__name__)


@shared_task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self: Task, job_id: str) -> str:
    """Run one job to a final state. Idempotent: a duplicate or a job another live runner
    holds returns at once, so the message can always be acked."""
    from stylequeue.worker import runner

    node = getattr(self.request, "hostname", None) or socket.gethostname()
    settings = get_settings()
    outcome = runner.execute(job_id, settings, worker_name=f"{node}/{os.getpid()}", celery=self.app)
    if outcome.action is runner.Action.PREEMPTED:
        requeue_preempted(settings, self.app, job_id)
    top_up_after(settings, self.app, job_id)
    return outcome.action


def requeue_preempted(settings: Settings, app: Any, job_id: str) -> None:
    """A preempted job is ``queued`` again (committed) and its lock released: send a fresh
    message now, so another worker resumes it at once; this one is acked when we return.
    (Rejecting it with requeue would put the same message back too, but kombu's Redis
    transport restores a message to the head of its priority list, ahead of the interactive
    order ``enqueue_job`` computes; a fresh send takes the job's own place.) Best effort: if
    the broker refuses, the sweeper re-sends a queued row once its grace has passed."""
    from stylequeue.shared.db import get_sessionmaker
    from stylequeue.shared.jobs import enqueue_job

    try:
        enqueue_job(get_sessionmaker(settings.database_url), app, job_id)
    except Exception:
        log.warning("job %s: re-sending the preempted job failed", job_id, exc_info=True)


def top_up_after(settings: Settings, app: Any, job_id: str) -> None:
    """The job's owner may have room in the broker now (fair share): send their next jobs
    (``shared.jobs.top_up_owner``), before this message is acked and the worker takes the
    next one. Best effort: any failure is logged and left to the sweeper."""
    from stylequeue.shared.db import get_sessionmaker
    from stylequeue.shared.jobs import top_up_owner
    from stylequeue.shared.models import Job
    from stylequeue.shared.redis_client import redis_client

    try:
        sessions = get_sessionmaker(settings.database_url)
        with sessions() as session:
            job = session.get(Job, job_id)
            owner = job.owner if job is not None else None
        if owner is None:
            return
        client = redis_client(settings.redis_url)
        try:
            top_up_owner(sessions, app, owner, client, settings.owner_slots)
        finally:
            client.close()
    except Exception:  # never fail the task over it: the sweeper tops up too
        log.warning("job %s: topping up its owner's jobs failed", job_id, exc_info=True)


@shared_task(name=SWEEP, bind=True, ignore_result=True)
def sweep_queued(self: Task) -> dict[str, Any]:
    """Re-enqueue stuck ``queued`` rows, recover jobs of dead runners, remove expired jobs
    and purge removed ones (beat, every 30 s)."""
    from stylequeue.shared.sweeper import sweep

    report = sweep(get_settings(), self.app)
    return {
        "requeued": report.requeued,
        "recovered": report.recovered,
        "expired": report.expired,
        "purged": report.purged,
    }
