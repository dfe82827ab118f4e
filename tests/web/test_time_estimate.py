"""The form's time estimates: the model reproduces the figures it was fitted to."""

from __future__ import annotations

import pytest

from stylequeue.web.time_estimate import preset_estimate, seconds_per_iteration

MEASURED = {256: 0.205, 384: 0.435, 512: 0.759}  # s per iteration, see the module docstring


@pytest.mark.parametrize(("size", "seconds"), MEASURED.items())
def test_the_model_matches_its_measurements(size: int, seconds: float) -> None:
    assert seconds_per_iteration(size) == pytest.approx(seconds, rel=0.05)


def test_estimates_read_as_seconds_minutes_or_hours() -> None:
    assert preset_estimate(1, 16) == "≈ 5 s on a 2-core CPU"  # never under 5 s
    assert preset_estimate(100, 256) == "≈ 20 s on a 2-core CPU"
    assert preset_estimate(1000, 512) == "≈ 13 min on a 2-core CPU"
    assert preset_estimate(10_000, 512) == "≈ 2.1 h on a 2-core CPU"
