"""Who runs next: the cost model, the priority classes and aging, decided without a clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stylequeue.shared import scheduling
from stylequeue.shared.celery_app import create_celery
from stylequeue.shared.scheduling import (
    AGE_AFTER_SECONDS,
    INTERACTIVE,
    LONG,
    cost_priority,
    job_cost_seconds,
    job_pixels,
    job_priority,
)
from stylequeue.shared.states import utcnow
from stylequeue.web.time_estimate import seconds_per_iteration


def test_the_form_and_the_scheduler_share_one_cost_model() -> None:
    # The form's estimate for a preset is the scheduler's cost of a 3:2 picture of that size.
    pixels = job_pixels(None, None, 384)
    assert job_cost_seconds(300, pixels) == pytest.approx(300 * seconds_per_iteration(384))


def test_stored_size_wins_over_max_size() -> None:
    assert job_pixels(40, 30, 512) == 1200
    assert job_pixels(None, 30, 300) == 60_000


@pytest.mark.parametrize(
    ("iterations", "size", "expected"),
    [(100, 256, INTERACTIVE), (8, 40, INTERACTIVE), (300, 384, LONG), (1000, 512, LONG)],
)
def test_cost_classes(iterations: int, size: int, expected: int) -> None:
    # quick (≈ 20 s) is interactive; balanced (≈ 2 min) and high (≈ 13 min) are long
    assert cost_priority(iterations, job_pixels(None, None, size)) == expected


def test_a_long_job_is_promoted_once_it_has_waited_long_enough() -> None:
    now = utcnow()
    pixels = job_pixels(None, None, 512)
    just_before = now - timedelta(seconds=AGE_AFTER_SECONDS - 1)
    at = now - timedelta(seconds=AGE_AFTER_SECONDS)
    assert job_priority(1000, pixels, just_before, now) == LONG
    assert job_priority(1000, pixels, at, now) == INTERACTIVE
    assert job_priority(8, 1200, now, now) == INTERACTIVE  # small: interactive from the start


def test_lower_runs_first_and_the_app_uses_the_configured_steps(
    make_settings: object,
) -> None:
    assert INTERACTIVE < LONG  # kombu's Redis transport BRPOPs the lowest step first
    assert INTERACTIVE in scheduling.PRIORITY_STEPS and LONG in scheduling.PRIORITY_STEPS
    app = create_celery(make_settings())  # type: ignore[operator]
    options = app.conf.broker_transport_options
    assert options["priority_steps"] == list(scheduling.PRIORITY_STEPS)
    assert options["sep"] == scheduling.PRIORITY_SEP
