"""Rules about jobs that the web and the sweeper share, each written once.

- **Who sees a job**: only its owner. :func:`get_owned_job` answers ``None`` alike for a
  malformed id, an unknown id and someone else's job, so callers answer the same 404 for all
  three; :func:`owned_jobs_page` lists an owner's jobs, newest first.
- **Paging**: :data:`DEFAULT_PER_PAGE`, :data:`MAX_PER_PAGE` and :data:`MAX_PAGE` bound every
  jobs list (the API and the pages' list, which reads the API).
- **Sending a job to the workers**: :func:`enqueue_job` sends ``run_job`` by name and then
  stamps ``enqueued_at``; the submission and the sweeper both call it. The row must be
  committed first; :func:`enqueue_job` checks that it is (it reads the row in a session of
  its own) and sends nothing otherwise.
- **Fair share**: :func:`top_up_owner` keeps at most :data:`~.scheduling.OWNER_SLOTS` of
  an owner's jobs in the broker (sent and waiting, or running); the rest of the owner's
  queued jobs wait in the database, unsent, and are sent oldest first as slots free up (by
  the submit, the end of a job, and the sweeper).
- **An owner's active jobs**: :func:`count_active_jobs`; ``shared.quota`` counts them (and
  the other caps) and inserts a job atomically, so concurrent submits never exceed them.
- **Cancelling**: :func:`request_cancel` makes the state change and tells the worker, and
  says what happened; the API maps the answer to HTTP.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

import redis
from celery import Celery
from redis.exceptions import LockError
from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.orm import Session

from stylequeue.shared.celery_app import enqueue_run_job
from stylequeue.shared.models import Job
from stylequeue.shared.redis_keys import top_up_lock_key
from stylequeue.shared.scheduling import OWNER_SLOTS, job_pixels, job_priority
from stylequeue.shared.states import ACTIVE_VALUES, TERMINAL, JobStatus, transition, utcnow
from stylequeue.shared.webhook_outbox import record_change

log = logging.getLogger(__name__)

# ---- who sees a job -----------------------------------------------------------------------


def canonical_job_id(job_id: str) -> str | None:
    """The id as stored (lower-case hyphenated UUID), or None when it is not a UUID."""
    try:
        return str(uuid.UUID(job_id))
    except (ValueError, TypeError, AttributeError):
        return None


def get_owned_job(
    session: Session, job_id: str, owner: str | None, *, for_update: bool = False
) -> Job | None:
    """``owner``'s job ``job_id``, or None: a malformed id, an unknown id, someone else's job
    and a caller without an owner id (``owner`` None) all look the same.

    ``for_update`` locks the row (PostgreSQL; SQLite locks the whole database on write).
    """
    canonical = canonical_job_id(job_id)
    if canonical is None or owner is None:
        return None
    query = select(Job).where(Job.id == canonical, Job.owner == owner)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


# ---- an owner's active jobs ---------------------------------------------------------------


def count_active_jobs(session: Session, owner: str) -> int:
    """How many of ``owner``'s jobs are queued or running (:data:`~.states.ACTIVE`)."""
    return session.scalar(_active_count(owner)) or 0


def _active_count(owner: str) -> Select[int]:
    query = select(func.count()).select_from(Job)
    return query.where(Job.owner == owner, Job.status.in_(ACTIVE_VALUES))


# ---- paging -------------------------------------------------------------------------------

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class JobsPage:
    jobs: list[Job]
    page: int
    per_page: int
    total: int  # the owner's jobs in all

    @property
    def has_next(self) -> bool:
        return self.page * self.per_page < self.total

    @property
    def has_prev(self) -> bool:
        return self.page > 1


def owned_jobs_page(session: Session, owner: str | None, page: int, per_page: int) -> JobsPage:
    """Page ``page`` (from 1) of ``owner``'s jobs, newest first; empty for no owner.

    ``page`` and ``per_page`` must already be within ``1..MAX_PAGE`` / ``1..MAX_PER_PAGE``
    (the web checks them and answers 400 otherwise).
    """
    if not (1 <= page <= MAX_PAGE and 1 <= per_page <= MAX_PER_PAGE):
        raise ValueError(f"page {page} / per_page {per_page} out of range")
    if owner is None:
        return JobsPage([], page, per_page, 0)
    total = session.scalar(select(func.count()).select_from(Job).where(Job.owner == owner)) or 0
    jobs = list(
        session.scalars(
            select(Job)
            .where(Job.owner == owner)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
    )
    return JobsPage(jobs, page, per_page, total)


# ---- sending a job to the workers ---------------------------------------------------------


class EnqueueFailed(Exception):
    """The broker did not take the message; the row is unchanged (the sweeper retries)."""

    def __init__(self, job_id: str, cause: BaseException) -> None:
        super().__init__(f"enqueue {job_id}: {type(cause).__name__}: {cause}")
        self.job_id = job_id
        self.cause = cause


class JobNotCommitted(LookupError):
    """:func:`enqueue_job` found no committed row for the id: nothing was sent."""


def enqueue_job(sessions: Callable[[], Session], celery: Celery, job_id: str) -> datetime | None:
    """Send ``run_job(job_id)`` by name, then stamp ``enqueued_at``. Returns the stamp, or
    None when the row is no longer ``queued`` (canceled meanwhile, say): nothing is sent.

    The message's priority is :func:`send_priority`'s: the job's cost class, or interactive
    once a long job has waited long enough (shared/scheduling.py).

    ``sessions`` makes a new session (a ``sessionmaker``); the row is read in a session of
    its own, so a row the caller has not committed yet is not seen and
    :class:`JobNotCommitted` is raised before anything is sent: a worker never gets an id it
    cannot find.

    Raises :class:`EnqueueFailed` when the broker refuses the message; the row keeps its
    ``enqueued_at`` (NULL for a new job: the sweeper's cue). The stamp is written only while
    the job is queued or running (a fast worker may have taken it already), so a finished
    row is never touched. Database errors propagate; the message is sent by then, and a
    duplicate from a later sweep is harmless (``run_job`` ignores jobs already taken).
    """
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotCommitted(f"job {job_id} has no committed row; not enqueued")
        if job.status != JobStatus.QUEUED.value:
            return None
        priority = send_priority(job, utcnow())
    try:
        enqueue_run_job(celery, job_id, priority)
    except Exception as exc:  # kombu/redis connection errors vary by transport
        raise EnqueueFailed(job_id, exc) from exc
    stamp = utcnow()
    with sessions() as session:
        # Only this column, and only while active: the worker may be updating the row.
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(ACTIVE_VALUES))
            .values(enqueued_at=stamp)
        )
        session.commit()
    return stamp


def send_priority(job: Job, now: datetime) -> int:
    """The priority to send ``job`` at ``now`` (shared/scheduling.py)."""
    max_size = int(job.params.get("max_size") or 0) if isinstance(job.params, dict) else 0
    pixels = job_pixels(job.width, job.height, max_size)
    return job_priority(job.iterations_total, pixels, job.created_at, now)


# ---- fair share: a bounded number of each owner's jobs in the broker ------------------------

TOP_UP_LOCK_SECONDS = 10
TOP_UP_WAIT_SECONDS = 5


def in_broker(owner: str) -> Select[int]:
    """How many of ``owner``'s jobs are in the broker: queued and sent (``enqueued_at``
    set), or running (with acks late a running job's message is unacked in the broker)."""
    return (
        select(func.count())
        .select_from(Job)
        .where(
            Job.owner == owner,
            or_(
                Job.status == JobStatus.RUNNING.value,
                and_(Job.status == JobStatus.QUEUED.value, Job.enqueued_at.is_not(None)),
            ),
        )
    )


def oldest_unsent(owner: str) -> Select[str]:
    """``owner``'s queued jobs never sent (or held back by the bound), oldest first."""
    return (
        select(Job.id)
        .where(Job.owner == owner, Job.status == JobStatus.QUEUED.value, Job.enqueued_at.is_(None))
        .order_by(Job.created_at, Job.id)
    )


def top_up_owner(
    sessions: Callable[[], Session],
    celery: Celery,
    owner: str,
    lock_client: redis.Redis | None,
    slots: int | None = None,
) -> list[str]:
    """Send ``owner``'s oldest unsent queued jobs (:func:`enqueue_job`: committed rows only)
    while fewer than ``slots`` (default :data:`~.scheduling.OWNER_SLOTS`) of theirs are in
    the broker; returns the ids sent, oldest first.

    Why a bound: the broker is FIFO within a priority, so an owner who queued eight jobs
    would otherwise be eight messages ahead of the next owner's one. With one slot, another
    owner's job waits behind at most one of theirs.

    The count and the sends run under a short per-owner Redis lock (``lock_client``), so
    the submit, the end of a job and the sweeper never both see the last slot free. Without
    Redis (``lock_client`` None, or unreachable) it goes ahead unlocked: the broker is
    Redis too, so the send fails and the row stays for the sweeper. Raises
    :class:`EnqueueFailed` like :func:`enqueue_job` (what was sent before stays sent).
    """
    limit = OWNER_SLOTS if slots is None else slots
    lock = None
    if lock_client is not None:
        lock = lock_client.lock(
            top_up_lock_key(owner),
            timeout=TOP_UP_LOCK_SECONDS,
            blocking_timeout=TOP_UP_WAIT_SECONDS,
        )
        try:
            if not lock.acquire():
                log.warning("top-up of %s: its lock is held too long; the sweeper sends", owner)
                return []
        except redis.RedisError:
            lock = None
    try:
        return _top_up(sessions, celery, owner, limit)
    finally:
        if lock is not None:
            with contextlib.suppress(redis.RedisError, LockError):
                lock.release()


def _top_up(sessions: Callable[[], Session], celery: Celery, owner: str, limit: int) -> list[str]:
    sent: list[str] = []
    tried: set[str] = set()
    while True:
        with sessions() as session:
            if (session.scalar(in_broker(owner)) or 0) >= limit:
                return sent
            candidates = session.scalars(oldest_unsent(owner).limit(len(tried) + 1)).all()
        job_id = next((c for c in candidates if c not in tried), None)
        if job_id is None:
            return sent
        tried.add(job_id)
        try:
            stamp = enqueue_job(sessions, celery, job_id)
        except JobNotCommitted:
            continue  # deleted meanwhile
        if stamp is not None:
            sent.append(job_id)


# ---- cancelling ---------------------------------------------------------------------------


class CancelFlag(Protocol):
    """Where a worker looks for a cancel between iterations, beside the job's progress
    stream (``ProgressStream``)."""

    def request_cancel(self, job_id: str) -> None: ...

    def expire(self, job_id: str, seconds: int) -> None: ...


class CancelOutcome(StrEnum):
    NOT_FOUND = "not_found"  # no such job for this owner
    CANCELED = "canceled"  # it was queued: canceled now
    REQUESTED = "requested"  # it is running: its worker stops within ~0.1 s or an iteration
    ALREADY_CANCELED = "already_canceled"  # nothing more to do (a cancel is idempotent)
    FINISHED = "finished"  # it succeeded or failed: nothing to cancel


@dataclass(frozen=True)
class CancelResult:
    outcome: CancelOutcome
    job: Job | None  # as committed (None for NOT_FOUND)
    # False when the worker could not be told (Redis unreachable). For a running job the
    # cancel is then only in the database, which the worker reads less often.
    worker_told: bool = True
    # the ``completed`` webhook message of a queued job canceled here, for the caller to
    # send after the commit (shared.webhook_outbox.send); a running job's comes from its runner
    webhook_message: str | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome in (
            CancelOutcome.CANCELED,
            CancelOutcome.REQUESTED,
            CancelOutcome.ALREADY_CANCELED,
        )


def request_cancel(
    session: Session,
    job_id: str,
    owner: str | None,
    flag: CancelFlag,
    *,
    stream_ttl_seconds: int,
) -> CancelResult:
    """Cancel ``owner``'s job ``job_id``: a queued job is canceled at once, a running job is
    flagged (``cancel_requested``) for its worker; a canceled job stays as it is; a
    succeeded or failed one cannot be canceled.

    Commits ``session``. Then, for a job that was queued or running, sets the Redis cancel
    flag too (a worker may be starting the queued job right now); a Redis error there is
    reported as ``worker_told=False``, not raised: the database change stands. A queued job
    canceled here ended without a runner, so its progress stream (an earlier attempt's, when
    the sweeper re-queued it) is set to expire ``stream_ttl_seconds`` from now, as a runner
    does when it ends a job; a Redis error there is logged only.
    """
    job = get_owned_job(session, job_id, owner, for_update=True)
    if job is None:
        return CancelResult(CancelOutcome.NOT_FOUND, None)
    status = JobStatus(job.status)
    if status in TERMINAL:
        session.commit()  # nothing changed; let go of the row lock
        outcome = (
            CancelOutcome.ALREADY_CANCELED
            if status is JobStatus.CANCELED
            else CancelOutcome.FINISHED
        )
        return CancelResult(outcome, job)
    message = None
    if status is JobStatus.QUEUED:
        transition(job, JobStatus.CANCELED, cancel_requested=True)
        message = record_change(session, job)
        outcome = CancelOutcome.CANCELED
    else:
        job.cancel_requested = True
        outcome = CancelOutcome.REQUESTED
    session.commit()
    try:
        flag.request_cancel(job.id)
    except redis.RedisError:
        log.warning("cancel flag for job %s not set: Redis unreachable", job.id)
        return CancelResult(outcome, job, worker_told=False, webhook_message=message)
    if outcome is CancelOutcome.CANCELED:
        try:
            flag.expire(job.id, stream_ttl_seconds)
        except redis.RedisError as exc:
            log.warning("job %s: could not set its stream's expiry: %s", job.id, exc)
    return CancelResult(outcome, job, webhook_message=message)
