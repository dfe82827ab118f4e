"""Submitting a job: check everything, store the clean inputs, commit the row, then enqueue.

The order is the contract (DESIGN, "One job, end to end"):

1. every parameter and every image is checked before anything is written, so a rejected
   request leaves no object and no row;
2. the clean PNGs go to storage; if that fails, what was written is deleted (503, no row);
3. the ``queued`` row is committed, in the transaction that counts the owner's active jobs
   (a submit that lost the race for the last slot deletes its inputs: 429, no row); only
   then is ``run_job`` sent, so a worker never gets an id it cannot find
   (:func:`stylequeue.shared.jobs.enqueue_job`, the sweeper's too), and only while the
   owner has fewer than ``OWNER_SLOTS`` jobs in the broker (fair share,
   :func:`stylequeue.shared.jobs.top_up_owner`): else the row waits, unsent, its turn;
4. a broker that is down is logged, not an error: the row stays ``queued`` with
   ``enqueued_at`` NULL and the sweeper sends it later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.datastructures import FileStorage, ImmutableMultiDict

from stylequeue.shared import keys
from stylequeue.shared.idempotency import release_expired_key
from stylequeue.shared.images import CleanImage, ImageRejected, validate_image
from stylequeue.shared.jobs import (
    ActiveJobLimitReached,
    EnqueueFailed,
    count_active_jobs,
    insert_job_within_limit,
    top_up_owner,
)
from stylequeue.shared.models import Job, new_id
from stylequeue.shared.params import PUBLIC_PARAMETERS, ParamError, TransferParams
from stylequeue.shared.settings import Limits
from stylequeue.shared.states import JobStatus, utcnow
from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import Services
from stylequeue.web.idempotency import KeyedSubmit

log = logging.getLogger(__name__)

CONTENT_FIELD = "content"
STYLE_FIELD = "style"
FILE_FIELDS = (CONTENT_FIELD, STYLE_FIELD)
# What a submit may set: the parameter table's public rows. Engine internals (layers, Adam
# betas, precision) are not for the API.
PARAM_FIELDS = PUBLIC_PARAMETERS
IGNORED_FIELDS = frozenset({"csrf_token"})


@dataclass(frozen=True)
class Submission:
    params: TransferParams
    content: CleanImage
    styles: list[CleanImage]


def output_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """The picture the job paints: the content image scaled down so its longest side is at
    most ``max_size`` (never scaled up), aspect ratio kept."""
    longest = max(width, height)
    if longest <= max_size:
        return width, height
    scale = max_size / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


# ---- 1. checking --------------------------------------------------------------------------


def _read_files(files: ImmutableMultiDict[str, FileStorage], name: str) -> list[bytes]:
    """The non-empty parts named ``name``; an empty part with no filename is an unused input."""
    out = []
    for part in files.getlist(name):
        data = part.read()
        if not data and not part.filename:
            continue
        out.append(data)
    return out


def parse_params(
    form: ImmutableMultiDict[str, str], n_styles: int, limits: Limits
) -> TransferParams:
    """Form fields -> validated params; every error names its field."""
    values: dict[str, str] = {}
    for name in form:
        if name in IGNORED_FIELDS:
            continue
        if name not in PARAM_FIELDS:
            raise ApiError(
                400,
                "unknown_parameter",
                f"unknown parameter {name!r}; known: {', '.join(PARAM_FIELDS)}",
                field=name,
            )
        given = form.getlist(name)
        if len(given) > 1:
            raise ApiError(
                400, "duplicate_parameter", f"{name!r} is given {len(given)} times", field=name
            )
        values[name] = given[0]
    try:
        return TransferParams.from_inputs(values, limits=limits, n_styles=n_styles)
    except ParamError as exc:
        raise ApiError(422, "invalid_parameter", exc.message, field=exc.field) from None


def input_max_side(limits: Limits) -> int:
    """Longest side an input is stored at: twice the largest output, so style_scale up to 2
    keeps full detail and the engine never reads more than it can use."""
    return 2 * limits.max_size


def _clean(data: bytes, field: str, limits: Limits, label: str) -> CleanImage:
    try:
        return validate_image(data, field, limits.max_image_pixels, input_max_side(limits))
    except ImageRejected as exc:
        raise ApiError(exc.status, exc.code, f"{label}: {exc.message}", field=exc.field) from None


def parse_submission(
    form: ImmutableMultiDict[str, str],
    files: ImmutableMultiDict[str, FileStorage],
    limits: Limits,
) -> Submission:
    """Check the whole request (parts, parameters, images) without writing anything."""
    for name in FILE_FIELDS:
        if name in form:
            raise ApiError(400, "not_a_file", f"send {name!r} as a file upload", field=name)
    for name in files:
        if name not in FILE_FIELDS:
            raise ApiError(
                400,
                "unknown_field",
                f"unexpected file {name!r}; send content and style",
                field=name,
            )
    contents = _read_files(files, CONTENT_FIELD)
    styles = _read_files(files, STYLE_FIELD)
    if not contents:
        raise ApiError(
            400, "missing_file", "choose a content image (the photo to paint)", field=CONTENT_FIELD
        )
    if len(contents) > 1:
        raise ApiError(400, "too_many_files", "send exactly one content image", field=CONTENT_FIELD)
    if not styles:
        raise ApiError(
            400, "missing_file", "choose a style image (the painting to imitate)", field=STYLE_FIELD
        )
    if len(styles) > limits.max_styles:
        raise ApiError(
            422,
            "too_many_files",
            f"send at most {limits.max_styles} style images, got {len(styles)}",
            field=STYLE_FIELD,
        )
    params = parse_params(form, len(styles), limits)
    content = _clean(contents[0], CONTENT_FIELD, limits, "content image")
    cleaned = [
        _clean(
            data, STYLE_FIELD, limits, f"style image {i + 1}" if len(styles) > 1 else "style image"
        )
        for i, data in enumerate(styles)
    ]
    return Submission(params, content, cleaned)


def too_many_active_jobs(active: int, limit: int) -> ApiError:
    return ApiError(
        429,
        "too_many_active_jobs",
        f"you have {active} jobs queued or running (limit {limit}); "
        "wait for one to finish or cancel one",
        headers={"Retry-After": "30"},
    )


def check_active_limit(svc: Services, owner: str) -> None:
    """429 when the owner already has as many queued + running jobs as allowed: an early
    answer, before the uploads are read and stored. The insert checks again, atomically
    (:func:`submit_job`)."""
    limit = svc.settings.limits.max_active_jobs
    with svc.db() as session:
        active = count_active_jobs(session, owner)
    if active >= limit:
        raise too_many_active_jobs(active, limit)


# ---- 2-4. storing, committing, enqueueing ------------------------------------------------


def _store_inputs(svc: Services, job_id: str, sub: Submission) -> dict[str, object]:
    content_key = keys.content_key(job_id)
    style_keys = [keys.style_key(job_id, i) for i in range(len(sub.styles))]
    try:
        svc.storage.put(content_key, sub.content.png, "image/png")
        for key, image in zip(style_keys, sub.styles, strict=True):
            svc.storage.put(key, image.png, "image/png")
    except Exception:
        log.exception("storing the inputs of job %s failed", job_id)
        _forget_inputs(svc, job_id)
        raise ApiError(
            503, "storage_unavailable", "the object store cannot take uploads right now; try again"
        ) from None
    return {"content": content_key, "styles": style_keys}


def _forget_inputs(svc: Services, job_id: str) -> None:
    try:
        svc.storage.delete_prefix(keys.job_prefix(job_id))
    except Exception:
        log.exception("could not delete the partial inputs of job %s", job_id)


def top_up(svc: Services, owner: str) -> list[str]:
    """Send the owner's next jobs while they have room in the broker
    (shared.jobs.top_up_owner: at most OWNER_SLOTS of theirs at once, oldest first). A
    failure is logged, not raised: the rows stay queued and the sweeper sends them."""
    try:
        return top_up_owner(
            svc.sessionmaker, svc.celery, owner, svc.redis, svc.settings.owner_slots
        )
    except EnqueueFailed as exc:
        log.warning(
            "job %s stays queued: the broker refused it (%s); the sweeper will send it",
            exc.job_id,
            exc.cause,
        )
    except SQLAlchemyError:
        log.exception("%s: the enqueue failed in the database; the sweeper sends it", owner)
    return []


def _enqueue(svc: Services, job: Job) -> None:
    """Top up the owner (:func:`top_up`), which sends this job if the owner has room;
    otherwise it waits, unsent, for the end of one of the owner's jobs or the sweeper."""
    if job.id in top_up(svc, job.owner):
        with svc.db() as session:
            job.enqueued_at = session.scalar(select(Job.enqueued_at).where(Job.id == job.id))


class KeyTaken(Exception):
    """Another submit with this Idempotency-Key inserted its job first (the unique index
    refused ours); our inputs are deleted. ``web.idempotency.winner`` finds that job."""


def submit_job(svc: Services, owner: str, sub: Submission, keyed: KeyedSubmit | None = None) -> Job:
    """Store, commit, enqueue. Returns the job as committed (plus ``enqueued_at``).

    The row is inserted only while the owner is under the active-job limit, counted in the
    insert's own transaction (:func:`~stylequeue.shared.jobs.insert_job_within_limit`); a
    refused submit's stored inputs are deleted (429, no row, no object). With ``keyed``
    (an Idempotency-Key) the row carries the key, and a concurrent submit's row with the
    same key makes the insert fail: :class:`KeyTaken`, our inputs deleted."""
    if keyed is not None:  # a key older than the window names no job any more
        with svc.db() as session:
            release_expired_key(session, owner, keyed.key)
    job_id = new_id()
    input_keys = _store_inputs(svc, job_id, sub)
    width, height = output_size(sub.content.width, sub.content.height, sub.params.max_size)
    job = Job(
        id=job_id,
        owner=owner,
        status=JobStatus.QUEUED.value,
        params=sub.params.to_dict(),
        input_keys=input_keys,
        snapshot_iterations=[],
        iterations_total=sub.params.iterations,
        iterations_done=0,
        attempts=0,
        cancel_requested=False,
        width=width,
        height=height,
        created_at=utcnow(),
        idempotency_key=keyed.key if keyed else None,
        request_fingerprint=keyed.fingerprint if keyed else None,
    )
    try:
        with svc.db() as session:
            insert_job_within_limit(session, job, svc.settings.limits.max_active_jobs)
    except ActiveJobLimitReached as exc:
        # Another submit of this owner's took the last slot since check_active_limit.
        _forget_inputs(svc, job_id)
        raise too_many_active_jobs(exc.active, exc.limit) from None
    except IntegrityError:
        _forget_inputs(svc, job_id)
        if keyed is None:
            log.exception("inserting job %s failed", job_id)
            raise ApiError(
                503, "database_unavailable", "the job could not be recorded; try again"
            ) from None
        raise KeyTaken() from None
    except SQLAlchemyError:
        log.exception("inserting job %s failed", job_id)
        _forget_inputs(svc, job_id)
        raise ApiError(
            503, "database_unavailable", "the job could not be recorded; try again"
        ) from None
    _enqueue(svc, job)
    return job
