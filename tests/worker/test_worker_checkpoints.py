"""Real workers SIGKILLed mid-job, again and again: the job resumes from its checkpoints and
ends byte-identical to the same job run undisturbed.

Workers checkpoint every second here (``STYLEQUEUE_CHECKPOINT_SECONDS=1``). Recovery is the
production path: the dead runner's lock expires, the sweeper re-queues the row, another
worker takes it and resumes.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stylequeue.shared import keys
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import get_storage
from stylequeue.shared.sweeper import sweep
from tests.factories import get_job, submit
from tests.services import wait_for
from tests.worker.conftest import build_settings
from tests.worker_process import (
    WorkerProcess,
    check_finished_job,
    wait_for_iteration,
    wait_for_job,
    wait_for_status,
)

PARAMS = {"iterations": 200, "snapshot_every": 20, "max_size": 48}
KILLS = 2  # the job's worker is SIGKILLed this many times


@pytest.fixture(scope="module")
def worker_settings(
    tmp_path_factory: pytest.TempPathFactory, worker_db_url: str, module_redis: str
) -> Settings:
    client = redis.Redis.from_url(module_redis)
    client.flushdb()
    client.close()
    return build_settings(
        tmp_path_factory.mktemp("var"), worker_db_url, module_redis, checkpoint_seconds=1
    )


@pytest.fixture
def workers(worker_settings: Settings, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        print(w.log_tail(), file=sys.stderr)
        w.stop()


def _newest_checkpoint(settings: Settings, job_id: str) -> int:
    """The highest iteration checkpointed by the job's current attempt (0: none yet)."""
    attempt = get_job(settings, job_id).attempts
    found = [
        parsed
        for key in get_storage(settings).list(keys.checkpoint_prefix(job_id))
        if (parsed := keys.parse_checkpoint_key(job_id, key)) and parsed[0] == attempt
    ]
    return max((iteration for _, iteration in found), default=0)


def test_sigkilled_again_and_again_the_job_ends_as_if_undisturbed(
    worker_settings: Settings, celery_app: Any, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    settings = worker_settings
    workers.extend(WorkerProcess(settings, tmp_path, name=f"w{i}") for i in range(2))
    for w in workers:
        w.start()
    reference = submit(settings, celery_app, params=PARAMS)
    wait_for_status(settings, reference.id, "succeeded")

    job = submit(settings, celery_app, params=PARAMS)
    resumed: list[int | None] = []
    for kill in range(KILLS):
        running = wait_for_status(settings, job.id, "running")
        # a checkpoint of this attempt, and some iterations past it (work the kill loses)
        wait_for(lambda: _newest_checkpoint(settings, job.id) > 0, timeout=180, what="checkpoint")
        wait_for_iteration(settings, job.id, _newest_checkpoint(settings, job.id) + 2)
        assert get_job(settings, job.id).status == "running", "finished before the kill"
        victim = next(w for w in workers if running.worker.startswith(w.nodename + "/"))
        victim.kill(signal.SIGKILL)
        victim.proc.wait(30)  # type: ignore[union-attr]
        workers.remove(victim)
        victim.stop()
        if kill == KILLS - 1 or len(workers) < 1:
            workers.append(WorkerProcess(settings, tmp_path, name=f"fresh{kill}").start())

        # the lock expires (TTL 3 s), then one sweep re-queues the job for the other worker
        wait_for(
            lambda: sweep(settings, celery_app).recovered > 0,
            timeout=120, interval=0.3, what="sweeper recovers the job",
        )  # fmt: skip
        restarted = wait_for_job(
            settings, job.id, lambda j, n=kill + 2: j.attempts >= n, what="attempt started"
        )
        resumed.append(restarted.resumed_from)

    done = wait_for_status(settings, job.id, "succeeded", "failed")
    assert done.status == "succeeded", done.error
    assert done.attempts == KILLS + 1
    assert all(r is not None and r > 0 for r in resumed), resumed
    assert resumed == sorted(resumed) and done.resumed_from == resumed[-1]
    assert done.iterations_computed > PARAMS["iterations"]  # the work the kills cost
    check_finished_job(settings, job.id, PARAMS["iterations"], PARAMS["snapshot_every"])
    storage = get_storage(settings)
    ref = get_job(settings, reference.id)
    assert storage.get(done.result_key) == storage.get(ref.result_key)
    for iteration in done.snapshot_iterations:
        assert storage.get(keys.job_snapshot_key(done, iteration)) == storage.get(
            keys.job_snapshot_key(ref, iteration)
        ), iteration
    assert (done.best_loss, done.best_iteration) == (ref.best_loss, ref.best_iteration)
    assert storage.list(keys.checkpoint_prefix(job.id)) == []
    earlier = range(1, done.attempts)
    assert [n for n in earlier if storage.list(keys.attempt_prefix(job.id, n))] == []
