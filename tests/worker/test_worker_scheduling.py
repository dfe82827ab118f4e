"""Who runs next, through one real ``celery worker`` (prefork, one warm child).

The order is read from the rows' ``started_at``; every job is tiny (random weights, 40 px).
The cost threshold is lowered for the test so that "long" jobs are a few dozen iterations:
the priority is chosen by the sender (this process), from the same module the web uses.
"""

from __future__ import annotations

from typing import Any

import pytest

from stylequeue.shared import scheduling
from stylequeue.shared.settings import Settings
from tests.factories import get_job, submit
from tests.worker_process import WorkerProcess, wait_for_iteration, wait_for_status

TINY = {"iterations": 4, "snapshot_every": 0}  # cost ≈ 0.1 s
LONGISH = {"iterations": 30, "snapshot_every": 0}  # cost ≈ 0.7 s
BLOCKER = {"iterations": 120, "snapshot_every": 0}  # keeps the worker busy meanwhile


def _run_in_order(settings: Settings, worker: WorkerProcess, ids: list[str]) -> list[str]:
    """Wait for every job to succeed; return the ids by ``started_at``."""
    for job_id in ids:
        done = wait_for_status(settings, job_id, "succeeded", "failed", worker=worker)
        assert done.status == "succeeded", done.error
    return sorted(ids, key=lambda i: get_job(settings, i).started_at)


def test_small_job_goes_ahead_of_long_ones(
    worker_settings: Settings,
    celery_app: Any,
    celery_worker: WorkerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduling, "INTERACTIVE_MAX_SECONDS", 0.3)
    blocker = submit(worker_settings, celery_app, params=BLOCKER, owner="web:blocker")
    wait_for_iteration(worker_settings, blocker.id, 1)  # the one worker is busy now
    long1 = submit(worker_settings, celery_app, params=LONGISH, owner="web:a")
    small = submit(worker_settings, celery_app, params=TINY, owner="web:b")
    long2 = submit(worker_settings, celery_app, params=LONGISH, owner="web:c")
    assert get_job(worker_settings, blocker.id).status == "running"  # all sent meanwhile

    order = _run_in_order(
        worker_settings, celery_worker, [blocker.id, long1.id, small.id, long2.id]
    )
    assert order == [blocker.id, small.id, long1.id, long2.id]
