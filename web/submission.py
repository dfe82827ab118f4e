"""Submitting a job: check everything, store the clean inputs, commit the row, then enqueue.

The order is the contract (DESIGN, "One job, end to end"):

1. every parameter and every image is checked before anything is written, so a rejected
   request leaves no object and no row: the cheap checks first (parameters, then every
   file's type, size and header dimensions, and whether the content can be painted at
   all), then each file is decoded whole (``shared.uploads``);
2. the inputs go to storage, compactly (a JPEG or WebP as sent, else lossless WebP); if
   that fails, what was written is deleted (503, no row);
3. the ``queued`` row is committed, in the transaction that checks the caps (the owner's
   active jobs, all browser sessions' and one address's, the owner's stored bytes:
   ``shared.quota``; a submit that lost the race for the last slot deletes its inputs:
   429, no row); only
   then is ``run_job`` sent, so a worker never gets an id it cannot find
   (:func:`stylequeue.shared.jobs.enqueue_job`, the sweeper's too), and only while the
   owner has fewer than ``OWNER_SLOTS`` jobs in the broker (fair share,
   :func:`stylequeue.shared.jobs.top_up_owner`): else the row waits, unsent, its turn;
4. a broker that is down is logged, not an error: the row stays ``queued`` with
   ``enqueued_at`` NULL and the sweeper sends it later.

A ``webhook`` is checked like a parameter (the table's ``url`` row), then against this
server's rules: https unless http is allowed, and a host that resolves to public addresses
only (``shared.webhook_targets``; the delivery checks again when it connects).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.datastructures import FileStorage, ImmutableMultiDict

from stylequeue.shared import keys
from stylequeue.shared.idempotency import release_expired_key
from stylequeue.shared.images import ImageHeader, ImageRejected, read_header
from stylequeue.shared.jobs import EnqueueFailed, top_up_owner
from stylequeue.shared.models import Job, new_id
from stylequeue.shared.params import (
    JOB_PARAMETERS,
    PUBLIC_PARAMETERS,
    JobOptions,
    ParamError,
    TransferParams,
    job_min_side,
)
from stylequeue.shared.quota import CapReached, check_caps, insert_within_caps
from stylequeue.shared.settings import Limits, WebhookSettings
from stylequeue.shared.states import JobStatus, utcnow
from stylequeue.shared.uploads import StoredInput, check_paintable, compact, output_size
from stylequeue.shared.webhook_targets import TargetRefused, check_target
from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import Services
from stylequeue.web.idempotency import KeyedSubmit
from stylequeue.web.submit_caps import cap_error, caps, client_key_for

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
    content: StoredInput
    styles: list[StoredInput]
    options: JobOptions = field(default_factory=JobOptions)  # the webhook

    @property
    def input_bytes(self) -> int:
        """What storing the inputs costs the owner's quota."""
        return len(self.content.data) + sum(len(style.data) for style in self.styles)


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
    values = _form_values(form)
    transfer = {k: v for k, v in values.items() if k not in JOB_PARAMETERS}
    try:
        return TransferParams.from_inputs(transfer, limits=limits, n_styles=n_styles)
    except ParamError as exc:
        raise ApiError(422, "invalid_parameter", exc.message, field=exc.field) from None


def parse_job_options(form: ImmutableMultiDict[str, str], webhooks: WebhookSettings) -> JobOptions:
    """The job options (the table's job rows), checked; a webhook also against this
    server's rules (:func:`~stylequeue.shared.webhook_targets.check_target`: resolves the
    host). A refusal is a 422 naming ``webhook``."""
    values = {k: v for k, v in _form_values(form).items() if k in JOB_PARAMETERS}
    try:
        options = JobOptions.from_inputs(values)
    except ParamError as exc:
        raise ApiError(422, "invalid_parameter", exc.message, field=exc.field) from None
    if options.webhook is not None:
        try:
            check_target(options.webhook, webhooks)
        except TargetRefused as exc:
            raise ApiError(
                422,
                "webhook_refused",
                f"this server will not call it: {exc.reason}",
                field="webhook",
            ) from None
    return options


def _form_values(form: ImmutableMultiDict[str, str]) -> dict[str, str]:
    """The parameter fields of the form, one value each; unknown or repeated: 400."""
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
    return values


def input_max_side(limits: Limits) -> int:
    """Longest side an input is stored at: twice the largest output, so style_scale up to 2
    keeps full detail and the engine never reads more than it can use."""
    return 2 * limits.max_size


@dataclass(frozen=True)
class _Upload:
    data: bytes
    field: str
    label: str


def _rejected(exc: ImageRejected, label: str | None) -> ApiError:
    message = f"{label}: {exc.message}" if label else exc.message
    return ApiError(exc.status, exc.code, message, field=exc.field)


def _header(upload: _Upload, limits: Limits) -> ImageHeader:
    try:
        return read_header(upload.data, upload.field, limits.max_image_pixels)
    except ImageRejected as exc:
        raise _rejected(exc, upload.label) from None


def _paintable(width: int, height: int, params: TransferParams, limits: Limits) -> None:
    """422 for a content image the job could only fail on (too small or thin to paint)."""
    try:
        need = job_min_side(params)
        check_paintable(width, height, params.max_size, limits.max_size, need, CONTENT_FIELD)
    except ImageRejected as exc:
        raise _rejected(exc, "content image" if exc.field == CONTENT_FIELD else None) from None


def _compact(upload: _Upload, header: ImageHeader, limits: Limits) -> StoredInput:
    try:
        return compact(upload.data, header, upload.field, input_max_side(limits))
    except ImageRejected as exc:
        raise _rejected(exc, upload.label) from None


def _check_images(
    uploads: list[_Upload], params: TransferParams, limits: Limits
) -> list[StoredInput]:
    """Cheapest first: every file's header (type, size, dimensions) and whether the content
    can be painted, before any file is decoded; then each file whole, compacted."""
    headers = [_header(upload, limits) for upload in uploads]
    _paintable(headers[0].width, headers[0].height, params, limits)
    stored = [_compact(u, h, limits) for u, h in zip(uploads, headers, strict=True)]
    _paintable(stored[0].width, stored[0].height, params, limits)  # as stored (rounding)
    return stored


def parse_submission(
    form: ImmutableMultiDict[str, str],
    files: ImmutableMultiDict[str, FileStorage],
    limits: Limits,
    webhooks: WebhookSettings,
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
    options = parse_job_options(form, webhooks)
    uploads = [_Upload(contents[0], CONTENT_FIELD, "content image")]
    for i, data in enumerate(styles):
        label = f"style image {i + 1}" if len(styles) > 1 else "style image"
        uploads.append(_Upload(data, STYLE_FIELD, label))
    stored = _check_images(uploads, params, limits)
    return Submission(params, stored[0], stored[1:], options)


def check_active_limit(svc: Services, owner: str, incoming_bytes: int = 0) -> None:
    """429 (or 403 for the storage quota) when one more job of ``owner``'s would pass a cap
    (``shared.quota``): an early answer, before the uploads are read and stored. The insert
    checks again, atomically (:func:`submit_job`)."""
    try:
        with svc.db() as session:
            check_caps(session, owner, client_key_for(owner), caps(svc.settings), incoming_bytes)
    except CapReached as exc:
        raise cap_error(exc, incoming_bytes) from None


# ---- 2-4. storing, committing, enqueueing ------------------------------------------------


def _store_inputs(svc: Services, job_id: str, sub: Submission) -> dict[str, object]:
    content_key = keys.content_key(job_id, sub.content.extension)
    style_keys = [keys.style_key(job_id, i, s.extension) for i, s in enumerate(sub.styles)]
    try:
        svc.storage.put(content_key, sub.content.data, sub.content.mimetype)
        for key, image in zip(style_keys, sub.styles, strict=True):
            svc.storage.put(key, image.data, image.mimetype)
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

    The row is inserted only while every cap holds, counted in the insert's own transaction
    (:func:`~stylequeue.shared.quota.insert_within_caps`); a refused submit's stored inputs
    are deleted (429 or 403, no row, no object). With ``keyed`` (an Idempotency-Key) the
    row carries the key, and a concurrent submit's row with the same key makes the insert
    fail: :class:`KeyTaken`, our inputs deleted."""
    check_active_limit(svc, owner, sub.input_bytes)  # the quota, now that the size is known
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
        **sub.options.to_columns(),
        input_bytes=sub.input_bytes,
        client_key=client_key_for(owner),
        idempotency_key=keyed.key if keyed else None,
        request_fingerprint=keyed.fingerprint if keyed else None,
    )
    try:
        with svc.db() as session:
            insert_within_caps(session, job, caps(svc.settings))
    except CapReached as exc:
        # Another submit took the last room since check_active_limit.
        _forget_inputs(svc, job_id)
        raise cap_error(exc, sub.input_bytes) from None
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
