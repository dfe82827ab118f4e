"""stylequeue.shared.images.validate_image on its own: every mode to upright 8-bit RGB, the format
allowlist, the pixel limit before decoding. (tests/web covers what the API answers.)"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from stylequeue.shared.images import (
    ALLOWED_FORMATS,
    CleanImage,
    ImageRejected,
    upright_rgb,
    validate_image,
)
from tests.web import images

LIMIT = 4_000_000
WHITE = (255, 255, 255)


def encode(img: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **save)
    return out.getvalue()


def clean(data: bytes, max_pixels: int = LIMIT) -> tuple[CleanImage, Image.Image]:
    result = validate_image(data, "content", max_pixels)
    stored = Image.open(io.BytesIO(result.png))
    stored.load()
    assert stored.format == "PNG"
    assert stored.mode == "RGB"
    assert (result.width, result.height) == stored.size
    return result, stored


def rejected(data: bytes, max_pixels: int = LIMIT, field: str = "style") -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        validate_image(data, field, max_pixels)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    return info.value


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# ---- modes -----------------------------------------------------------------------------------


def test_rgb_png_is_kept_exactly() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (17, 23, 3), dtype=np.uint8)
    result, stored = clean(encode(Image.fromarray(pixels)))
    assert result.source_format == "PNG"
    assert (result.width, result.height) == (23, 17)
    assert np.array_equal(np.asarray(stored), pixels)


def test_greyscale_l() -> None:
    img = Image.new("L", (6, 4), 10)
    img.putpixel((5, 3), 200)
    _, stored = clean(encode(img))
    assert stored.getpixel((0, 0)) == (10, 10, 10)
    assert stored.getpixel((5, 3)) == (200, 200, 200)


def test_greyscale_with_alpha_la() -> None:
    img = Image.new("LA", (6, 4), (40, 255))
    img.putpixel((1, 1), (40, 0))  # fully transparent
    img.putpixel((2, 2), (0, 128))  # half-transparent black
    _, stored = clean(encode(img))
    assert stored.getpixel((0, 0)) == (40, 40, 40)
    assert stored.getpixel((1, 1)) == WHITE
    assert close(stored.getpixel((2, 2)), (127, 127, 127), 2)


def test_rgba_transparent_pixel_becomes_white() -> None:
    img = Image.new("RGBA", (6, 4), (255, 0, 0, 255))
    img.putpixel((3, 2), (0, 0, 0, 0))  # transparent black
    _, stored = clean(encode(img))
    assert stored.getpixel((0, 0)) == (255, 0, 0)
    assert stored.getpixel((3, 2)) == WHITE


def test_palette_with_a_transparent_index() -> None:
    img = Image.new("P", (6, 4), 1)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black, index 1 blue
    img.putpixel((0, 0), 0)
    data = encode(img, transparency=0)  # index 0 transparent (a tRNS chunk)
    assert Image.open(io.BytesIO(data)).mode == "P"
    _, stored = clean(data)
    assert stored.getpixel((0, 0)) == WHITE
    assert stored.getpixel((5, 3)) == (0, 0, 255)


def test_palette_without_transparency() -> None:
    img = Image.new("RGB", (6, 4), (0, 128, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    _, stored = clean(encode(img))
    assert stored.getpixel((2, 2)) == (0, 128, 0)


@pytest.mark.parametrize(
    ("mode", "colour", "key"),
    [("RGB", (0, 0, 0), (0, 0, 0)), ("L", 0, 0)],
    ids=["rgb-colour-key", "grey-colour-key"],
)
def test_colour_key_transparency_becomes_white(mode: str, colour: object, key: object) -> None:
    # PNG optimisers (oxipng, optipng) turn RGBA with on/off alpha into RGB + a tRNS colour
    # key: a logo's transparent background must still come out white, not black.
    opaque = (200, 30, 30) if mode == "RGB" else 200
    img = Image.new(mode, (6, 4), opaque)  # type: ignore[arg-type]
    img.putpixel((1, 1), colour)  # type: ignore[arg-type]
    data = encode(img, transparency=key)
    assert Image.open(io.BytesIO(data)).info.get("transparency") == key
    _, stored = clean(data)
    assert stored.getpixel((1, 1)) == WHITE
    expected = opaque if mode == "RGB" else (200, 200, 200)
    assert stored.getpixel((0, 0)) == expected


def test_cmyk_jpeg() -> None:
    data = encode(Image.new("CMYK", (10, 8), (255, 0, 0, 0)), "JPEG", quality=95)  # cyan
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    result, stored = clean(data)
    assert result.source_format == "JPEG"
    assert close(stored.getpixel((4, 4)), (0, 255, 255))


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    ramp = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(ramp)
    data = encode(img)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    _, stored = clean(data)
    values = [stored.getpixel((x, 0)) for x in range(4)]
    assert values[0] == (0, 0, 0)
    assert values[1] == (1, 1, 1)
    assert values[2] == (128, 128, 128)
    assert values[3] == (255, 255, 255)


def test_sixteen_bit_colour_key_does_not_spread_to_other_pixels() -> None:
    # Scaled to 8 bits, 16-bit values 0..128 all become 0: the key 0 must not make them
    # all transparent (the key itself is dropped; such files are rare).
    img = Image.fromarray(np.array([[0, 100, 128, 65535]], dtype=np.uint16))
    _, stored = clean(encode(img, transparency=0))
    assert stored.getpixel((1, 0)) == (0, 0, 0)
    assert stored.getpixel((2, 0)) == (0, 0, 0)
    assert stored.getpixel((3, 0)) == WHITE


def test_one_bit_png() -> None:
    img = Image.new("1", (8, 8), 0)
    img.putpixel((7, 7), 1)
    data = encode(img)
    assert Image.open(io.BytesIO(data)).mode == "1"
    _, stored = clean(data)
    assert stored.getpixel((0, 0)) == (0, 0, 0)
    assert stored.getpixel((7, 7)) == WHITE


def test_webp_with_alpha() -> None:
    img = Image.new("RGBA", (8, 8), (0, 0, 255, 255))
    img.paste((0, 0, 0, 0), (0, 0, 4, 8))
    result, stored = clean(encode(img, "WEBP", lossless=True))
    assert result.source_format == "WEBP"
    assert stored.getpixel((1, 4)) == WHITE
    assert stored.getpixel((6, 4)) == (0, 0, 255)


# ---- EXIF orientation ------------------------------------------------------------------------


def quadrant_image(fmt: str, orientation: int) -> bytes:
    """Stored 40x20: blue, with a red 10x10 square in the top-left corner."""
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    extra = {"quality": 95} if fmt == "JPEG" else {}
    return encode(img, fmt, exif=exif.tobytes(), **extra)


# orientation -> (upright size, where the red corner ends up, a point that must be blue)
ORIENTATIONS = {
    1: ((40, 20), (4, 4), (35, 15)),  # as stored
    3: ((40, 20), (35, 15), (4, 4)),  # rotated 180: red bottom-right
    6: ((20, 40), (15, 4), (4, 4)),  # rotated 90 clockwise: red top-right
    8: ((20, 40), (4, 35), (4, 4)),  # rotated 90 counter-clockwise: red bottom-left
}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(fmt: str, orientation: int) -> None:
    size, red_at, blue_at = ORIENTATIONS[orientation]
    result, stored = clean(quadrant_image(fmt, orientation))
    assert stored.size == size
    assert (result.width, result.height) == size
    assert close(stored.getpixel(red_at), (255, 0, 0)), stored.getpixel(red_at)
    assert close(stored.getpixel(blue_at), (0, 0, 255)), stored.getpixel(blue_at)
    assert stored.getexif().get(0x0112) in (None, 1)  # not rotated a second time by a viewer


# ---- formats, limits, damage -----------------------------------------------------------------


def test_allowlist() -> None:
    assert set(ALLOWED_FORMATS) == {"PNG", "JPEG", "WEBP"}


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO", "PPM"])
def test_other_formats_are_unsupported(fmt: str) -> None:
    data = encode(Image.new("RGB", (16, 16), "red"), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # a perfectly good image...
    error = rejected(data)
    assert (error.code, error.status) == ("unsupported_type", 415)  # ...just not one we take


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [(b"hello", "unsupported_type", 415),
     (b"\x89PNG\r\n", "unsupported_type", 415),  # a signature cut short
     (b"RIFF\x00\x00\x00\x00WEBP", "unsupported_type", 415),
     (b"\xff\xd8\xff\xe0garbage", "corrupt_image", 422)],  # a JPEG start, then nothing
    ids=["text", "png-signature", "riff-header", "jpeg-start"],
)  # fmt: skip
def test_not_an_image(data: bytes, code: str, status: int) -> None:
    error = rejected(data)
    assert (error.code, error.status) == (code, status)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` and whose pixel data is garbage."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"not zlib at all")
            + chunk(b"IEND", b""))  # fmt: skip


def test_pixel_limit_is_checked_before_decoding() -> None:
    # Undecodable pixel data: a 413 (not a 422) proves the size was checked first.
    data = _png_header_only(2000, 2000)
    error = rejected(data, max_pixels=1_000_000)
    assert (error.code, error.status) == ("too_many_pixels", 413)
    assert "2000x2000" in error.message and "1000000" in error.message
    # Within the limit, the same file is decoded and found broken.
    assert rejected(data, max_pixels=10_000_000).status == 422


def test_pixel_limit_boundary() -> None:
    data = encode(Image.new("RGB", (10, 10), "red"))
    clean(data, max_pixels=100)
    assert rejected(data, max_pixels=99).code == "too_many_pixels"


def test_pillow_bomb_warning_is_refused_even_under_our_limit() -> None:
    # 10000x9000 = 90M pixels: above Pillow's warning threshold (~89.5M).
    error = rejected(_png_header_only(10_000, 9_000), max_pixels=10**9)
    assert (error.code, error.status) == ("too_many_pixels", 413)


def test_huge_jpeg_header_is_refused_before_decoding() -> None:
    data = encode(Image.new("RGB", (1200, 1000), "red"), "JPEG")
    error = rejected(images.truncated(data), max_pixels=1_000_000)
    assert (error.code, error.status) == ("too_many_pixels", 413)


@pytest.mark.parametrize(
    "make",
    [images.noisy_png, images.noisy_jpeg,
     lambda: encode(Image.fromarray(np.random.default_rng(2).integers(
         0, 255, (64, 64, 3), dtype=np.uint8)), "WEBP", lossless=True)],
    ids=["png", "jpeg", "webp"],
)  # fmt: skip
def test_truncated(make) -> None:  # type: ignore[no-untyped-def]
    data = make()
    clean(data)  # whole, it is fine
    error = rejected(data[: len(data) // 2])
    assert (error.code, error.status) == ("corrupt_image", 422)


def test_empty() -> None:
    error = rejected(b"", field="content")
    assert (error.code, error.status, error.field) == ("empty_file", 422, "content")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_max_side_caps_the_stored_image_keeping_aspect(fmt: str) -> None:
    rng = np.random.default_rng(3)
    photo = Image.fromarray((rng.random((300, 900, 3)) * 255).astype(np.uint8))
    capped = validate_image(encode(photo, fmt), "content", LIMIT, max_side=120)
    assert (capped.width, capped.height) == (120, 40)
    assert Image.open(io.BytesIO(capped.png)).size == (120, 40)
    small = validate_image(encode(photo, fmt), "content", LIMIT, max_side=2000)
    assert (small.width, small.height) == (900, 300)  # never enlarged


def test_max_side_applies_after_exif_rotation() -> None:
    """The cap is on the upright image: a portrait photo stays portrait."""
    photo = Image.new("RGB", (400, 100), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    capped = validate_image(encode(photo, "JPEG", exif=exif), "content", LIMIT, max_side=80)
    assert (capped.width, capped.height) == (20, 80)


# ---- one decoding rule: the service's uploads and the CLI/worker's loader agree ---------------


def _ramp16(values: list[int]) -> Image.Image:
    img = Image.fromarray(np.array([values], dtype=np.uint16))
    assert img.mode.startswith("I;16")
    return img


def _palette_with_transparent_index() -> bytes:
    img = Image.new("P", (6, 4), 1)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 0)
    return encode(img, transparency=0)


def _la() -> bytes:
    img = Image.new("LA", (6, 4), (40, 255))
    img.putpixel((1, 1), (40, 0))
    img.putpixel((2, 2), (0, 128))
    return encode(img)


def _colour_key(mode: str) -> bytes:
    img = Image.new(mode, (6, 4), (200, 30, 30) if mode == "RGB" else 200)  # type: ignore[arg-type]
    img.putpixel((1, 1), (0, 0, 0) if mode == "RGB" else 0)
    return encode(img, transparency=(0, 0, 0) if mode == "RGB" else 0)


SAME_FILE = {
    # the full 16-bit range, and a dark 16-bit image (every value below 256: near black)
    "png16-ramp": lambda: encode(_ramp16([0, 128, 256, 257, 1000, 32768, 40000, 65280, 65535])),
    "png16-dark": lambda: encode(_ramp16([0, 50, 100, 200, 255])),
    "png16-colour-key": lambda: encode(_ramp16([0, 100, 200, 65535]), transparency=0),
    "I;16-ramp": lambda: images.png16((40, 30)),
    "palette-transparent-index": _palette_with_transparent_index,
    "LA": _la,
    "rgb-colour-key": lambda: _colour_key("RGB"),
    "grey-colour-key": lambda: _colour_key("L"),
    "cmyk-jpeg": lambda: encode(Image.new("CMYK", (10, 8), (255, 0, 0, 0)), "JPEG", quality=95),
    "exif-rotated-jpeg": images.exif_rotated_jpeg,
    "exif-rotated-png": lambda: quadrant_image("PNG", 6),
    "one-bit": lambda: encode(Image.new("1", (8, 8), 1)),
    "webp-alpha": lambda: encode(Image.new("RGBA", (8, 8), (0, 0, 9, 100)), "WEBP", lossless=True),
}


@pytest.mark.parametrize("make", SAME_FILE.values(), ids=list(SAME_FILE))
def test_service_and_engine_decode_the_same_file_alike(make) -> None:  # type: ignore[no-untyped-def]
    """An upload (validate_image) and `stylequeue transfer`'s loader (load_image) must see the
    same pixels, or the CLI and the service paint the same file differently."""
    from stylequeue.worker.engine.imageio import load_image

    data = make()
    _, stored = clean(data)
    loaded = load_image(data)
    assert loaded.mode == "RGB"
    assert np.array_equal(np.asarray(stored), np.asarray(loaded)), (
        np.asarray(stored).reshape(-1, 3)[:9].tolist(),
        np.asarray(loaded).reshape(-1, 3)[:9].tolist(),
    )


def test_sixteen_bit_is_scaled_as_the_png_spec_says() -> None:
    """8-bit = round(v * 255 / 65535): v = 257 k maps back to k exactly, and a dark 16-bit
    image stays dark (no guessing from the values that it is "really" 8-bit)."""
    values = [0, 128, 129, 257, 385, 386, 32768, 65535, 255]
    _, stored = clean(encode(_ramp16(values)))
    got = [stored.getpixel((x, 0))[0] for x in range(len(values))]
    assert got == [round(v * 255 / 65535) for v in values] == [0, 0, 1, 1, 1, 2, 128, 255, 1]


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [([0.0, 0.5, 1.0], [0, 128, 255]), ([0.0, 100.0, 300.0], [0, 100, 255])],
    ids=["unit-range", "byte-range"],
)
def test_float_greyscale(pixels: list[float], expected: list[int]) -> None:
    img = Image.fromarray(np.array([pixels], dtype=np.float32))
    assert img.mode == "F"
    out = upright_rgb(img)
    assert out.mode == "RGB"
    assert [out.getpixel((x, 0)) for x in range(3)] == [(v, v, v) for v in expected]
