"""Helpers for the web tests: submitting, reading and writing job rows, error bodies."""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import TestResponse, encode_multipart

from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job
from stylequeue.shared.settings import Settings
from tests import factories
from tests.web import images

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
ALICE_OWNER = "api:alice"
SMALL = {"iterations": "5", "max_size": "64"}  # within the test limits


def submit(
    client: FlaskClient,
    headers: dict[str, str] | None = None,
    *,
    content: bytes | None = None,
    styles: Iterable[bytes] | None = None,
    content_name: str = "content.png",
    fields: dict[str, Any] | None = None,
    no_content: bool = False,
    no_style: bool = False,
) -> TestResponse:
    """POST /api/v1/jobs as multipart (Alice's token unless ``headers`` says otherwise).

    Defaults: a small PNG content, one JPEG style, 5 iterations at 64 px.
    """
    data = MultiDict(SMALL if fields is None else fields)
    if not no_content:
        body = images.png() if content is None else content
        data.add("content", FileStorage(io.BytesIO(body), content_name))
    if not no_style:
        parts = [images.jpeg()] if styles is None else list(styles)
        for i, part in enumerate(parts):
            data.add("style", FileStorage(io.BytesIO(part), f"style-{i}.jpg"))
    # Encoded here, in memory: given the fields, the test client spools a body over 500 KB to
    # a temporary file it never closes (an unclosed-file ResourceWarning).
    boundary, encoded = encode_multipart(data)
    return client.post(
        "/api/v1/jobs",
        data=encoded,
        headers=ALICE if headers is None else headers,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def count_jobs(settings: Settings) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def load_job(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def update_job(settings: Settings, job_id: str, **values: Any) -> None:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        for key, value in values.items():
            setattr(job, key, value)


def insert_job(settings: Settings, owner: str = ALICE_OWNER, **values: Any) -> str:
    """A job row written directly (no inputs stored), Alice's unless ``owner`` says."""
    return factories.insert_job(settings, owner, **values)


def with_settings(settings: Settings, **limits: Any) -> Settings:
    return replace(settings, limits=replace(settings.limits, **limits))


def error_of(response: TestResponse) -> dict[str, Any]:
    assert response.is_json, response.data[:200]
    body = response.get_json()
    assert set(body["error"]) <= {"code", "message", "field"}
    assert body["error"]["message"]
    return body["error"]
