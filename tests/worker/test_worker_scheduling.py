"""Who runs next, through one real ``celery worker`` (prefork, one warm child).

The order is read from the rows' ``started_at``; every job is tiny (random weights, 40 px).
The cost threshold is lowered for the test so that "long" jobs are a few dozen iterations:
the priority is chosen by the sender (this process), from the same module the web uses.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from stylequeue.shared import scheduling
from stylequeue.shared.db import get_sessionmaker
from stylequeue.shared.jobs import top_up_owner
from stylequeue.shared.settings import Settings
from tests.broker_messages import run_job_ids
from tests.factories import get_job, make_job, submit
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


def test_one_owners_backlog_does_not_crowd_out_another(
    worker_settings: Settings, celery_app: Any, celery_worker: WorkerProcess
) -> None:
    """Owner A queues eight jobs, then B one: on one worker B's starts no later than A's
    second. Only the submit's and the end of each job's top-ups send A's later jobs."""
    sessions = get_sessionmaker(worker_settings.database_url)
    client = redis.Redis.from_url(worker_settings.redis_url)

    def web_submit(owner: str) -> str:  # what web/submission.py does: commit, then top up
        job = make_job(worker_settings, owner=owner, params=TINY)
        top_up_owner(sessions, celery_app, owner, client)
        return job.id

    try:
        blocker = submit(worker_settings, celery_app, params=BLOCKER, owner="web:blocker")
        wait_for_iteration(worker_settings, blocker.id, 1)  # the one worker is busy now
        a = [web_submit("web:a") for _ in range(8)]
        b = web_submit("web:b")
        assert get_job(worker_settings, blocker.id).status == "running"
        assert sorted(run_job_ids(client)) == sorted([a[0], b])  # A's others wait, unsent
        order = _run_in_order(worker_settings, celery_worker, [blocker.id, *a, b])
    finally:
        client.close()
    assert order.index(b) <= order.index(a[1]), order
    assert [i for i in order if i in a] == a  # A's own jobs in submission order
