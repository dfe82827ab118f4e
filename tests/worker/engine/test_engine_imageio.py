"""Image I/O and colour helpers: Pillow/NumPy only, no TensorFlow."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_samples import smooth_image
from PIL import Image

from stylequeue.worker.engine import imageio
from stylequeue.worker.engine.imageio import (
    decode_image,
    encode_png,
    load_image,
    preserve_colors,
    resize_max,
    rgb_to_ycbcr,
)

REPO = Path(__file__).resolve().parents[3]


def _png(img: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


def test_importing_io_helpers_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from stylequeue.worker.engine import load_image, decode_image, encode_png, resize_max\n"
        "from stylequeue.worker.engine import WeightsUnavailable\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_png_round_trip_is_lossless() -> None:
    arr = smooth_image(20, 30)
    out = decode_image(encode_png(arr))
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    assert np.array_equal(out, arr)


def test_encode_png_accepts_float_pixels() -> None:
    arr = np.full((4, 5, 3), 0.5, dtype=np.float32)
    assert np.all(decode_image(encode_png(arr)) == 128)


def test_load_image_applies_exif_orientation() -> None:
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[:, :10] = (255, 0, 0)  # left half red
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    loaded = load_image(buf.getvalue())
    assert loaded.size == (10, 20)  # width and height swapped
    top = np.asarray(loaded)[:5].astype(int)
    assert top[..., 0].mean() > 200  # the red half is now on top
    assert loaded.mode == "RGB"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("L", (77, 77, 77)),
        ("CMYK", None),
        ("P", None),
        ("RGBA", (255, 255, 255)),  # fully transparent -> white, not black
        ("LA", (255, 255, 255)),
    ],
)
def test_any_mode_ends_as_rgb(mode: str, expected: tuple[int, int, int] | None) -> None:
    if mode in ("RGBA", "LA"):
        img = Image.new(mode, (6, 4), (0,) * len(mode))  # transparent black
    elif mode == "L":
        img = Image.new("L", (6, 4), 77)
    else:
        img = Image.new("RGB", (6, 4), (10, 200, 30)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    out = load_image(buf.getvalue())
    assert out.mode == "RGB" and out.size == (6, 4)
    if expected is not None:
        assert tuple(np.asarray(out)[0, 0]) == expected


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.full((4, 4), 32768, dtype=np.uint16)  # mid grey in 16 bits
    path = tmp_path / "grey16.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(load_image(path))
    assert out.shape == (4, 4, 3)
    assert 120 <= int(out[0, 0, 0]) <= 135


def test_truncated_file_fails_on_load() -> None:
    data = _png(Image.new("RGB", (64, 64), (1, 2, 3)))
    with pytest.raises(OSError):
        load_image(data[: len(data) // 2])


def test_resize_max_keeps_aspect_and_never_enlarges() -> None:
    arr = smooth_image(30, 60)
    small = resize_max(arr, 20)
    assert isinstance(small, np.ndarray) and small.shape == (10, 20, 3)
    assert resize_max(arr, 100) is arr  # a cap, not a target
    pil = Image.fromarray(arr)
    out = resize_max(pil, 40)
    assert isinstance(out, Image.Image) and out.size == (40, 20)


def test_resize_longest_enlarges_when_asked() -> None:
    arr = smooth_image(10, 20)
    assert imageio.resize_longest(arr, 40).shape == (20, 40, 3)


def test_as_rgb_array_normalises_shapes_and_dtypes() -> None:
    grey = np.full((3, 4), 9, dtype=np.uint8)
    assert imageio.as_rgb_array(grey).shape == (3, 4, 3)
    floats = np.full((3, 4, 3), 1.0, dtype=np.float32)
    assert np.all(imageio.as_rgb_array(floats) == 255)
    with pytest.raises(ValueError, match="HxWx3"):
        imageio.as_rgb_array(np.zeros((2, 3, 5), np.uint8))


def test_ycbcr_round_trip_and_known_values() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.random((5, 7, 3))
    assert np.allclose(imageio.ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-9)
    grey = rgb_to_ycbcr(np.full((1, 1, 3), 0.25))
    assert np.allclose(grey, [[[0.25, 0.5, 0.5]]])  # grey has neutral chroma


def test_preserve_colors_takes_luminance_from_one_and_chroma_from_other() -> None:
    content = imageio.to_float01(smooth_image(16, 16, seed=1))
    stylised = imageio.to_float01(smooth_image(16, 16, seed=2)[::-1])
    out = preserve_colors(stylised, content)
    out_ycc, c_ycc, s_ycc = rgb_to_ycbcr(out), rgb_to_ycbcr(content), rgb_to_ycbcr(stylised)
    # equal up to where clipping to [0, 1] had to bend the colour
    assert np.abs(out_ycc[..., 1:] - c_ycc[..., 1:]).mean() < 0.01
    assert np.abs(out_ycc[..., 0] - s_ycc[..., 0]).mean() < 0.01
    assert np.abs(s_ycc[..., 1:] - c_ycc[..., 1:]).mean() > 0.03  # the test can fail
