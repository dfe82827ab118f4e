"""Serving stored PNGs (inputs, snapshots, results) with caching that is safe.

Every image gets a strong ETag (a hash of its bytes) and answers conditional requests with
304. Inputs never change, and nothing of a finished job changes, so those are cached for a
year (``immutable``). While a job may still run, a re-delivered job restarts and rewrites
its snapshots, so those are revalidated each time (``no-cache``). Always ``private``: only
the owner may see them.
"""

from __future__ import annotations

import hashlib
import logging

from flask import Response, request

from shared.storage import ObjectNotFound
from web.errors import ApiError
from web.extensions import Services

log = logging.getLogger(__name__)

ONE_YEAR = 365 * 24 * 3600


def load_object(svc: Services, key: str, missing: ApiError) -> bytes:
    """The stored bytes, ``missing`` (a 404) when absent, 503 when the store fails."""
    try:
        return svc.storage.get(key)
    except ObjectNotFound:
        raise missing from None
    except Exception:
        log.exception("reading %s from storage failed", key)
        raise ApiError(503, "storage_unavailable", "the image cannot be read right now") from None


def png_response(data: bytes, *, immutable: bool, download_name: str | None = None) -> Response:
    response = Response(data, mimetype="image/png")
    response.set_etag(hashlib.sha256(data).hexdigest()[:32])
    response.cache_control.private = True
    if immutable:
        response.cache_control.max_age = ONE_YEAR
        response.cache_control.immutable = True
    else:
        response.cache_control.no_cache = True
    if download_name:
        response.headers.set("Content-Disposition", "attachment", filename=download_name)
    return response.make_conditional(request)
