"""The fleet as an operator sees it: workers, what each runs now, the queue, the last hour.

One function, :func:`fleet_status`, reads it from what already exists, with no change to the
runner: the worker registry (``shared.fleet``: who is alive, their weights, precision,
device and memory, when each was last seen), the jobs table (running rows name their runner
``<worker name>/<pid>``, as the registry entry of its pool process does; queued rows give
the queue's depth and oldest wait; rows finished in the last hour) and the running jobs'
progress streams (the latest iteration, and the speed over the last entries, from the
stream ids' Redis timestamps).

The answer is plain JSON for ``GET /api/v1/admin/fleet``, the ``/fleet`` page and
``stylequeue fleet``. It carries no owner id and no image: only job ids, which open nothing
without the owner's session or token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stylequeue.shared import fleet
from stylequeue.shared.models import Job
from stylequeue.shared.redis_keys import stream_key
from stylequeue.shared.states import JobStatus

RECENT = timedelta(hours=1)
SPEED_WINDOW = 20  # stream entries the speed is measured over
ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)
# Registry fields an operator sees, in this order (others stay in Redis).
WORKER_FIELDS = (
    "name", "host", "pid", "device", "device_name", "weights", "weights_ok", "weights_error",
    "error", "precision", "memory", "memory_budget",
)  # fmt: skip


def fleet_status(
    session: Session, client: redis.Redis, now: datetime | None = None
) -> dict[str, Any]:
    """Everything the fleet view shows, as JSON-ready values (times ISO 8601, UTC).

    Raises ``redis.RedisError`` when the registry cannot be read; a stream that cannot be
    read leaves that job's speed out.
    """
    now = now or datetime.now(UTC)
    registry = fleet.list_workers(client)
    running = list(
        session.scalars(select(Job).where(Job.status == JobStatus.RUNNING).order_by(Job.started_at))
    )
    jobs_by_runner = {job.worker: job for job in running if job.worker}
    workers = []
    for entry in sorted(registry, key=lambda w: str(w.get("name"))):
        runner = f"{entry.get('name')}/{entry.get('pid')}"
        job = jobs_by_runner.pop(runner, None)
        workers.append(_worker(entry, now, _running_job(client, job) if job else None))
    return {
        "generated_at": now.isoformat(),
        "workers": workers,
        "queue": _queue(session, now),
        "running": len(running),
        # running rows whose runner is not in the registry: it died, the sweeper will
        # recover the job once its lock expires
        "running_without_worker": len(jobs_by_runner),
        "last_hour": _recent(session, now),
    }


def _worker(entry: Mapping[str, Any], now: datetime, job: dict[str, Any] | None) -> dict[str, Any]:
    out = {name: entry.get(name) for name in WORKER_FIELDS}
    seen_at = entry.get("seen_at")
    if isinstance(seen_at, int | float):
        seen = datetime.fromtimestamp(seen_at, UTC)
        out["last_seen"] = seen.isoformat()
        out["seen_seconds_ago"] = round(max(0.0, (now - seen).total_seconds()), 1)
    else:  # announced by a worker older than this field
        out["last_seen"] = out["seen_seconds_ago"] = None
    out["job"] = job
    return out


def _running_job(client: redis.Redis, job: Job) -> dict[str, Any]:
    iteration, speed = job.iterations_done, None
    try:
        entries = client.xrevrange(stream_key(job.id), count=SPEED_WINDOW)
    except redis.RedisError:
        entries = []
    if entries:
        iteration = max(iteration, _iteration(entries[0]))
        speed = iterations_per_second(entries)
    return {
        "id": job.id,
        "iteration": iteration,
        "iterations_total": job.iterations_total,
        "it_per_s": speed,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "attempts": job.attempts,
    }


def _iteration(entry: Sequence[Any]) -> int:
    fields = entry[1] or {}
    raw = fields.get(b"iteration", fields.get("iteration", 0))
    try:
        return int(raw.decode() if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError):
        return 0


def _millis(entry: Sequence[Any]) -> int:
    raw = entry[0]
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return int(text.partition("-")[0])


def iterations_per_second(entries: Sequence[Sequence[Any]]) -> float | None:
    """The speed over stream entries (newest first, as XREVRANGE answers): iterations made
    between the oldest and newest of them over the Redis time between their ids. None for
    fewer than two entries or no time between them."""
    if len(entries) < 2:
        return None
    newest, oldest = entries[0], entries[-1]
    steps = _iteration(newest) - _iteration(oldest)
    seconds = (_millis(newest) - _millis(oldest)) / 1000
    if steps <= 0 or seconds <= 0:
        return None
    return round(steps / seconds, 2)


def _queue(session: Session, now: datetime) -> dict[str, Any]:
    depth, oldest = session.execute(
        select(func.count(Job.id), func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED)
    ).one()
    since = _as_utc(oldest)
    wait = round(max(0.0, (now - since).total_seconds()), 1) if since else None
    return {
        "depth": int(depth),
        "oldest_queued_at": since.isoformat() if since else None,
        "oldest_wait_seconds": wait,
    }


def _as_utc(value: object) -> datetime | None:
    """An aggregate's datetime, aware (a backend may answer a naive one, or text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _recent(session: Session, now: datetime) -> dict[str, int]:
    rows = session.execute(
        select(Job.status, func.count(Job.id))
        .where(Job.status.in_([s.value for s in ENDED]), Job.finished_at >= now - RECENT)
        .group_by(Job.status)
    ).all()
    counts = {status.value: 0 for status in ENDED}
    counts.update({str(status): int(n) for status, n in rows})
    return counts
