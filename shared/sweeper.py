"""The sweeper: nothing submitted is lost, whatever happened to the broker or a worker.

Three kinds of rows are (re-)sent to the broker:

1. ``queued`` rows sent longer than ``queued_grace_seconds`` ago whose message is no longer
   waiting in the broker (lost with a Redis restart, say). Rows whose message is still
   waiting are left alone, so a long backlog does not fill the queue with duplicates.
   ``queued`` rows never sent (``enqueued_at`` NULL: the broker was down at submit, or the
   per-owner bound held them back, shared/jobs.py ``top_up_owner``) are sent as their owner
   has room: each owner is topped up to the bound, owners whose oldest unsent job is oldest
   first.
2. ``running`` rows whose per-job lock is gone: the runner died (its lock stopped being
   renewed and expired). They go back to ``queued`` and are enqueued again; the next runner
   restarts the job from iteration 1.
3. ``queued`` long jobs that have waited past the aging threshold while their message waits
   at a long job's priority: sent again at the interactive priority (shared/scheduling.py),
   so a steady stream of small jobs cannot starve them. The old message stays; when a worker
   takes it, the job is running or finished and it is dropped.

Then what deleting asks for (shared/deletion.py):

4. finished jobs older than ``STYLEQUEUE_RETENTION_DAYS`` (shared/retention.py) are removed,
   at most :data:`EXPIRE_BATCH` a pass, oldest ending first;
5. removed jobs whose files or stream may still be there (deleted by their owner or
   expired, and not purged yet: storage or Redis was down, or a runner held the lock) are
   purged, at most :data:`PURGE_BATCH` a pass and for about :data:`PURGE_SECONDS`; a pass
   stops after :data:`PURGE_FAILURES` failures (storage is down: the next pass retries).

And webhook messages written but never sent to the ``webhooks`` queue (the broker was down
when the job made the event): shared/webhook_outbox.py.

Terminal rows are never touched but by retention. A duplicate delivery is harmless:
``run_job`` ignores terminal rows and jobs whose lock a live runner holds. Several sweepers
may run at once (beat, ``stylequeue sweep``, tests); a short Redis lock lets only one work
at a time.

Runs from the ``stylequeue.sweep_queued`` task (Celery beat, every 30 s) and from
``stylequeue sweep``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from celery import Celery
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from stylequeue.shared.broker import BrokerLayout, broker_layout, run_job_id
from stylequeue.shared.celery_app import QUEUE
from stylequeue.shared.db import get_sessionmaker, session_scope
from stylequeue.shared.deletion import (
    PurgeResult,
    count_pending,
    expire_finished,
    pending,
    purge,
)
from stylequeue.shared.jobs import EnqueueFailed, JobNotCommitted, enqueue_job, top_up_owner
from stylequeue.shared.locks import lock_exists, release_if_held
from stylequeue.shared.models import Job
from stylequeue.shared.redis_client import redis_client
from stylequeue.shared.redis_keys import SWEEP_LOCK_KEY
from stylequeue.shared.scheduling import (
    AGE_AFTER_SECONDS,
    INTERACTIVE,
    PRIORITY_SEP,
    PRIORITY_STEPS,
)
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import JobStatus, transition, utcnow
from stylequeue.shared.storage import get_storage
from stylequeue.shared.webhook_outbox import send_unsent

log = logging.getLogger("stylequeue.sweeper")

SWEEP_LOCK_SECONDS = 25
BATCH = 500
EXPIRE_BATCH = 100  # expired jobs removed per pass
PURGE_BATCH = 100  # removed jobs purged per pass, at most...
PURGE_SECONDS = 15.0  # ...and for about this long, within the sweep lock
PURGE_FAILURES = 3  # failed purges that end a pass (storage is down)


@dataclass
class SweepReport:
    requeued: int = 0  # queued rows sent to the broker again
    recovered: int = 0  # running rows of dead runners put back on the queue
    promoted: int = 0  # long jobs past the aging threshold sent again at high priority
    expired: int = 0  # finished jobs removed by retention (their files go with the purge)
    purged: int = 0  # removed jobs whose files and stream are now gone
    purge_pending: int = 0  # removed jobs left to purge after this pass (failed or busy)
    webhooks: int = 0  # webhook messages sent that their writer had not sent
    skipped: bool = False  # another sweep held the sweep lock
    errors: list[str] = field(default_factory=list)
    sent: set[str] = field(default_factory=set)  # job ids enqueued by this pass


def sweep(settings: Settings, celery_app: Celery) -> SweepReport:
    """One pass. Safe to call concurrently from anywhere; returns what it did."""
    client = redis_client(settings.redis_url)
    report = SweepReport()
    token = secrets.token_hex(8)
    try:
        if not client.set(SWEEP_LOCK_KEY, token, nx=True, ex=SWEEP_LOCK_SECONDS):
            report.skipped = True
            return report
    except redis.RedisError as exc:
        # Without Redis there is no broker to enqueue to either: nothing to do this time.
        report.errors.append(f"redis unavailable: {exc}")
        log.warning("sweep: redis unavailable: %s", exc)
        return report
    try:
        _recover_orphans(settings, celery_app, client, report)
        _requeue_stale(settings, celery_app, client, report)
        _promote_aged(settings, celery_app, client, report)
        _expire_finished(settings, report)
        _purge_removed(settings, client, report)
        report.webhooks = len(
            send_unsent(
                get_sessionmaker(settings.database_url),
                celery_app,
                settings.queued_grace_seconds,
            )
        )
    except redis.RedisError as exc:  # Redis went away mid-pass: the next pass carries on
        report.errors.append(f"redis unavailable: {exc}")
    except SQLAlchemyError as exc:  # so did the database: same, never kill the sweep loop
        report.errors.append(f"database unavailable: {type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(redis.RedisError):  # else it expires on its own
            release_if_held(client, SWEEP_LOCK_KEY, token)
        client.close()
    if report.requeued or report.recovered or report.promoted or report.webhooks or report.errors:
        log.info(
            "sweep: re-enqueued %d queued, recovered %d orphaned, promoted %d aged, "
            "sent %d webhooks%s",
            report.requeued,
            report.recovered,
            report.promoted,
            report.webhooks,
            f", errors: {'; '.join(report.errors)}" if report.errors else "",
        )
    if report.expired or report.purged or report.purge_pending:
        log.info(
            "sweep: removed %d jobs past the retention of %d days, purged %d removed jobs "
            "(%d left to purge)",
            report.expired,
            settings.retention_days,
            report.purged,
            report.purge_pending,
        )
    return report


# ---- deleting: retention, and purges left to do -----------------------------------------------


def _expire_finished(settings: Settings, report: SweepReport) -> None:
    """Finished jobs past the retention lose their row now (their purge follows)."""
    if settings.retention_days <= 0:
        return  # kept forever
    sessions = get_sessionmaker(settings.database_url)
    removed = expire_finished(sessions, utcnow(), settings.retention_days, EXPIRE_BATCH)
    report.expired += len(removed)


def _purge_removed(settings: Settings, client: redis.Redis, report: SweepReport) -> None:
    """Removed jobs not purged yet (deletion.pending): their files and stream go."""
    sessions = get_sessionmaker(settings.database_url)
    todo = pending(sessions, PURGE_BATCH)
    if not todo:
        return
    try:
        storage = get_storage(settings)
    except Exception as exc:  # a store that cannot even be set up (boto3 missing, say)
        report.errors.append(f"storage unavailable: {type(exc).__name__}: {exc}")
        report.purge_pending = len(todo)
        return
    failures = 0
    until = time.monotonic() + PURGE_SECONDS
    for job_id in todo:
        if failures >= PURGE_FAILURES or time.monotonic() > until:
            break
        result = purge(
            sessions, storage, client, job_id, lock_ttl_seconds=settings.lock_ttl_seconds
        )
        if result is PurgeResult.PURGED:
            report.purged += 1
        elif result is PurgeResult.FAILED:
            failures += 1
            report.errors.append(f"purge of job {job_id} failed (retried next pass)")
    report.purge_pending = count_pending(sessions)


# ---- running rows whose runner died --------------------------------------------------------


def _recover_orphans(
    settings: Settings, app: Celery, client: redis.Redis, report: SweepReport
) -> None:
    with session_scope(settings.database_url) as session:
        running = session.scalars(
            select(Job.id).where(Job.status == JobStatus.RUNNING.value).limit(BATCH)
        ).all()
    for job_id in running:
        if lock_exists(client, job_id):
            continue
        with session_scope(settings.database_url) as session:
            job = session.get(Job, job_id, with_for_update=True)
            # Re-read under the row lock and re-check the job lock: the runner may have just
            # finished (it releases the lock only after committing the final state) or a new
            # runner may have just started.
            if job is None or job.status != JobStatus.RUNNING.value:
                continue
            if lock_exists(client, job_id):
                continue
            log.warning(
                "sweep: job %s was running on %s but its lock is gone; re-queueing",
                job_id,
                job.worker,
            )
            transition(job, JobStatus.QUEUED, enqueued_at=None)
        report.recovered += 1
        if not _send(settings, app, job_id, report):
            return  # the row stays queued with enqueued_at NULL; the next sweep sends it


# ---- queued rows never sent, or whose message is gone ---------------------------------------


def _requeue_stale(
    settings: Settings, app: Celery, client: redis.Redis, report: SweepReport
) -> None:
    _resend_lost(settings, app, client, report)
    _top_up_owners(settings, app, client, report)


def _resend_lost(settings: Settings, app: Celery, client: redis.Redis, report: SweepReport) -> None:
    """Rows sent longer than the grace ago whose message is no longer waiting."""
    cutoff = utcnow() - timedelta(seconds=settings.queued_grace_seconds)
    with session_scope(settings.database_url) as session:
        stale = session.scalars(
            select(Job.id)
            .where(
                Job.status == JobStatus.QUEUED.value,
                Job.enqueued_at.is_not(None),
                Job.enqueued_at <= cutoff,
            )
            .order_by(Job.created_at)
            .limit(BATCH)
        ).all()
    if not stale:
        return
    waiting = pending_job_ids(client, broker_layout(app))
    for job_id in stale:
        if job_id in waiting or job_id in report.sent:
            continue  # still waiting in the broker, or sent by this very pass
        if not _send(settings, app, job_id, report):
            return
        if job_id in report.sent:
            report.requeued += 1


def _top_up_owners(
    settings: Settings, app: Celery, client: redis.Redis, report: SweepReport
) -> None:
    """Rows never sent (the broker was down at submit, or the per-owner bound held them
    back): each owner with such rows is topped up to the bound (``top_up_owner``), owners
    whose oldest unsent job is oldest first, so the broker gets them in that order."""
    oldest = func.min(Job.created_at)
    with session_scope(settings.database_url) as session:
        owners = session.scalars(
            select(Job.owner)
            .where(Job.status == JobStatus.QUEUED.value, Job.enqueued_at.is_(None))
            .group_by(Job.owner)
            .order_by(oldest)
            .limit(BATCH)
        ).all()
    sessions = get_sessionmaker(settings.database_url)
    for owner in owners:
        try:
            sent = top_up_owner(sessions, app, owner, client, settings.owner_slots)
        except EnqueueFailed as exc:
            report.errors.append(str(exc))
            return
        report.sent.update(sent)
        report.requeued += len(sent)


# ---- long jobs that have waited too long ----------------------------------------------------


def _promote_aged(
    settings: Settings, app: Celery, client: redis.Redis, report: SweepReport
) -> None:
    """Send again, at the interactive priority, every queued job submitted at least
    ``AGE_AFTER_SECONDS`` ago whose message waits only at a lower priority (a long job).
    ``enqueue_job`` picks the priority (aged: interactive); the old message is dropped by
    the worker that takes it after the job has run."""
    cutoff = utcnow() - timedelta(seconds=AGE_AFTER_SECONDS)
    with session_scope(settings.database_url) as session:
        aged = session.scalars(
            select(Job.id)
            .where(
                Job.status == JobStatus.QUEUED.value,
                Job.enqueued_at.is_not(None),
                Job.created_at <= cutoff,
            )
            .order_by(Job.created_at)
            .limit(BATCH)
        ).all()
    if not aged:
        return
    waiting = pending_jobs(client, broker_layout(app))
    for job_id in aged:
        if job_id in report.sent or waiting.get(job_id, INTERACTIVE) <= INTERACTIVE:
            continue  # sent by this pass, not waiting (the stale pass's), or already first
        if not _send(settings, app, job_id, report):
            return
        if job_id in report.sent:
            report.promoted += 1
            log.info("sweep: job %s waited past the aging threshold; sent at top priority", job_id)


def _send(settings: Settings, app: Celery, job_id: str, report: SweepReport) -> bool:
    """Enqueue and stamp (shared.jobs.enqueue_job); adds the id to ``report.sent`` when
    sent. False (stop this pass) if the broker is down."""
    try:
        stamp = enqueue_job(get_sessionmaker(settings.database_url), app, job_id)
    except EnqueueFailed as exc:
        report.errors.append(str(exc))
        return False
    except JobNotCommitted:
        return True  # the row is gone: nothing to send
    if stamp is not None:  # None: no longer queued (canceled, say), nothing was sent
        report.sent.add(job_id)
    return True


def pending_jobs(client: redis.Redis, layout: BrokerLayout | None = None) -> dict[str, int]:
    """{job id: lowest priority step it waits at} for the ``run_job`` messages waiting (not
    yet delivered) in the Redis broker: every priority list of every queue of ``layout``
    (by default the ``style`` queue with the configured steps; the sweep passes the app's).

    Best effort: an unreadable message is ignored, and a Redis error reads as nothing
    waiting, so the worst case is a duplicate message, which ``run_job`` shrugs off.
    """
    layout = layout or _DEFAULT_LAYOUT
    lists = [
        (layout.list_key(q, step), step) for q in layout.queues for step in layout.priority_steps
    ]
    found: dict[str, int] = {}
    try:
        pipe = client.pipeline(transaction=False)
        for key, _step in lists:
            pipe.lrange(key, 0, -1)
        batches = pipe.execute()
    except redis.RedisError:
        return found
    for (_key, step), batch in zip(lists, batches, strict=True):
        for raw in batch:
            job_id = _job_id_of(raw)
            if job_id and step < found.get(job_id, step + 1):
                found[job_id] = step
    return found


def pending_job_ids(client: redis.Redis, layout: BrokerLayout | None = None) -> set[str]:
    """Job ids of ``run_job`` messages waiting in the broker, at any priority."""
    return set(pending_jobs(client, layout))


_DEFAULT_LAYOUT = BrokerLayout(queues=(QUEUE,), priority_steps=PRIORITY_STEPS, sep=PRIORITY_SEP)


def _job_id_of(raw: bytes) -> str | None:
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return run_job_id(message) if isinstance(message, dict) else None
