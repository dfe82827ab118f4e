"""Serving stored images (inputs, snapshots, results) and their thumbnails, with safe caching.

Every image gets a strong ETag (a hash of its bytes) and answers conditional requests with
304. Inputs never change, and nothing of a finished job changes, so those are cached for a
year (``immutable``). While a job may still run, a re-delivered job restarts as a new
attempt whose snapshots (``shared.keys``, per attempt) replace the old ones at the same
URLs, so those are revalidated each time (``no-cache``). Always ``private``: only
the owner may see them.

``?thumb=<px>`` (one of :data:`THUMB_SIZES`) answers a WebP no larger than ``px`` on its
longer side instead (aspect kept, never upscaled), under the same rules; its ETag is derived
from the source's ETag and the size, so a revalidation answers 304 without decoding. A
thumbnail of an immutable source is kept in storage beside the job
(``jobs/<id>/thumbs/<name>-<px>.thumb``: a one-line header with the ETag, then the WebP),
so list views decode each source once; it goes when the job's prefix is deleted.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable

from flask import Response, request
from PIL import Image
from werkzeug.http import is_resource_modified

from stylequeue.shared import keys
from stylequeue.shared.images import ALLOWED_FORMATS, upright_rgb
from stylequeue.shared.storage import ObjectNotFound
from stylequeue.shared.text import parse_bool
from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import Services

log = logging.getLogger(__name__)

ONE_YEAR = 365 * 24 * 3600
THUMB_SIZES = (96, 160, 320)  # longer side in pixels
THUMB_LINK_SIZE = 160  # links.thumbnail, snapshot thumb_url: a 72 px list row at 2x
THUMB_QUALITY = 80
THUMB_MIMETYPE = "image/webp"
_CACHE_MAGIC = b"stylequeue-thumb/1 "


def load_object(svc: Services, key: str, missing: ApiError) -> bytes:
    """The stored bytes, ``missing`` (a 404) when absent, 503 when the store fails."""
    try:
        return svc.storage.get(key)
    except ObjectNotFound:
        raise missing from None
    except Exception:
        log.exception("reading %s from storage failed", key)
        raise ApiError(503, "storage_unavailable", "the image cannot be read right now") from None


def thumb_arg() -> int | None:
    """``?thumb=<px>``: None when absent, 400 naming ``thumb`` when not an allowed size."""
    raw = request.args.get("thumb")
    if raw is None:
        return None
    if raw not in {str(size) for size in THUMB_SIZES}:
        sizes = ", ".join(map(str, THUMB_SIZES))
        raise ApiError(400, "invalid_parameter", f"thumb must be one of {sizes}", field="thumb")
    return int(raw)


def download_arg() -> bool:
    """``?download=<yes/no word>``: False when absent, 400 naming ``download`` otherwise."""
    try:
        return parse_bool(request.args.get("download"), "download", default=False)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", str(exc), field="download") from None


def thumb_key(job_id: str, name: str, px: int) -> str:
    return f"{keys.job_prefix(job_id)}thumbs/{name}-{px}.thumb"


def _finish(
    response: Response, etag: str, *, immutable: bool, download_name: str | None = None
) -> Response:
    response.set_etag(etag)
    response.cache_control.private = True
    if immutable:
        response.cache_control.max_age = ONE_YEAR
        response.cache_control.immutable = True
    else:
        response.cache_control.no_cache = True
    if download_name:
        response.headers.set("Content-Disposition", "attachment", filename=download_name)
    response.make_conditional(request)  # in place (it returns self, typed as werkzeug's base)
    return response


def image_mimetype(data: bytes) -> str:
    """The type of a stored image, by its first bytes: results and snapshots are PNGs, an
    input may be kept as the JPEG or WebP it was sent as (``shared.uploads``)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def image_response(data: bytes, *, immutable: bool, download_name: str | None = None) -> Response:
    etag = hashlib.sha256(data).hexdigest()[:32]
    response = Response(data, mimetype=image_mimetype(data))
    return _finish(response, etag, immutable=immutable, download_name=download_name)


def make_thumbnail(data: bytes, px: int, max_pixels: int) -> bytes:
    """WebP of ``data`` fitting ``px`` x ``px`` (aspect kept, never larger than the source)."""
    try:
        with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ApiError(
                    422, "too_many_pixels",
                    f"the image is {width}x{height} pixels, over the limit of {max_pixels}; "
                    "no thumbnail is made of it",
                )  # fmt: skip
            if img.format == "JPEG":
                img.draft("RGB", (px, px))  # a DCT-scaled decode, never below px
            small = upright_rgb(img)  # the one reading rule: EXIF orientation, modes
            small.thumbnail((px, px), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            small.save(out, format="WEBP", quality=THUMB_QUALITY)
            return out.getvalue()
    except Image.DecompressionBombError:
        raise ApiError(422, "too_many_pixels", "the image has too many pixels") from None


def _read_cached(svc: Services, key: str) -> tuple[str, bytes] | None:
    try:
        blob = svc.storage.get(key)
    except ObjectNotFound:
        return None
    except Exception:
        log.warning("reading the cached thumbnail %s failed; making it again", key)
        return None
    header, sep, body = blob.partition(b"\n")
    if not sep or not header.startswith(_CACHE_MAGIC) or not body:
        return None
    return header[len(_CACHE_MAGIC) :].decode("ascii", "replace"), body


def thumb_response(
    svc: Services,
    key: str,
    missing: ApiError,
    px: int,
    *,
    immutable: bool,
    cache_key: str | None = None,
    after_caching: Callable[[], None] | None = None,
) -> Response:
    """The thumbnail of the object at ``key``; kept under ``cache_key`` when given (only
    for sources that never change), then ``after_caching`` is called (the job may have been
    deleted while we made it: the cached copy must not outlive it)."""
    if cache_key is not None and (cached := _read_cached(svc, cache_key)) is not None:
        etag, body = cached
        return _finish(Response(body, mimetype=THUMB_MIMETYPE), etag, immutable=immutable)
    data = load_object(svc, key, missing)
    source_etag = hashlib.sha256(data).hexdigest()[:32]
    etag = hashlib.sha256(f"{source_etag}/thumb-{px}.webp".encode()).hexdigest()[:32]
    if not is_resource_modified(request.environ, etag=etag):  # 304 without decoding
        return _finish(Response(status=304), etag, immutable=immutable)
    body = make_thumbnail(data, px, svc.settings.limits.max_image_pixels)
    if cache_key is not None:
        try:
            svc.storage.put(cache_key, _CACHE_MAGIC + etag.encode() + b"\n" + body)
            if after_caching is not None:
                after_caching()
        except Exception:
            log.warning("caching the thumbnail %s failed", cache_key, exc_info=True)
    return _finish(Response(body, mimetype=THUMB_MIMETYPE), etag, immutable=immutable)
