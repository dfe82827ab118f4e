"""How long a preset takes, as the form says it ("≈ 40 s on a 2-core CPU").

Rough time per iteration on the reference machine of the form's estimates: the 2-core build
VM (tensorflow-cpu 2.21, precision auto = mixed_bfloat16 there, one fused VGG19 + Adam
step), measured idle with worker.engine.transfer on a 3:2 image: 0.205 s at 256 px, 0.435 s
at 384 px, 0.759 s at 512 px. Cost is about a fixed part plus a part per pixel; a GPU is far
faster (no figure measured here yet).
"""

from __future__ import annotations

ESTIMATE_MACHINE = "a 2-core CPU"
ESTIMATE_FIXED_S = 0.02
ESTIMATE_PER_PIXEL_S = 4.2e-6


def seconds_per_iteration(max_size: int) -> float:
    pixels = max_size * max_size * 2 / 3  # a 3:2 photo
    return ESTIMATE_FIXED_S + ESTIMATE_PER_PIXEL_S * pixels


def _human(seconds: float) -> str:
    if seconds < 50:
        return f"{max(5, round(seconds / 5) * 5)} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{max(1, round(minutes))} min"
    return f"{minutes / 60:.1f} h"


def preset_estimate(iterations: int, max_size: int) -> str:
    return f"≈ {_human(iterations * seconds_per_iteration(max_size))} on {ESTIMATE_MACHINE}"
