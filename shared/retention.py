"""When a finished job goes: ``STYLEQUEUE_RETENTION_DAYS`` after it ended (0: never).

One rule, read by the sweeper that deletes expired jobs (:func:`expired`, a SQL condition)
and by the job JSON that says when (:func:`expires_at`). A job that has not ended never
expires: retention counts from ``finished_at``, which only an ending sets.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_

from stylequeue.shared.models import Job
from stylequeue.shared.states import TERMINAL, JobStatus

TERMINAL_VALUES = tuple(sorted(status.value for status in TERMINAL))  # for SQL ``IN``


def expires_at(job: Job, days: int) -> datetime | None:
    """When retention deletes ``job``; None while it is active or when jobs are kept
    forever (``days`` 0)."""
    if days <= 0 or not JobStatus(job.status).terminal:
        return None
    ended = job.finished_at or job.created_at  # every ending stamps finished_at
    return ended + timedelta(days=days)


def expired(now: datetime, days: int) -> ColumnElement[bool]:
    """The rows :func:`expires_at` puts at or before ``now`` (``days`` must be above 0)."""
    if days <= 0:
        raise ValueError("retention of 0 days keeps every job: nothing expires")
    cutoff = now - timedelta(days=days)
    return and_(
        Job.status.in_(TERMINAL_VALUES),
        or_(
            Job.finished_at <= cutoff,
            and_(Job.finished_at.is_(None), Job.created_at <= cutoff),
        ),
    )
