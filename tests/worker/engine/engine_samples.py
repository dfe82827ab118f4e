"""Synthetic images and parameters for the engine tests (imported by the test modules)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stylequeue.shared.params import TransferParams


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like image: colour gradients plus a few soft blobs (no pixel noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([x / w, y / h, 0.5 + 0.3 * np.sin((x + y) / 9.0)], axis=-1)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 12)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - blob) + rng.uniform(0, 1, 3) * blob
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def stripes(
    h: int, w: int, period: int = 6, colours: tuple = ((230, 40, 30), (20, 40, 200))
) -> np.ndarray:
    """A strongly textured 'painting': diagonal stripes in two colours."""
    y, x = np.mgrid[0:h, 0:w]
    mask = ((x + y) // period) % 2 == 0
    return np.where(mask[..., None], np.array(colours[0]), np.array(colours[1])).astype(np.uint8)


def dots(h: int, w: int, period: int = 8) -> np.ndarray:
    """Another style: yellow dots on dark green."""
    y, x = np.mgrid[0:h, 0:w]
    d = ((x % period) - period / 2) ** 2 + ((y % period) - period / 2) ** 2 < (period / 3) ** 2
    return np.where(d[..., None], np.array((240, 220, 40)), np.array((10, 70, 30))).astype(np.uint8)


# Fast parameters: the default balance, tiny size, few iterations, no snapshots.
FAST = replace(TransferParams(), iterations=8, max_size=48, snapshot_every=0)

# Content only, from noise, a large step and heavy momentum: the loss falls, then overshoots
# and rises again, so the best iteration is in the middle (neither the first nor the last).
OVERSHOOT = replace(
    FAST,
    content_layers=(("block2_conv1", 1.0),),
    style_layers=(("block1_conv1", 1.0),),
    style_weight=0.0,
    tv_weight=0.0,
    init="noise",
    learning_rate=0.2,
    beta_1=0.99,
    iterations=6,
)
