"""Celery tasks, registered by name (the web sends them by name through ``shared``).

Thin wrappers: the work is in :mod:`worker.runner` and :mod:`shared.sweeper`, which take
explicit settings and know nothing of Celery requests.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import Task, shared_task

from stylequeue.shared.celery_app import RUN_JOB, SWEEP
from stylequeue.shared.settings import get_settings


@shared_task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self: Task, job_id: str) -> str:
    """Run one job to a final state. Idempotent: a duplicate or a job another live runner
    holds returns at once, so the message can always be acked."""
    from stylequeue.worker import runner

    node = getattr(self.request, "hostname", None) or socket.gethostname()
    outcome = runner.execute(job_id, get_settings(), worker_name=f"{node}/{os.getpid()}")
    return outcome.action


@shared_task(name=SWEEP, bind=True, ignore_result=True)
def sweep_queued(self: Task) -> dict[str, Any]:
    """Re-enqueue stuck ``queued`` rows and recover jobs of dead runners (beat, every 30 s)."""
    from stylequeue.shared.sweeper import sweep

    report = sweep(get_settings(), self.app)
    return {"requeued": report.requeued, "recovered": report.recovered}
