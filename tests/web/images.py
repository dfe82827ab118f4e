"""Small test images, good and bad, made in memory."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **save)
    return out.getvalue()


def png(size: tuple[int, int] = (48, 32), color: str = "orange") -> bytes:
    return encode(Image.new("RGB", size, color))


def jpeg(size: tuple[int, int] = (48, 32), color: str = "teal") -> bytes:
    return encode(Image.new("RGB", size, color), "JPEG", quality=90)


def webp(size: tuple[int, int] = (48, 32)) -> bytes:
    return encode(Image.new("RGB", size, "purple"), "WEBP")


def cmyk_jpeg(size: tuple[int, int] = (40, 30)) -> bytes:
    return encode(Image.new("CMYK", size, (0, 255, 255, 0)), "JPEG")  # red in CMYK


def png16(size: tuple[int, int] = (40, 30)) -> bytes:
    ramp = np.linspace(0, 65535, size[0] * size[1], dtype=np.uint16).reshape(size[1], size[0])
    img = Image.fromarray(ramp)
    assert img.mode.startswith("I;16")
    return encode(img)


def palette_png(size: tuple[int, int] = (40, 30)) -> bytes:
    return encode(Image.new("RGB", size, "green").convert("P", palette=Image.Palette.ADAPTIVE))


def rgba_png(size: tuple[int, int] = (40, 30)) -> bytes:
    return encode(Image.new("RGBA", size, (255, 0, 0, 128)))


def grey_png(size: tuple[int, int] = (40, 30)) -> bytes:
    return encode(Image.new("L", size, 128))


def exif_rotated_jpeg() -> bytes:
    """Stored 40x20, left half red and right half blue, EXIF orientation 6 (rotate 90 CW):
    shown upright it is 20x40, red on top."""
    img = Image.new("RGB", (40, 20), "blue")
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def noisy_png(size: tuple[int, int] = (64, 64)) -> bytes:
    """Incompressible, so truncating it cuts pixel data, not just the trailer."""
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)))


def noisy_jpeg(size: tuple[int, int] = (64, 64)) -> bytes:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=95)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny valid-looking PNG whose header claims ``width x height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def open_stored(data: bytes) -> Image.Image:
    """A stored input as the worker reads it: decoded by the one rule (shared.images'
    ``upright_rgb``: EXIF orientation, 16-bit, alpha, CMYK), whatever format it is kept in."""
    from stylequeue.shared.images import upright_rgb

    img = Image.open(io.BytesIO(data))
    assert img.format in ("PNG", "JPEG", "WEBP"), img.format
    img.load()
    return upright_rgb(img)


def stored_format(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as img:
        return str(img.format)


def open_png(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    img.load()
    return img
