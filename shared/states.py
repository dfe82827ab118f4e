"""Job states and the only place that moves a job between them.

queued -> running -> succeeded | failed | canceled. Besides: running -> queued when the
sweeper recovers a dead runner's job; running -> running when a re-delivered task restarts
it; queued -> canceled when cancelled before a worker took it; queued -> failed when the job
has lost too many runners (``MAX_ATTEMPTS``).

:data:`TERMINAL` is the one list of ended states: the job JSON carries it as ``terminal``
(web/job_json.py), and the CLI (``stylequeue submit``) and the pages' scripts read that field
rather than keep their own list. :data:`ACTIVE` is the rest, the states that count towards an
owner's active-job limit (``shared.jobs.count_active_jobs``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # models imports this module
    from stylequeue.shared.models import Job


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})
# Not ended yet: what counts towards an owner's active-job limit (shared.jobs).
ACTIVE = frozenset(JobStatus) - TERMINAL
ACTIVE_VALUES = tuple(sorted(status.value for status in ACTIVE))  # for SQL ``IN``

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.QUEUED,
         JobStatus.RUNNING}  # running -> running: a re-delivered task restarts the job
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}  # fmt: skip


class InvalidTransition(RuntimeError):
    def __init__(self, current: str, new: str) -> None:
        super().__init__(f"job cannot go from {current} to {new}")
        self.current = current
        self.new = new


def can_transition(current: str, new: str) -> bool:
    return JobStatus(new) in ALLOWED[JobStatus(current)]


def transition(job: Job, new: JobStatus, **fields: Any) -> None:
    """Move ``job`` (a models.Job) to ``new``, stamping times; raise if not allowed."""
    if not can_transition(job.status, new):
        raise InvalidTransition(job.status, new)
    now = utcnow()
    job.status = new.value
    if new is JobStatus.RUNNING:
        job.started_at = now
        job.finished_at = None
    elif new is JobStatus.QUEUED:
        job.started_at = None
    elif new in TERMINAL:
        job.finished_at = now
    for key, value in fields.items():
        setattr(job, key, value)


def utcnow() -> datetime:
    return datetime.now(UTC)
