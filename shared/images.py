"""Images to upright 8-bit RGB, and upload validation.

:func:`upright_rgb` is THE decoding rule: the web's upload validation (:func:`read_header` for
every file first, then :func:`decode_upright`, before anything is stored, so a rejected upload
leaves no trace; ``shared.uploads``) and the engine's loader
(``worker.engine.imageio``, used by the worker and ``stylequeue transfer``) both call it, so
the service and the CLI paint the same file alike. Pillow and NumPy only.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
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


@dataclass(frozen=True)
class ImageHeader:
    """What an upload's header says, read without decoding a pixel."""

    format: str  # a key of ALLOWED_FORMATS
    width: int  # upright: EXIF orientation applied
    height: int


@contextmanager
def _rejections(field: str) -> Iterator[None]:
    """Pillow's errors as :class:`ImageRejected`, each with its status and code."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and errors above twice that; we error at once.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
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


_TURNED = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation the header carries (PNG's ``getexif`` would decode the image to
    look past the pixel data; an eXIf chunk there is applied at decoding all the same)."""
    raw = img.info.get("exif")
    if not raw:
        return None
    exif = Image.Exif()
    exif.load(raw)
    value = exif.get(0x0112)
    return value if isinstance(value, int) else None


def read_header(data: bytes, field: str, max_pixels: int) -> ImageHeader:
    """Type and size of an upload from its header alone (no pixel is decoded), or
    :class:`ImageRejected`: empty (422), not PNG/JPEG/WebP (415), over ``max_pixels`` (413).
    The web checks every file this way before it decodes any of them."""
    if not data:
        raise ImageRejected(field, "empty_file", "the file is empty", 422)
    with _rejections(field), Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as img:
        width, height = img.size
        fmt = img.format or "?"
        turned = _orientation(img) in _TURNED
    if width * height > max_pixels:
        raise ImageRejected(
            field, "too_many_pixels",
            f"the image is {width}x{height} = {width * height} pixels; limit {max_pixels}",
            413,
        )  # fmt: skip
    return ImageHeader(fmt, height, width) if turned else ImageHeader(fmt, width, height)


def decode_upright(data: bytes, field: str, max_side: int | None = None) -> Image.Image:
    """Decode a whole upload (a truncated file fails here) to upright 8-bit RGB
    (:func:`upright_rgb`), its longest side capped at ``max_side``. Check the header first
    (:func:`read_header`): this decodes whatever size the file claims."""
    with _rejections(field):
        img: Image.Image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
        if max_side and img.format == "JPEG":
            img.draft("RGB", (max_side, max_side))  # DCT-scaled decode, never below max_side
        img.load()  # full decode: catches truncated files
        img = upright_rgb(img)
        if max_side and max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return img


def validate_image(
    data: bytes, field: str, max_pixels: int, max_side: int | None = None
) -> CleanImage:
    """Check and normalise one uploaded image, or raise :class:`ImageRejected`: its header
    (:func:`read_header`), then the whole file (:func:`decode_upright`), as a PNG.

    ``max_side`` caps the stored image's longest side: a 40-megapixel photo painted at
    1024 px needs no more than a couple of thousand pixels, and storing (and re-reading) the
    rest costs memory, storage and time on every job.
    """
    header = read_header(data, field, max_pixels)
    img = decode_upright(data, field, max_side)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    return CleanImage(out.getvalue(), img.width, img.height, header.format)


# 16-bit (and 32-bit integer) greyscale: PNG's 16-bit samples span 0..65535.
_WIDE_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})


def upright_rgb(img: Image.Image) -> Image.Image:
    """A decoded image of any mode -> upright 8-bit RGB: the one rule for every reader.

    - EXIF orientation is applied (and its tag dropped, so nothing rotates it twice).
    - 16-bit greyscale is scaled as the PNG specification says, ``round(v * 255 / 65535)``
      (so 257 k gives back k, and a dark 16-bit image stays dark); a 16-bit colour key is
      dropped (at 8 bits it would make neighbouring values transparent too).
    - Float greyscale (``F``, e.g. TIFF) in [0, 1] is scaled to 0..255, else clipped to it.
    - Alpha, and a PNG colour key (``tRNS``: a palette index, grey level or RGB colour), is
      composited onto white: dropping it would expose whatever the transparent pixels hold.
    - CMYK, palette, 1-bit and greyscale are converted by Pillow.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in _WIDE_GREY or img.mode == "F":
        img = _grey_to_8_bits(img)
    if "transparency" in img.info and img.mode not in _ALPHA:
        img = img.convert("RGBA")
    if img.mode in _ALPHA:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


def _grey_to_8_bits(img: Image.Image) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = 1.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 255.0
    else:
        top = 65535.0
    grey = np.clip(np.rint(np.nan_to_num(arr) * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L")  # a fresh image: no colour key, no EXIF
