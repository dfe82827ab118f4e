"""Test data: small generated images and committed job rows, as the web would create them."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from stylequeue.shared import keys
from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job, new_id
from stylequeue.shared.params import TransferParams
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.storage import get_storage

# Small and quick: the default for every job a test makes.
SMALL_PARAMS = replace(TransferParams(), iterations=8, max_size=40, snapshot_every=4, seed=1)


def content_image(width: int = 40, height: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth photo-like picture: gradients and a disc, HxWx3 uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = x / max(width - 1, 1)
    g = y / max(height - 1, 1)
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2) < (min(width, height) / 3) ** 2
    b = np.where(disc, 0.9, 0.2)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 0.02, (height, width, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def style_image(size: int = 36, seed: int = 1) -> np.ndarray:
    """A striped, textured 'painting', HxWx3 uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin((x + y) / 2.5)
    img = np.stack([stripes, 1 - stripes, 0.5 * stripes], axis=-1)
    img = img + rng.normal(0, 0.08, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def png_bytes(image: np.ndarray | bytes) -> bytes:
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def make_job(
    settings: Settings,
    *,
    owner: str = "web:test",
    params: TransferParams | Mapping[str, Any] | None = None,
    content: np.ndarray | bytes | None = None,
    styles: Sequence[np.ndarray | bytes] | None = None,
    status: str = "queued",
    **fields: Any,
) -> Job:
    """Store the input PNGs and insert a committed ``Job`` row (not enqueued).

    ``params`` may be TransferParams, or a dict of overrides on the small test defaults.
    Extra keyword arguments set other columns (``enqueued_at``, ``attempts``, ...).
    """
    if params is None:
        params = SMALL_PARAMS
    elif not isinstance(params, TransferParams):
        params = replace(SMALL_PARAMS, **dict(params))
    content = content_image() if content is None else content
    styles = [style_image()] if styles is None else list(styles)
    job_id = new_id()
    storage = get_storage(settings)
    storage.put(keys.content_key(job_id), png_bytes(content), "image/png")
    style_keys = []
    for i, style in enumerate(styles):
        storage.put(keys.style_key(job_id, i), png_bytes(style), "image/png")
        style_keys.append(keys.style_key(job_id, i))
    columns: dict[str, Any] = {"snapshot_iterations": [], "created_at": utcnow(), **fields}
    job = Job(
        id=job_id,
        owner=owner,
        status=status,
        params=params.to_dict(),
        input_keys={"content": keys.content_key(job_id), "styles": style_keys},
        iterations_total=params.iterations,
        **columns,
    )
    with session_scope(settings.database_url) as session:
        session.add(job)
    return job


def insert_job(settings: Settings, owner: str = "web:test", **values: Any) -> str:
    """A job row written directly (no inputs stored), for state, list and paging tests;
    ``values`` set any column."""
    job = Job(
        id=values.pop("id", None) or new_id(),
        owner=owner,
        status=values.pop("status", "queued"),
        params=values.pop("params", {"preset": "default", "iterations": 5}),
        input_keys={"content": "x", "styles": ["y"]},
        iterations_total=5,
        created_at=values.pop("created_at", None) or utcnow(),
        **values,
    )
    with session_scope(settings.database_url) as session:
        session.add(job)
    return job.id


def enqueue(settings: Settings, celery_app: Any, job_id: str) -> None:
    """What the web does after committing the row: send ``run_job`` and stamp the send."""
    from stylequeue.shared.db import get_sessionmaker
    from stylequeue.shared.jobs import enqueue_job

    assert enqueue_job(get_sessionmaker(settings.database_url), celery_app, job_id), "not queued"


def submit(settings: Settings, celery_app: Any, **kwargs: Any) -> Job:
    """``make_job`` + ``enqueue``: a submitted job, as after ``POST /api/v1/jobs``."""
    job = make_job(settings, **kwargs)
    enqueue(settings, celery_app, job.id)
    return job


def get_job(settings: Settings, job_id: str) -> Job:
    """A fresh copy of the row (detached)."""
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None, f"no job {job_id}"
        session.expunge(job)
        return job
