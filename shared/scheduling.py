"""Who runs next: a job's cost, its priority class, and when a long job has waited enough.

**Cost** is the model behind the form's time estimates (``web/time_estimate.py``): seconds
on the reference machine (the 2-core build VM, precision auto) for ``iterations`` steps of
a ``width`` x ``height`` picture, a fixed part plus a part per pixel per iteration, fitted
to bench/RESULTS.md ("Form time estimates"). A GPU is far faster; only the ratio between
jobs matters here.

**Priority** rides on kombu's Redis transport: each queue is one list per priority step and
a worker's ``BRPOP`` names the lists lowest step first, so a waiting message of a lower
number is always taken before a higher one (0 runs first; FIFO within one step). With
prefetch 1 and acks late a worker takes a message only when it is free, so the choice is
made when a worker frees up, among everything then waiting.

- :data:`INTERACTIVE` (0): a job whose cost is at most :data:`INTERACTIVE_MAX_SECONDS`.
- :data:`LONG`: every other job.

**Aging** keeps long jobs from starving: a long job that has waited
:data:`AGE_AFTER_SECONDS` since it was submitted is sent again by the sweeper at
:data:`INTERACTIVE`, behind the interactive jobs already waiting and ahead of every one
submitted later (the old message finds the job taken and is dropped: ``run_job`` ignores
a job that is running or finished). Aging rather than reserved capacity because it works
on a fleet of one worker, leaves no worker idle while work waits, and bounds a long job's
wait: the age plus the interactive work already waiting when it was promoted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

ESTIMATE_FIXED_S = 0.02  # seconds per iteration, whatever the size
ESTIMATE_PER_PIXEL_S = 4.2e-6  # seconds per pixel per iteration

# kombu's Redis transport: the priority steps (one list each) and the separator of the
# list names (``<queue><sep><step>``; step 0 is the bare queue name). The Celery app is
# configured with these, and everything that reads the broker reads them from the app.
PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"

INTERACTIVE = 0  # runs first
LONG = 6
INTERACTIVE_MAX_SECONDS = 120.0  # cost at most this (reference machine): interactive
AGE_AFTER_SECONDS = 900  # a long job waiting this long is promoted to INTERACTIVE

# Fair share: at most this many of one owner's jobs in the broker at once (sent and
# waiting, or running); see shared/jobs.py, top_up_owner. The default of the setting
# STYLEQUEUE_OWNER_SLOTS.
OWNER_SLOTS = 1


def seconds_per_iteration(pixels: float) -> float:
    """The reference machine's seconds per iteration for a picture of ``pixels`` pixels."""
    return ESTIMATE_FIXED_S + ESTIMATE_PER_PIXEL_S * pixels


def job_pixels(width: int | None, height: int | None, max_size: int) -> int:
    """The pixels a job paints: its stored output size, or (a row without one) a 3:2
    picture of its ``max_size``, as the form's estimates assume."""
    if width is not None and height is not None:
        return width * height
    return max_size * max_size * 2 // 3


def job_cost_seconds(iterations: int, pixels: int) -> float:
    """Estimated seconds on the reference machine for the whole job."""
    return iterations * seconds_per_iteration(pixels)


def cost_priority(iterations: int, pixels: int) -> int:
    """The priority class a job's cost alone gives it."""
    if job_cost_seconds(iterations, pixels) <= INTERACTIVE_MAX_SECONDS:
        return INTERACTIVE
    return LONG


def is_aged(created_at: datetime, now: datetime, age_after: float = AGE_AFTER_SECONDS) -> bool:
    """Whether a job submitted at ``created_at`` has waited long enough to be promoted."""
    return now - created_at >= timedelta(seconds=age_after)


def job_priority(
    iterations: int,
    pixels: int,
    created_at: datetime,
    now: datetime,
    age_after: float = AGE_AFTER_SECONDS,
) -> int:
    """The priority to send a job at now: its cost class, promoted to :data:`INTERACTIVE`
    once it has waited ``age_after`` seconds since it was submitted."""
    base = cost_priority(iterations, pixels)
    if base != INTERACTIVE and is_aged(created_at, now, age_after):
        return INTERACTIVE
    return base
