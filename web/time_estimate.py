"""How long a preset takes, as the form says it ("≈ 40 s on a 2-core CPU").

The cost model (seconds per iteration on the reference machine: a fixed part plus a part
per pixel, fitted to bench/RESULTS.md, "Form time estimates") lives in
``shared/scheduling.py``: the scheduler orders jobs by the same figures. A GPU is far
faster.
"""

from __future__ import annotations

from stylequeue.shared import scheduling

ESTIMATE_MACHINE = "a 2-core CPU"


def seconds_per_iteration(max_size: int) -> float:
    return scheduling.seconds_per_iteration(max_size * max_size * 2 / 3)  # a 3:2 photo


def _human(seconds: float) -> str:
    if seconds < 50:
        return f"{max(5, round(seconds / 5) * 5)} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{max(1, round(minutes))} min"
    return f"{minutes / 60:.1f} h"


def preset_estimate(iterations: int, max_size: int) -> str:
    return f"≈ {_human(iterations * seconds_per_iteration(max_size))} on {ESTIMATE_MACHINE}"
