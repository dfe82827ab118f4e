"""A worker told to stop (SIGTERM to its main process, as ``docker compose stop`` does) is a
preemption, not a crash: the running job writes a last checkpoint, goes back to ``queued``
with ``preemptions + 1``, its lock is released, a fresh ``run_job`` message waits in the
broker, and the worker exits. The next worker resumes it at once (the lock TTL here is far
longer than any wait), and preemptions never count towards the crash limit.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from stylequeue.shared import keys
from stylequeue.shared.redis_keys import lock_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import get_storage
from stylequeue.worker.runner import MAX_ATTEMPTS
from tests.broker_messages import run_job_ids
from tests.factories import get_job, submit
from tests.services import wait_for
from tests.worker.conftest import build_settings, emptied
from tests.worker_process import WorkerProcess, wait_for_iteration, wait_for_job, wait_for_status

ITERATIONS = 600  # three attempts run some 20-80 iterations each before their SIGTERM
PARAMS = {"iterations": ITERATIONS, "snapshot_every": 50, "max_size": 32}
# A lock left behind would block the next worker for this long: far beyond every wait below,
# so "resumed" can only mean "the lock was released".
LOCK_TTL = 600
EXIT_WAIT = 120.0  # generous: the worker exits once the job is back in the queue


@pytest.fixture(scope="module")
def worker_settings(
    tmp_path_factory: pytest.TempPathFactory, worker_db_url: str, module_redis: str
) -> Settings:
    base = build_settings(
        tmp_path_factory.mktemp("var"),
        worker_db_url,
        emptied(module_redis),
        checkpoint_seconds=1,
    )
    # the sweeper never runs here; nothing recovers the job but the preemption itself
    return replace(
        base,
        lock_ttl_seconds=LOCK_TTL,
        limits=replace(base.limits, max_iterations=ITERATIONS),
    )


@pytest.fixture
def workers(worker_settings: Settings) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        print(w.log_tail(), file=sys.stderr)
        w.stop()


def _checkpoints(settings: Settings, job_id: str, attempt: int) -> list[int]:
    found = [
        parsed
        for key in get_storage(settings).list(keys.checkpoint_prefix(job_id))
        if (parsed := keys.parse_checkpoint_key(job_id, key)) and parsed[0] == attempt
    ]
    return sorted(iteration for _, iteration in found)


def test_sigterm_preempts_the_job_and_the_next_worker_resumes_it(
    worker_settings: Settings, celery_app: Any, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    settings = worker_settings
    client = redis.Redis.from_url(settings.redis_url)
    job = submit(settings, celery_app, params=PARAMS)
    seen_iterations = 0
    # more preemptions than the crash limit allows crashes: the job still finishes
    for n in range(1, MAX_ATTEMPTS + 1):
        worker = WorkerProcess(settings, tmp_path, name=f"w{n}")
        workers.append(worker)
        worker.start()
        running = wait_for_job(
            settings, job.id, lambda j, n=n: j.status == "running" and j.attempts == n,
            what=f"attempt {n} running", worker=worker,
        )  # fmt: skip
        if n > 1:  # resumed where the preempted attempt stopped, not at iteration 1
            assert running.resumed_from is not None and running.resumed_from >= seen_iterations
        wait_for(lambda n=n: _checkpoints(settings, job.id, n) != [], timeout=180,
                 what="a checkpoint")  # fmt: skip
        wait_for_iteration(settings, job.id, _checkpoints(settings, job.id, n)[-1] + 2)
        assert get_job(settings, job.id).status == "running", "finished before the SIGTERM"

        worker.kill(signal.SIGTERM)  # the main process only, as Docker does
        worker.proc.wait(EXIT_WAIT)  # type: ignore[union-attr]

        stopped = get_job(settings, job.id)
        assert stopped.status == "queued", (stopped.status, stopped.error)
        assert (stopped.attempts, stopped.preemptions) == (n, n)
        assert stopped.error is None and stopped.worker is None
        # the last checkpoint is where the attempt stopped: no work lost
        assert _checkpoints(settings, job.id, n)[-1] == stopped.iterations_done
        assert stopped.iterations_done > seen_iterations
        seen_iterations = stopped.iterations_done
        assert client.get(lock_key(job.id)) is None, "the lock was not released"
        assert run_job_ids(client) == [job.id]

    last = WorkerProcess(settings, tmp_path, name="last")
    workers.append(last)
    last.start()
    done = wait_for_status(settings, job.id, "succeeded", "failed", worker=last)
    assert done.status == "succeeded", done.error
    assert (done.attempts, done.preemptions) == (MAX_ATTEMPTS + 1, MAX_ATTEMPTS)
    assert done.resumed_from == seen_iterations
    assert done.iterations_done == ITERATIONS
    # a preemption loses nothing: every iteration was computed once
    assert done.iterations_computed == ITERATIONS
    # the runner deletes the checkpoints just after it commits the ending the row shows
    wait_for(lambda: get_storage(settings).list(keys.checkpoint_prefix(job.id)) == [],
             timeout=60, what="the checkpoints deleted")  # fmt: skip
    client.close()
