"""Image I/O the worker and the CLI share: Pillow and NumPy only.

No TensorFlow here on purpose, so loading or encoding an image never pays for importing it.
Arrays are HxWx3 ``uint8`` RGB unless a function says otherwise; the engine works on
float32 pixels in [0, 1] (see :func:`to_float01` / :func:`to_uint8`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

from stylequeue.shared.images import upright_rgb

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray)


def load_image(src: str | Path | bytes | BinaryIO) -> Image.Image:
    """Open and fully decode an image as upright RGB.

    Modes become RGB by :func:`stylequeue.shared.images.upright_rgb`, the rule the web's
    upload validation uses too, so a file reads the same here and in the service.
    """
    if isinstance(src, bytes | bytearray | memoryview):
        src = io.BytesIO(bytes(src))
    with Image.open(src) as opened:
        opened.load()  # full decode now: truncated files fail here, not later
        img = upright_rgb(opened)
        if img is opened:
            img = opened.copy()  # detach from the file handle we are about to close
    return img


def decode_image(data: bytes) -> np.ndarray:
    """Bytes of any supported format -> HxWx3 uint8 RGB array."""
    return np.asarray(load_image(data), dtype=np.uint8).copy()


def encode_png(arr: np.ndarray) -> bytes:
    """HxWx3 uint8 (or float in [0, 1]) RGB array -> PNG bytes."""
    if arr.dtype != np.uint8:
        arr = to_uint8(arr)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def image_size(img: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a PIL image or an HxWxC array."""
    if isinstance(img, Image.Image):
        return img.size
    return int(img.shape[1]), int(img.shape[0])


def resize_max(img: ImageLike, max_size: int) -> ImageLike:
    """Shrink so the longest side is at most ``max_size``, keeping the aspect ratio.

    Never enlarges: ``max_size`` is a cap, and upscaling a small photo only costs time and
    blurs it. Returns the same type it was given (the input itself when nothing changes).
    """
    w, h = image_size(img)
    if max(w, h) <= max_size:
        return img
    return resize_longest(img, max_size)


def resize_longest(img: ImageLike, longest: int) -> ImageLike:
    """Resize (up or down) so the longest side is exactly ``longest``, keeping aspect."""
    w, h = image_size(img)
    scale = longest / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return resize_to(img, size)


def resize_to(img: ImageLike, size: tuple[int, int]) -> ImageLike:
    """Resize to (width, height): Lanczos when shrinking, bicubic when enlarging."""
    if image_size(img) == size:
        return img
    pil = img if isinstance(img, Image.Image) else Image.fromarray(_as_uint8(img), "RGB")
    shrinking = size[0] * size[1] < pil.size[0] * pil.size[1]
    out = pil.resize(size, Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC)
    if isinstance(img, Image.Image):
        return out
    return np.asarray(out, dtype=np.uint8).copy()


def as_rgb_array(img: Image.Image | np.ndarray) -> np.ndarray:
    """PIL image or array (HxW, HxWx1, HxWx3, HxWx4; uint8 or float in [0, 1]) -> HxWx3 uint8."""
    if isinstance(img, Image.Image):
        return np.asarray(upright_rgb(img), dtype=np.uint8).copy()
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxWx3 RGB image array, got shape {arr.shape}")
    arr = _as_uint8(arr)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = np.asarray(upright_rgb(Image.fromarray(arr, "RGBA")))
    return np.ascontiguousarray(arr)


def _as_uint8(arr: np.ndarray) -> npt.NDArray[np.uint8]:
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return to_uint8(arr)
    # NumPy's stubs type clip() of an array of unknown dtype, and so this expression, as Any
    out: npt.NDArray[np.uint8] = np.clip(arr, 0, 255).astype(np.uint8)
    return out


def to_float01(arr: np.ndarray) -> npt.NDArray[np.float32]:
    """uint8 RGB -> float32 in [0, 1]: the pixel scale the engine optimises on."""
    return np.asarray(arr, dtype=np.float32) / np.float32(255.0)


def to_uint8(x: np.ndarray) -> npt.NDArray[np.uint8]:
    """float pixels in [0, 1] -> uint8, rounded (not truncated) and clipped."""
    # NumPy's stubs type rint() of a float32 array, and so this expression, as Any
    out: npt.NDArray[np.uint8] = np.clip(
        np.rint(np.asarray(x, dtype=np.float32) * 255.0), 0, 255
    ).astype(np.uint8)
    return out


# ---- colour -------------------------------------------------------------------------------
# BT.601 full-range YCbCr (what JPEG uses), on float pixels in [0, 1].

_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float64,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
_CHROMA_OFFSET = np.array([0.0, 0.5, 0.5], dtype=np.float64)


def rgb_to_ycbcr(rgb: np.ndarray) -> npt.NDArray[np.float64]:
    """float RGB in [0, 1] -> YCbCr in [0, 1] (chroma centred on 0.5)."""
    return np.asarray(rgb, dtype=np.float64) @ _RGB_TO_YCBCR.T + _CHROMA_OFFSET


def ycbcr_to_rgb(ycc: np.ndarray) -> npt.NDArray[np.float64]:
    """Inverse of :func:`rgb_to_ycbcr` (not clipped)."""
    return (np.asarray(ycc, dtype=np.float64) - _CHROMA_OFFSET) @ _YCBCR_TO_RGB.T


def preserve_colors(stylised: np.ndarray, content: np.ndarray) -> npt.NDArray[np.float32]:
    """Luminance-only transfer: the stylised image's Y with the content's Cb/Cr.

    Both are float RGB in [0, 1] of the same size; returns float32 RGB in [0, 1]. This is the
    "original colours" post-process of Gatys et al. (2016): the style shapes light and
    texture, the photo keeps its colours.
    """
    ycc = rgb_to_ycbcr(content)
    ycc[..., 0] = rgb_to_ycbcr(stylised)[..., 0]
    return np.clip(ycbcr_to_rgb(ycc), 0.0, 1.0).astype(np.float32)
