"""``Idempotency-Key`` on ``POST /api/v1/jobs``: the HTTP side of ``shared/idempotency.py``.

A submit with the header is fingerprinted (its form fields and the bytes of its files); the
key and the fingerprint are stored on the job it makes. A later submit of the same owner
with the same key, within the window:

- with the same inputs answers that job (200, the job JSON as it is now, ``Location``,
  ``Idempotent-Replayed: true``) and makes nothing;
- with other inputs is a 422 naming the header (``field: "Idempotency-Key"``).

The lookup before the work is only a shortcut: two identical requests at once both miss
it, both store their inputs, and the unique index lets one insert through; the other's
submit raises :class:`~stylequeue.web.submission.KeyTaken`, deletes its inputs and answers
the winner (:func:`winner`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from flask import Response, jsonify, request, url_for
from werkzeug.datastructures import FileStorage, ImmutableMultiDict

from stylequeue.shared.idempotency import KEY_TTL, find_keyed_job
from stylequeue.shared.models import Job
from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import Services
from stylequeue.web.job_json import job_json

KEY_HEADER = "Idempotency-Key"
KEY_MAX_LENGTH = 255  # the column's size
KEY_PATTERN = r"^[!-~]+$"  # visible ASCII: a UUID, a ULID, any token a client makes
REPLAYED_HEADER = "Idempotent-Replayed"
NOT_HASHED = frozenset({"csrf_token"})  # the session's, not the job's: a retry may differ
_KEY = re.compile(KEY_PATTERN, re.ASCII)
_WINDOW = f"{KEY_TTL.total_seconds() / 3600:g} hours"


@dataclass(frozen=True)
class KeyedSubmit:
    key: str
    fingerprint: str  # sha256 hex of the inputs (:func:`fingerprint`)
    earlier: Job | None  # the job this key already made (the same inputs), or None


def read_key() -> str | None:
    """The request's key: None without the header; a 400 naming it when malformed."""
    raw = request.headers.get(KEY_HEADER)
    if raw is None:
        return None
    if not 1 <= len(raw) <= KEY_MAX_LENGTH or not _KEY.fullmatch(raw):
        raise ApiError(
            400,
            "invalid_header",
            f"{KEY_HEADER} must be 1 to {KEY_MAX_LENGTH} visible ASCII characters (a UUID, say)",
            field=KEY_HEADER,
        )
    return raw


def fingerprint(
    form: ImmutableMultiDict[str, str], files: ImmutableMultiDict[str, FileStorage]
) -> str:
    """A hash of what decides the job: every form field (but the CSRF token) and every
    file's bytes, by name and in order. File names and part headers are left out."""
    digest = hashlib.sha256()

    def add(*parts: bytes) -> None:
        for part in parts:
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)

    for name in sorted(form):
        if name not in NOT_HASHED:
            for value in form.getlist(name):
                add(b"field", name.encode(), value.encode())
    for name in sorted(files):
        for upload in files.getlist(name):
            data = upload.stream.read()
            upload.stream.seek(0)  # the submission reads it again
            add(b"file", name.encode(), hashlib.sha256(data).digest())
    return digest.hexdigest()


def keyed_submit(svc: Services, owner: str) -> KeyedSubmit | None:
    """None without a key. Else the key, this request's fingerprint and the job the key
    already made with the same inputs (a 422 when it made one with other inputs)."""
    key = read_key()
    if key is None:
        return None
    print_ = fingerprint(request.form, request.files)
    with svc.db() as session:
        earlier = find_keyed_job(session, owner, key)
    if earlier is not None:
        check_same_inputs(earlier, print_)
    return KeyedSubmit(key, print_, earlier)


def check_same_inputs(job: Job, print_: str) -> None:
    if job.request_fingerprint != print_:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"this {KEY_HEADER} was used for other inputs in the last {_WINDOW} "
            f"(job {job.id}); send a new key for a new job",
            field=KEY_HEADER,
        )


def winner(svc: Services, owner: str, keyed: KeyedSubmit) -> Job:
    """The job a concurrent request with this key made first (its insert won)."""
    with svc.db() as session:
        job = find_keyed_job(session, owner, keyed.key)
    if job is None:  # the refusal was something else: say so rather than guess
        raise ApiError(503, "database_unavailable", "the job could not be recorded; try again")
    check_same_inputs(job, keyed.fingerprint)
    return job


def replay(job: Job) -> tuple[Response, int, dict[str, str]]:
    """The answer to a repeated submit: the job it made, as it is now."""
    headers = {"Location": url_for("api.get_job", job_id=job.id), REPLAYED_HEADER: "true"}
    return jsonify(job_json(job)), 200, headers
