"""A submitted job's images: checked cheapest first, then stored compactly.

1. **Headers first** (:func:`~.images.read_header`, no pixel decoded): every file's type,
   size and dimensions, and whether the job could succeed at all
   (:func:`check_paintable`), before any file is decoded. A flat 6000x6000 PNG sent with an
   HTML "style" is refused for the style at once, never decoded.
2. **Then each file is decoded whole** (:func:`~.images.decode_upright`: a truncated file
   fails here) and stored compactly, never through a second lossy step
   (:func:`compact`): a JPEG or WebP that needs no resizing is kept byte for byte as sent
   (the worker decodes it with the same rule, EXIF orientation included); anything else
   (a PNG, or a photo larger than the inputs are kept) becomes a lossless WebP of the
   upright RGB picture, or a PNG past WebP's 16383-pixel side.

The stored bytes are what the owner's storage quota counts (``shared.quota``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from stylequeue.shared.images import ALLOWED_FORMATS, ImageHeader, ImageRejected, decode_upright

KEPT_AS_SENT = frozenset({"JPEG", "WEBP"})  # already compact; re-encoding would lose more
WEBP_MAX_SIDE = 16383
WEBP_LOSSLESS = {"lossless": True, "quality": 25, "method": 0}  # quick, still well under PNG
EXTENSIONS = {"image/jpeg": "jpg", "image/webp": "webp", "image/png": "png"}


@dataclass(frozen=True)
class StoredInput:
    """An input as it goes to storage."""

    data: bytes
    mimetype: str
    width: int  # upright, as the worker will read it
    height: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.mimetype]


def compact(data: bytes, header: ImageHeader, field: str, max_side: int) -> StoredInput:
    """Decode ``data`` whole (or :class:`ImageRejected`) and return what to store: the file
    as sent when it is a JPEG or WebP within ``max_side``, else a lossless encoding of the
    upright picture capped at ``max_side``."""
    img = decode_upright(data, field, max_side)
    if header.format in KEPT_AS_SENT and img.size == (header.width, header.height):
        return StoredInput(data, ALLOWED_FORMATS[header.format], img.width, img.height)
    out = io.BytesIO()
    if max(img.size) <= WEBP_MAX_SIDE:
        img.save(out, format="WEBP", **WEBP_LOSSLESS)
        mimetype = "image/webp"
    else:
        img.save(out, format="PNG", compress_level=6)
        mimetype = "image/png"
    return StoredInput(out.getvalue(), mimetype, img.width, img.height)


def output_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """The picture the job paints: the content scaled down so its longest side is at most
    ``max_size`` (never scaled up), aspect ratio kept."""
    longest = max(width, height)
    if longest <= max_size:
        return width, height
    scale = max_size / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_paintable(
    width: int, height: int, max_size: int, largest_max_size: int, need: int, field: str
) -> None:
    """422 (:class:`ImageRejected`) for a content image of ``width`` x ``height`` that the
    job could only fail on: painted at ``max_size`` its shorter side would be under
    ``need`` px, the least the network's deepest layer takes. Names ``max_size`` when a
    larger one (up to ``largest_max_size``) would do, else the image's ``field``."""
    out = output_size(width, height, max_size)
    if min(out) >= need:
        return
    if min(output_size(width, height, largest_max_size)) >= need:
        fits = next(
            size
            for size in range(max_size + 1, largest_max_size + 1)
            if min(output_size(width, height, size)) >= need
        )
        raise ImageRejected(
            "max_size",
            "too_small_to_paint",
            f"at max_size {max_size} the picture would be {out[0]}x{out[1]} px, under the "
            f"{need} px a side the network needs; use max_size {fits} or more",
            422,
        )
    raise ImageRejected(
        field,
        "too_small_to_paint",
        f"the image is {width}x{height} px; painted, its shorter side would be under the "
        f"{need} px the network needs (a picture this thin or small cannot be painted)",
        422,
    )
