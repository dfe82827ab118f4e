"""Upload validation: open by content, cap pixels, decode fully, upright RGB PNG out.

Used by the web before anything is stored, so a rejected upload leaves no trace.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class ImageRejected(ValueError):
    """An upload we will not take. ``status`` is the HTTP status to answer with."""

    def __init__(self, field: str, code: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class CleanImage:
    png: bytes  # upright RGB PNG, what we store and the worker reads
    width: int
    height: int
    source_format: str


def validate_image(
    data: bytes, field: str, max_pixels: int, max_side: int | None = None
) -> CleanImage:
    """Check and normalise one uploaded image, or raise :class:`ImageRejected`.

    ``max_side`` caps the stored image's longest side: a 40-megapixel photo painted at
    1024 px needs no more than a couple of thousand pixels, and storing (and re-reading) the
    rest costs memory, storage and time on every job.
    """
    if not data:
        raise ImageRejected(field, "empty_file", "the file is empty", 422)
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and errors above twice that; we error at once.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
            fmt = img.format or "?"
            width, height = img.size
            if width * height > max_pixels:
                raise ImageRejected(
                    field, "too_many_pixels",
                    f"the image is {width}x{height} = {width * height} pixels; limit {max_pixels}",
                    413,
                )  # fmt: skip
            if max_side and fmt == "JPEG":
                img.draft("RGB", (max_side, max_side))  # DCT-scaled decode, never below max_side
            img.load()  # full decode: catches truncated files
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            if max_side and max(img.size) > max_side:
                img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    except ImageRejected:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageRejected(
            field, "too_many_pixels", "the image has too many pixels", 413
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected(
            field,
            "unsupported_type",
            "not a PNG, JPEG or WebP image (checked by content, not by name)",
            415,
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(
            field, "corrupt_image", f"the image cannot be decoded ({exc})", 422
        ) from None
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    return CleanImage(out.getvalue(), img.width, img.height, fmt)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode (CMYK, 16-bit, palette, alpha, greyscale) to 8-bit RGB; alpha onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")  # 16-bit grey -> 8-bit
        img.info.pop("transparency", None)  # a 16-bit colour key means nothing in 8 bits
    if img.mode == "P" or "transparency" in img.info:  # palette, or a tRNS colour key
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")
