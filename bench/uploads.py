"""What an upload costs the server before and after issue 12: stored bytes, and the CPU spent
refusing a bad request. Prints figures; asserts nothing (bench/RESULTS-uploads.md).

- Stored bytes of a JPEG photo pair: the old rule (``validate_image``: upright RGB PNG at
  most 2 x max_size a side) against ``shared.uploads.compact`` (a JPEG as sent when within
  that size, else lossless WebP).
- CPU to refuse a flat 6000x6000 PNG sent with an HTML "style": the old order (decode the
  content, then look at the style) against the new one (every header first).

    .venv/bin/python bench/uploads.py [--side 2048]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from stylequeue.shared.images import ImageRejected, read_header, validate_image
from stylequeue.shared.uploads import compact


def photo(width: int, height: int, seed: int) -> bytes:
    """A photo-like JPEG: smooth shapes, texture and sensor noise, quality 90."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 90 * np.sin(x / (width / 7) + seed),
            128 + 90 * np.cos(y / (height / 5)),
            128 + 60 * np.sin((x + y) / (width / 11)),
        ],
        axis=-1,
    )
    texture = rng.normal(0, 18, (height, width, 3))
    img = Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def cpu(fn: Callable[[], None]) -> float:
    start = time.process_time()
    with contextlib.suppress(ImageRejected):
        fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=2048, help="2 x STYLEQUEUE_MAX_SIZE")
    args = parser.parse_args()
    side, pixels = args.side, 40_000_000

    pair = {"within (1600x1200)": (1600, 1200), "larger (4000x3000)": (4000, 3000)}
    print(f"inputs kept at most {side} px a side")
    for label, (w, h) in pair.items():
        files = [photo(w, h, 1), photo(w, h, 2)]
        sent = sum(map(len, files))
        old = sum(len(validate_image(f, "x", pixels, side).png) for f in files)
        new = 0
        for f in files:
            new += len(compact(f, read_header(f, "x", pixels), "x", side).data)
        print(
            f"JPEG pair {label}: sent {sent / 1e6:.2f} MB, stored before {old / 1e6:.2f} MB "
            f"(PNG), now {new / 1e6:.2f} MB"
        )

    flat = io.BytesIO()
    Image.new("RGB", (6000, 6000), "white").save(flat, format="PNG", optimize=True)
    content, style = flat.getvalue(), b"<html><body>not an image</body></html>"

    def before() -> None:  # the old order: each file decoded in turn
        validate_image(content, "content", pixels, side)
        validate_image(style, "style", pixels, side)

    def after() -> None:  # every header first
        read_header(content, "content", pixels)
        read_header(style, "style", pixels)

    print(
        f"flat 6000x6000 PNG ({len(content) / 1e3:.0f} KB) + HTML style, CPU to refuse: "
        f"before {cpu(before):.2f} s, now {cpu(after) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
