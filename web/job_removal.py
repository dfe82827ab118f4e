"""``DELETE /api/v1/jobs/<id>``: the job goes at once, its files and stream right after.

The rules are :mod:`stylequeue.shared.deletion`'s; this module runs them for a request:

1. the row goes (its tombstone comes) in one transaction: from then on every path of the
   job answers 404, as for a job that never existed;
2. a job that was active gets the cancel flag, so a running worker stops within an
   iteration (it also finds no row at its next write, every second or so, should Redis be
   away), and its owner's next queued job is sent (the slot it held is free);
3. the purge is tried at once. A runner that holds the job's lock purges it itself when it
   stops; storage or Redis down leaves it to the sweeper. None of that changes the answer:
   the job is deleted once its row is, and the rest is retried until nothing is left.
"""

from __future__ import annotations

import logging

import redis

from stylequeue.shared import keys
from stylequeue.shared.deletion import PurgeResult, Removed, delete_owned_job, purge
from stylequeue.shared.models import Job
from stylequeue.web.extensions import Services
from stylequeue.web.submission import top_up

log = logging.getLogger(__name__)


def delete_job(svc: Services, job_id: str, owner: str | None) -> Removed | None:
    """Delete ``owner``'s job ``job_id``; None (nothing changed) when it is not theirs."""
    with svc.db() as session:
        removed = delete_owned_job(session, job_id, owner)
    if removed is None:
        return None
    if removed.was_active:
        try:
            svc.progress.request_cancel(removed.job_id)
        except redis.RedisError:
            log.warning("job %s deleted; its worker stops at its next row write", removed.job_id)
    result = purge(
        svc.sessionmaker,
        svc.storage,
        svc.redis,
        removed.job_id,
        lock_ttl_seconds=svc.settings.lock_ttl_seconds,
    )
    if result is not PurgeResult.PURGED:
        log.info("job %s deleted; its purge is %s, finished later", removed.job_id, result)
    if removed.was_active:
        top_up(svc, removed.owner)
    return removed


def purge_if_deleted(svc: Services, job_id: str) -> None:
    """Called after something was written for ``job_id`` outside any runner (a cached
    thumbnail): if the job was deleted meanwhile, its purge may have run before the write
    landed, so everything under its prefix goes again. The row goes before any purge starts,
    so a write checked after it landed is never missed."""
    with svc.db() as session:
        if session.get(Job, job_id) is not None:
            return
    log.info("job %s was deleted while a thumbnail of it was made; removing it", job_id)
    svc.storage.delete_prefix(keys.job_prefix(job_id), unfinished=True)
