"""How long a preset takes, as the form says it ("≈ 40 s on a 2-core CPU").

Rough time per iteration on the reference machine of the form's estimates (the 2-core
build VM, precision auto): a fixed part plus a part per pixel, fitted to the measurements
in bench/RESULTS.md ("Form time estimates"). A GPU is far faster.
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
