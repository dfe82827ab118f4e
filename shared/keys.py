"""Where a job's objects live in storage. One place, so web and worker agree.

(Redis key names live in :mod:`stylequeue.shared.redis_keys`.)

What an attempt of a job writes (snapshots, result, history) lives under that attempt's own
prefix, ``jobs/<id>/attempts/<n>/``: object storage has no conditional write, so a runner
that was presumed dead while another restarted its job (attempt n + 1) can never overwrite
the live attempt's files. The row says which attempt is the job's: ``result_key`` and
``history_key`` are stored in it, snapshots are found with :func:`job_snapshot_key` from its
``attempts``. Inputs and cached thumbnails are per job.

Checkpoints are per job too (``jobs/<id>/checkpoints/``), since a later attempt resumes from
them: each one a new object whose key names its attempt and iteration, never overwritten, so
a stale attempt cannot replace a newer one's; the reader takes the newest valid one. They
are the worker's alone: no URL serves them, and they go when the job ends.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stylequeue.shared.models import Job


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def content_key(job_id: str, extension: str = "png") -> str:
    """The content image; its extension says how it is stored (``shared.uploads``)."""
    return f"jobs/{job_id}/inputs/content.{extension}"


def style_key(job_id: str, index: int, extension: str = "png") -> str:
    return f"jobs/{job_id}/inputs/style-{index}.{extension}"


# ---- what one attempt writes -----------------------------------------------------------------


def attempt_prefix(job_id: str, attempt: int) -> str:
    return f"jobs/{job_id}/attempts/{attempt}/"


def snapshot_key(job_id: str, iteration: int, *, attempt: int) -> str:
    return f"{attempt_prefix(job_id, attempt)}snapshots/{iteration:06d}.png"


def result_key(job_id: str, *, attempt: int) -> str:
    return f"{attempt_prefix(job_id, attempt)}result.png"


def history_key(job_id: str, *, attempt: int) -> str:
    return f"{attempt_prefix(job_id, attempt)}history.json"


# ---- checkpoints (per job: read by later attempts) --------------------------------------------

_CHECKPOINT_RE = re.compile(r"a(\d{4,})-i(\d{6,})/state\.ckpt")


def checkpoint_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints/"


def checkpoint_folder(job_id: str, *, attempt: int, iteration: int) -> str:
    """One checkpoint's own folder (``delete_prefix`` removes exactly it)."""
    return f"{checkpoint_prefix(job_id)}a{attempt:04d}-i{iteration:06d}/"


def checkpoint_key(job_id: str, *, attempt: int, iteration: int) -> str:
    return f"{checkpoint_folder(job_id, attempt=attempt, iteration=iteration)}state.ckpt"


def parse_checkpoint_key(job_id: str, key: str) -> tuple[int, int] | None:
    """(attempt, iteration) of a key :func:`checkpoint_key` made for ``job_id``, else None."""
    prefix = checkpoint_prefix(job_id)
    match = _CHECKPOINT_RE.fullmatch(key[len(prefix) :]) if key.startswith(prefix) else None
    return (int(match[1]), int(match[2])) if match else None


def job_snapshot_key(job: Job, iteration: int) -> str:
    """The key of the snapshot the row lists at ``iteration``: its current attempt's (the
    row's ``snapshot_iterations`` are always that attempt's)."""
    return snapshot_key(job.id, iteration, attempt=job.attempts)


def referenced_attempt(job: Job) -> int | None:
    """The attempt whose files the row points at, or None when it points at none.

    Only its current attempt (``attempts``) can be: each start clears ``result_key``,
    ``history_key`` and ``snapshot_iterations``, and only that attempt sets them again.
    """
    if job.attempts < 1:
        return None
    prefix = attempt_prefix(job.id, job.attempts)
    stored = [key for key in (job.result_key, job.history_key) if key]
    if job.snapshot_iterations or any(key.startswith(prefix) for key in stored):
        return job.attempts
    return None


def unreferenced_attempts(job: Job) -> list[int]:
    """The attempts (1..``attempts``) whose files the row does not point at: once the job
    has ended, nothing will ever read them."""
    kept = referenced_attempt(job)
    return [n for n in range(1, job.attempts + 1) if n != kept]
