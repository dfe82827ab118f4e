"""The job as JSON: one shape for ``GET /jobs/<id>``, the list, submit and cancel answers.

Times are ISO-8601 UTC (``2026-11-24T15:54:00.123Z``); floats that are not finite (a
diverged loss) become ``null`` so browsers can ``JSON.parse`` every answer.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from flask import url_for

from stylequeue.shared.models import Job
from stylequeue.shared.retention import expires_at
from stylequeue.shared.states import JobStatus, utcnow
from stylequeue.web.extensions import services
from stylequeue.web.media import THUMB_LINK_SIZE
from stylequeue.web.webhook_json import webhook_json


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


def duration_seconds(job: Job) -> float | None:
    """Run time: started to finished, or to now while running; None before it starts."""
    if job.started_at is None:
        return None
    end = job.finished_at or utcnow()
    return round(max(0.0, (end - job.started_at).total_seconds()), 3)


def resumes_at(job: Job, status: JobStatus) -> int | None:
    """Where a queued job that ran before goes on: after its newest checkpoint, or from 1
    when it has none (a crash before the first); None for a job that has not run yet."""
    if status is not JobStatus.QUEUED:
        return None
    if job.checkpoint_iteration:
        return job.checkpoint_iteration + 1
    return 1 if (job.iterations_done or 0) > 0 else None


def job_links(job: Job) -> dict[str, Any]:
    jid = job.id
    styles = job.input_keys.get("styles", []) if job.input_keys else []
    snapshots = sorted(job.snapshot_iterations or [])
    result = url_for("api.job_result", job_id=jid)
    small = THUMB_LINK_SIZE
    if job.result_key:
        thumbnail = url_for("api.job_result", job_id=jid, thumb=small)
    elif snapshots:
        thumbnail = url_for("api.job_snapshot", job_id=jid, iteration=snapshots[-1], thumb=small)
    else:
        thumbnail = url_for("api.job_input_content", job_id=jid, thumb=small)
    return {
        "self": url_for("api.get_job", job_id=jid),
        "progress": url_for("api.job_progress", job_id=jid),
        "result": result,
        "download": url_for("api.job_result", job_id=jid, download=1),
        "snapshots": url_for("api.job_snapshots", job_id=jid),
        "cancel": url_for("api.cancel_job", job_id=jid),
        "dashboard": f"/jobs/{jid}",
        "content": url_for("api.job_input_content", job_id=jid),
        "styles": [url_for("api.job_input_style", job_id=jid, index=i) for i in range(len(styles))],
        "thumbnail": thumbnail,
    }


def job_json(job: Job) -> dict[str, Any]:
    params = job.params or {}
    status = JobStatus(job.status)
    return {
        "id": job.id,
        "status": status.value,
        "terminal": status.terminal,
        "params": params,
        "preset": params.get("preset"),
        "weights": job.weights,
        "iterations_done": job.iterations_done,
        "iterations_total": job.iterations_total,
        # the checkpoint's iteration this attempt went on from (null: it started at 1), and
        # every iteration run across attempts (above iterations_done: work lost to dead workers)
        "resumed_from": job.resumed_from,
        "iterations_computed": job.iterations_computed,
        "best_loss": finite(job.best_loss),
        "best_iteration": job.best_iteration,
        "result_available": bool(job.result_key),
        "error": job.error,
        "cancel_requested": bool(job.cancel_requested),
        # attempts started, and how many of them ended by a worker's clean shutdown (the
        # rest that did not finish were crashes; only those count towards the crash limit)
        "attempts": job.attempts,
        "preemptions": job.preemptions or 0,
        # queued after an attempt that got somewhere: the iteration the next runner goes on
        # at (from a checkpoint; exact after a preemption, which checkpoints last thing)
        "resumes_at": resumes_at(job, status),
        "worker": job.worker,
        "width": job.width,
        "height": job.height,
        "n_styles": len(job.input_keys.get("styles", [])) if job.input_keys else 0,
        "snapshots": sorted(job.snapshot_iterations or []),
        "created_at": iso(job.created_at),
        "enqueued_at": iso(job.enqueued_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        # when retention deletes it (shared/retention.py): null while active or kept forever
        "expires_at": iso(expires_at(job, services().settings.retention_days)),
        "duration_seconds": duration_seconds(job),
        **webhook_json(job),  # webhook, webhook_events, webhook_deliveries
        "links": job_links(job),
    }
