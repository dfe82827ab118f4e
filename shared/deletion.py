"""Deleting a job: gone at once for everyone who looks, then its files and stream, retried
until nothing is left. The API's ``DELETE`` and retention (the sweeper) both come here.

Two steps:

1. :func:`remove_row`: in one transaction the job's row goes and a :class:`JobDeletion`
   (the purge's to-do item, a tombstone of the id) takes its place, and the job's figures
   are added to :class:`RemovedJobTotals`. From that commit on, every path of the job is a
   404, the sweeper has nothing to send or recover (it reads rows), and a runner still on
   the job stops writing: it finds no row at its next fenced write (``worker.runner``).
2. :func:`purge`: under the job's Redis lock, the lock every runner holds for its whole
   attempt, so no runner writes while the files go (and a runner that takes the lock later
   finds no row and writes nothing): the progress stream and cancel flag are deleted, then
   everything under ``jobs/<id>/`` (inputs, every attempt's snapshots, result and history,
   checkpoints, cached thumbnails), then the prefix is listed again; only when it is empty
   does the to-do item go. A runner that holds the lock purges the job itself when it
   stops (``locked=True``); otherwise the API does at once, and the sweeper retries every
   item left (storage or Redis down, a runner that died holding the lock) until done.

Why the tombstone rather than deleting files first or the row alone: deleting files while
the row is still there shows a half-deleted job, and a failure halfway leaves it so;
deleting the row alone would leave files that nothing points at any more (the bucket would
have to be listed to find them). The to-do item is what makes "retried until nothing is
left" possible, and it is gone as soon as that is true.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import redis
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from stylequeue.shared import keys
from stylequeue.shared.jobs import get_owned_job
from stylequeue.shared.locks import JobLock
from stylequeue.shared.models import Job, JobDeletion, RemovedJobTotals
from stylequeue.shared.redis_keys import cancel_key, stream_key
from stylequeue.shared.retention import expired
from stylequeue.shared.storage import Storage

log = logging.getLogger("stylequeue.deletion")

MAX_ERROR_CHARS = 1000


class RemovalReason(StrEnum):
    DELETED = "deleted"  # by its owner (DELETE /api/v1/jobs/<id>, `stylequeue delete`)
    EXPIRED = "expired"  # by retention (STYLEQUEUE_RETENTION_DAYS after it ended)


# ---- step 1: the row goes, its tombstone comes ------------------------------------------------


@dataclass(frozen=True)
class Removed:
    """A job whose row was just removed (committed)."""

    job_id: str
    owner: str
    was_active: bool  # queued or running: a runner may still hold it, a slot is free now


def remove_row(session: Session, job: Job, reason: RemovalReason) -> Removed:
    """Replace ``job``'s row (read ``for_update``) by its to-do item and add its figures to
    the totals; the caller commits."""
    session.add(JobDeletion(job_id=job.id, owner=job.owner, reason=reason.value, tries=0))
    _add_to_totals(session, job, reason)
    removed = Removed(job.id, job.owner, not job.terminal)
    session.delete(job)
    return removed


def delete_owned_job(session: Session, job_id: str, owner: str | None) -> Removed | None:
    """Remove ``owner``'s job ``job_id`` (:func:`remove_row`) and commit; None, with nothing
    changed, for an id that is not ``owner``'s (missing, malformed, someone else's)."""
    job = get_owned_job(session, job_id, owner, for_update=True)
    if job is None:
        session.rollback()
        return None
    removed = remove_row(session, job, RemovalReason.DELETED)
    session.commit()
    return removed


def expire_finished(
    sessions: Callable[[], Session], now: datetime, days: int, limit: int
) -> list[str]:
    """Remove up to ``limit`` finished jobs that retention says are due (oldest ending
    first), in one transaction; their ids. Their files go by :func:`purge` after."""
    with sessions() as session:
        query = (
            select(Job)
            .where(expired(now, days))
            .order_by(Job.finished_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # a user deleting one now keeps it (PostgreSQL)
        )
        jobs = session.scalars(query).all()
        removed = [remove_row(session, job, RemovalReason.EXPIRED) for job in jobs]
        session.commit()
    return [r.job_id for r in removed]


def _add_to_totals(session: Session, job: Job, reason: RemovalReason) -> None:
    """One atomic upsert, so concurrent removals never lose a count."""
    preemptions = job.preemptions or 0
    crashes = max((job.attempts or 0) - 1 - preemptions, 0)  # as /metrics counts them
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(RemovedJobTotals).values(
        reason=reason.value, jobs=1, attempts=job.attempts or 0, crashes=crashes,
        preemptions=preemptions, checkpoints=job.checkpoints or 0, resumes=job.resumes or 0,
    )  # fmt: skip
    added = insert.excluded
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[RemovedJobTotals.reason],
            set_={
                "jobs": RemovedJobTotals.jobs + added.jobs,
                "attempts": RemovedJobTotals.attempts + added.attempts,
                "crashes": RemovedJobTotals.crashes + added.crashes,
                "preemptions": RemovedJobTotals.preemptions + added.preemptions,
                "checkpoints": RemovedJobTotals.checkpoints + added.checkpoints,
                "resumes": RemovedJobTotals.resumes + added.resumes,
            },
        )
    )


# ---- step 2: the files and the stream -------------------------------------------------------


class PurgeResult(StrEnum):
    PURGED = "purged"  # nothing of the job is left; its to-do item is gone
    BUSY = "busy"  # a runner holds the job's lock: it purges when it stops
    FAILED = "failed"  # storage, Redis or the database failed: the item stays for the sweeper


class PurgeIncomplete(RuntimeError):
    """Objects were still listed under the job's prefix after deleting it."""


def purge(
    sessions: Callable[[], Session],
    storage: Storage,
    client: redis.Redis,
    job_id: str,
    *,
    lock_ttl_seconds: int,
    locked: bool = False,
) -> PurgeResult:
    """Delete everything of the removed job ``job_id`` (module docstring), then its to-do
    item. Takes the job's lock for it, unless the caller holds it (``locked``: the runner).
    Never raises: a failure is recorded on the item (``tries``, ``last_error``) and left
    for the sweeper."""
    lock: JobLock | None = None
    try:
        if not locked:
            lock = JobLock(client, job_id, lock_ttl_seconds)
            if not lock.acquire():
                log.info("job %s: a runner holds its lock; it purges the job when it stops", job_id)
                return PurgeResult.BUSY
            lock.start_renewing()  # a large prefix on a slow store may take a while
        erase(storage, client, job_id)
        with sessions() as session:
            session.execute(delete(JobDeletion).where(JobDeletion.job_id == job_id))
            session.commit()
    except Exception as exc:  # storage and Redis errors vary by backend: all are retried
        log.warning("job %s: purge failed, the sweeper retries it: %s", job_id, _one_line(exc))
        _note_failure(sessions, job_id, exc)
        return PurgeResult.FAILED
    finally:
        if lock is not None:
            lock.release()
    log.info("job %s: purged (files, stream and row gone)", job_id)
    return PurgeResult.PURGED


def erase(storage: Storage, client: redis.Redis, job_id: str) -> None:
    """The job's stream and cancel flag, then every object under ``jobs/<id>/``; raises
    :class:`PurgeIncomplete` if the prefix still lists anything afterwards."""
    client.delete(stream_key(job_id), cancel_key(job_id))
    prefix = keys.job_prefix(job_id)
    storage.delete_prefix(prefix, unfinished=True)
    left = storage.list(prefix)
    if left:
        raise PurgeIncomplete(f"{len(left)} objects still under {prefix}, e.g. {left[0]}")


def _note_failure(sessions: Callable[[], Session], job_id: str, exc: BaseException) -> None:
    with contextlib.suppress(SQLAlchemyError), sessions() as session:
        session.execute(
            update(JobDeletion)
            .where(JobDeletion.job_id == job_id)
            .values(tries=JobDeletion.tries + 1, last_error=_one_line(exc))
        )
        session.commit()


def _one_line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


# ---- what the sweeper retries -----------------------------------------------------------------


def pending(sessions: Callable[[], Session], limit: int) -> list[str]:
    """Ids of removed jobs not purged yet: those that failed least often first, oldest
    first among equals, so one that keeps failing does not hold the others back."""
    with sessions() as session:
        return list(
            session.scalars(
                select(JobDeletion.job_id)
                .order_by(JobDeletion.tries, JobDeletion.requested_at, JobDeletion.job_id)
                .limit(limit)
            )
        )


def count_pending(sessions: Callable[[], Session]) -> int:
    """How many removed jobs are not purged yet."""
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(JobDeletion)) or 0
