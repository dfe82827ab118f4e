"""A tiled job's progress within its current iteration, for the progress answer.

The runner writes one entry per tile to the job's tile stream (``shared.tile_progress``);
the dashboard shows the newest while the job runs, so an iteration of minutes is not a
frozen page. An entry for an iteration already finished (or of an attempt that has gone) is
not shown.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from stylequeue.shared.models import Job
from stylequeue.shared.states import JobStatus
from stylequeue.shared.tile_progress import latest_tiles
from stylequeue.web.extensions import Services

log = logging.getLogger(__name__)


def current_tiles(svc: Services, job: Job) -> dict[str, Any] | None:
    """``{iteration, phase, done, total, elapsed}`` of the running job's current iteration,
    or None (not running, not tiled, finished iteration, Redis away)."""
    if job.status != JobStatus.RUNNING.value:
        return None
    try:
        entry = latest_tiles(svc.redis, job.id)
    except redis.RedisError as exc:
        log.debug("tile progress of job %s unreadable: %s", job.id, exc)
        return None
    if entry is None:
        return None
    # the targets pass (iteration 0) comes before iteration 1; later entries belong to the
    # iteration after the last one finished
    if entry["iteration"] != 0 and entry["iteration"] <= (job.iterations_done or 0):
        return None
    return entry
