"""The JSON API, ``/api/v1`` (DESIGN, "HTTP contract (v1)").

Views stay thin: checking and storing a submission lives in :mod:`web.submission`, the job's
JSON in :mod:`web.job_json`, progress in :mod:`web.progress_reader`, image responses in
:mod:`web.media`; the job rules (owner lookup, paging bounds, cancel) in
:mod:`shared.jobs`, reached through :mod:`web.base`. A job is visible only to its owner;
anyone else gets the same 404 as for an id that does not exist. GET endpoints never change
state (apart from ``/session`` creating the browser's owner id).
"""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify, request, url_for

from stylequeue.shared import keys
from stylequeue.shared.fleet import list_workers
from stylequeue.shared.fleet_status import fleet_status
from stylequeue.shared.jobs import CancelOutcome, owned_jobs_page, request_cancel
from stylequeue.shared.models import Job
from stylequeue.shared.webhook_outbox import send as send_webhooks
from stylequeue.web import job_removal
from stylequeue.web.admission import check_fits, fleet_capacity
from stylequeue.web.auth import (
    admin_only,
    csrf_token,
    current_caller,
    current_owner,
    ensure_session_owner,
)
from stylequeue.web.base import JobNotFound, get_job_or_404, page_params, paginate
from stylequeue.web.config_info import config_payload
from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import services
from stylequeue.web.idempotency import keyed_submit, replay, winner
from stylequeue.web.job_json import job_json
from stylequeue.web.media import (
    THUMB_LINK_SIZE,
    download_arg,
    image_response,
    load_object,
    thumb_arg,
    thumb_key,
    thumb_response,
)
from stylequeue.web.progress_reader import parse_after, parse_limit, read_progress
from stylequeue.web.submission import (
    KeyTaken,
    check_active_limit,
    parse_submission,
    submit_job,
    top_up,
)
from stylequeue.web.tiles import current_tiles

bp = Blueprint("api", __name__, url_prefix="/api/v1")


# ---- session, config, fleet -----------------------------------------------------------------


@bp.get("/session")
def get_session() -> Response:
    """Who am I, and the CSRF token a cookie-based client must send with each POST."""
    caller = current_caller()
    if caller.via == "token":
        return jsonify({"owner": caller.owner, "auth": "token", "csrf_token": None})
    owner = ensure_session_owner()
    return jsonify({"owner": owner, "auth": "session", "csrf_token": csrf_token()})


@bp.get("/config")
def get_config() -> Response:
    svc = services()
    payload = config_payload(svc.settings.limits)
    payload["fleet"] = fleet_capacity(svc, svc.settings.limits)  # what the workers can paint
    return jsonify(payload)


@bp.get("/fleet")
def get_fleet() -> Response:
    """What the pages' banners need, and nothing more (no host, pid or path): a worker is
    online, one runs ``random`` weights, one cannot load its weights (its jobs will fail).
    Operators see the details at ``/api/v1/admin/fleet``."""
    try:
        workers = list_workers(services().redis)
    except redis.RedisError:
        raise ApiError(503, "redis_unavailable", "the worker registry cannot be read now") from None
    return jsonify(
        {
            "online": bool(workers),
            "random_weights": any(w.get("weights") == "random" for w in workers),
            "weights_unavailable": any(w.get("weights_ok") is False for w in workers),
        }
    )


@bp.get("/admin/fleet")
@admin_only
def admin_fleet() -> tuple[Response, int, dict[str, str]]:
    """Operators only (``auth.admin_only``): every worker with what it runs now, the queue,
    the last hour (``shared.fleet_status``). No owner ids, no images."""
    svc = services()
    try:
        with svc.db() as session:
            status = fleet_status(session, svc.redis)
    except redis.RedisError:
        raise ApiError(503, "redis_unavailable", "the worker registry cannot be read now") from None
    return jsonify(status), 200, {"Cache-Control": "no-store"}


# ---- jobs -----------------------------------------------------------------------------------


@bp.post("/jobs")
def create_job() -> tuple[Response, int, dict[str, str]]:
    """Check, store, commit, enqueue (``web.submission``). With an Idempotency-Key, the job
    an earlier request with the same key and inputs made is answered instead (200)."""
    svc = services()
    caller = current_caller()
    if request.mimetype != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the job as multipart/form-data with content and style files",
        )
    owner = caller.owner if caller.via == "token" else ensure_session_owner()
    assert owner is not None
    keyed = keyed_submit(svc, owner)
    if keyed is not None and keyed.earlier is not None:
        return replay(keyed.earlier)
    check_active_limit(svc, owner)
    submission = parse_submission(
        request.form, request.files, svc.settings.limits, svc.settings.webhooks
    )
    content = submission.content
    check_fits(svc, submission.params, content.width, content.height)  # a worker can hold it
    try:
        job = submit_job(svc, owner, submission, keyed)
    except KeyTaken:
        assert keyed is not None
        return replay(winner(svc, owner, keyed))
    location = url_for("api.get_job", job_id=job.id)
    return jsonify(job_json(job)), 201, {"Location": location}


@bp.get("/jobs")
def list_jobs() -> Response:
    params = page_params()
    with services().db() as session:
        result = owned_jobs_page(session, current_owner(), params.page, params.per_page)
        jobs = [job_json(j) for j in result.jobs]
    return jsonify({"jobs": jobs, **paginate(result, "api.list_jobs")})


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(job_json(get_job_or_404(job_id)))


@bp.get("/jobs/<job_id>/progress")
def job_progress(job_id: str) -> Response:
    after = parse_after(request.args.get("after"))
    limit = parse_limit(request.args.get("limit"))
    job = get_job_or_404(job_id)
    page = read_progress(services(), job, after, limit)
    return jsonify(
        {
            "entries": page.entries,
            "last_id": page.last_id,
            "more": page.more,
            "source": page.source,
            "status": job.status,
            "iterations_done": job.iterations_done,
            "iterations_total": job.iterations_total,
            # a job painted in tiles: how far its current iteration is (null otherwise)
            "tiles": current_tiles(services(), job),
        }
    )


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> tuple[Response, int]:
    """Queued: canceled at once. Running: flagged; the worker stops within ~0.1 s or an iteration.
    Already canceled: 202 again (idempotent). Succeeded or failed: 409."""
    svc = services()
    with svc.db() as session:
        done = request_cancel(
            session,
            job_id,
            current_owner(),
            svc.progress,
            stream_ttl_seconds=svc.settings.progress_ttl_seconds,
        )
    if done.outcome is CancelOutcome.NOT_FOUND or done.job is None:
        raise JobNotFound()
    if done.outcome is CancelOutcome.FINISHED:
        raise ApiError(
            409,
            "job_finished",
            f"the job has already {done.job.status}; there is nothing to cancel",
        )
    if done.outcome is CancelOutcome.CANCELED:
        send_webhooks(svc.sessionmaker, svc.celery, [done.webhook_message])  # completed
        top_up(svc, done.job.owner)  # it may have held the owner's slot in the broker
    if done.outcome is CancelOutcome.REQUESTED and not done.worker_told:
        raise ApiError(
            503,
            "redis_unavailable",
            "the cancel is recorded but the worker cannot be told now; try again",
        )
    return jsonify(job_json(done.job)), 202


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> tuple[str, int]:
    """The job goes, with its files and progress (web.job_removal); a running one is stopped
    first. 204; then every path of the job is a 404. Not the caller's job: 404."""
    if job_removal.delete_job(services(), job_id, current_owner()) is None:
        raise JobNotFound()
    return "", 204


# ---- images ---------------------------------------------------------------------------------


@bp.get("/jobs/<job_id>/result")
def job_result(job_id: str) -> Response:
    thumb = thumb_arg()
    job = get_job_or_404(job_id)
    if not job.result_key:
        if job.terminal:
            message = f"the job {job.status} without a result image"
        else:
            message = f"the job is {job.status}; the result is ready when it succeeds"
        raise ApiError(404, "result_not_ready", message)
    missing = ApiError(404, "result_not_ready", "the result image is not stored yet")
    if thumb is not None:
        return _thumb(job, job.result_key, "result", thumb, missing, immutable=job.terminal)
    data = load_object(services(), job.result_key, missing)
    download = download_arg()
    return image_response(
        data, immutable=job.terminal, download_name=f"stylequeue-{job.id}.png" if download else None
    )


@bp.get("/jobs/<job_id>/snapshots")
def job_snapshots(job_id: str) -> Response:
    job = get_job_or_404(job_id)
    return jsonify(
        {
            "snapshots": [
                {
                    "iteration": it,
                    "url": url_for("api.job_snapshot", job_id=job.id, iteration=it),
                    "thumb_url": url_for(
                        "api.job_snapshot", job_id=job.id, iteration=it, thumb=THUMB_LINK_SIZE
                    ),
                }
                for it in sorted(job.snapshot_iterations or [])
            ]
        }
    )


@bp.get("/jobs/<job_id>/snapshots/<int:iteration>")
def job_snapshot(job_id: str, iteration: int) -> Response:
    thumb = thumb_arg()
    job = get_job_or_404(job_id)
    missing = ApiError(404, "snapshot_not_found", f"no snapshot at iteration {iteration}")
    key = keys.job_snapshot_key(job, iteration)
    if thumb is not None:
        name = f"snapshot-{iteration:06d}"
        return _thumb(job, key, name, thumb, missing, immutable=job.terminal)
    return image_response(load_object(services(), key, missing), immutable=job.terminal)


@bp.get("/jobs/<job_id>/inputs/content")
def job_input_content(job_id: str) -> Response:
    thumb = thumb_arg()
    job = get_job_or_404(job_id)
    key = (job.input_keys or {}).get("content") or keys.content_key(job.id)
    missing = ApiError(404, "input_not_found", "no content image")
    if thumb is not None:
        return _thumb(job, key, "content", thumb, missing, immutable=True)
    return image_response(load_object(services(), key, missing), immutable=True)


@bp.get("/jobs/<job_id>/inputs/style/<int:index>")
def job_input_style(job_id: str, index: int) -> Response:
    thumb = thumb_arg()
    job = get_job_or_404(job_id)
    styles = (job.input_keys or {}).get("styles", [])
    missing = ApiError(
        404, "input_not_found", f"no style image {index} (the job has {len(styles)})"
    )
    if index >= len(styles):
        raise missing
    if thumb is not None:
        return _thumb(job, styles[index], f"style-{index}", thumb, missing, immutable=True)
    return image_response(load_object(services(), styles[index], missing), immutable=True)


def _thumb(
    job: Job, key: str, name: str, px: int, missing: ApiError, *, immutable: bool
) -> Response:
    """The ``px`` thumbnail of ``key``; kept in storage only when the source cannot change."""
    cache_key = thumb_key(job.id, name, px) if immutable else None
    svc = services()
    return thumb_response(
        svc, key, missing, px, immutable=immutable, cache_key=cache_key,
        after_caching=lambda: job_removal.purge_if_deleted(svc, job.id),
    )  # fmt: skip
