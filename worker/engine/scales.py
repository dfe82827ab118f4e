"""Coarse to fine (``scales``): which sizes a job paints at, for how many iterations each, and
how one scale's result becomes the next one's start.

With ``scales = S`` the job paints at 1/2^(S-1) of its size first, then doubles until the
size asked for (256 -> 512 for S = 2 at 512 px), each scale starting from the previous
scale's best image, enlarged. The optimiser starts afresh at each scale: its state is made
of the gradients of another size's loss (measured in bench/RESULTS.md: carrying Adam's
moments across, enlarged, did not help).

The iterations are numbered through (1 to ``iterations``, one progress entry each) and
split by :data:`SHARES`, so a coarse scale's cheap iterations do most of the early work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# Share of the iterations of each scale, coarsest first, for S = 1..4 scales. A coarse
# iteration costs about a quarter of the next finer one's.
SHARES: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (0.5, 0.5),
    3: (0.4, 0.3, 0.3),
    4: (0.3, 0.25, 0.25, 0.2),
}


@dataclass(frozen=True)
class Scale:
    """One stage: the content's longest side, and its iterations ``first`` to ``last``."""

    longest: int
    first: int
    last: int


def plan(longest: int, scales: int, iterations: int) -> list[Scale]:
    """The stages of a job whose final image's longest side is ``longest``.

    Every stage gets at least one iteration (``iterations >= scales``: the parameter table
    checks it); the last stage is the final size.
    """
    if not 1 <= scales <= len(SHARES) or iterations < scales:
        raise ValueError(f"{scales} scales need 1 to {len(SHARES)} scales and that many iterations")
    counts = [max(1, round(share * iterations)) for share in SHARES[scales][:-1]]
    counts.append(iterations - sum(counts))
    while counts[-1] < 1:  # rounding took the last one's: take it back from the largest
        counts[counts.index(max(counts[:-1]))] -= 1
        counts[-1] += 1
    stages: list[Scale] = []
    last = 0
    for index, count in enumerate(counts):
        size = max(1, round(longest / 2 ** (scales - 1 - index)))
        stages.append(Scale(longest=size, first=last + 1, last=last + count))
        last += count
    return stages


def upsample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float32 HxWx3 image in [0, 1] enlarged (bicubic, in float) to ``shape`` (H, W)."""
    h, w = shape
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), "F").resize(
                (w, h), Image.Resampling.BICUBIC
            ),
            dtype=np.float32,
        )
        for c in range(image.shape[2])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)
