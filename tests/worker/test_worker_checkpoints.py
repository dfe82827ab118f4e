"""Real workers interrupted mid-job, again and again (a pool child terminated, a whole node
SIGKILLed): the job resumes from its checkpoints and ends byte-identical to the same job
run undisturbed.

Workers checkpoint every second here (``STYLEQUEUE_CHECKPOINT_SECONDS=1``). Recovery is the
production path: a lost child's message comes back at once and its lock is taken over; a
dead node's lock expires and the sweeper re-queues the row; another runner resumes.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stylequeue.shared import keys
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import get_storage
from stylequeue.shared.sweeper import sweep
from tests.factories import get_job, submit
from tests.services import wait_for
from tests.worker.conftest import build_settings, emptied
from tests.worker_process import (
    WorkerProcess,
    check_finished_job,
    wait_for_iteration,
    wait_for_status,
)

PARAMS = {"iterations": 200, "snapshot_every": 20, "max_size": 48}
# L-BFGS's history and coarse-to-fine's scale travel in the checkpoints too
LBFGS_SCALES = {**PARAMS, "optimizer": "lbfgs", "scales": 2}
# how the job's worker is interrupted, one after the other: its pool child terminated (the
# worker forks a new one, the message comes back at once), then the whole node killed
INTERRUPTIONS = (("child", signal.SIGTERM), ("node", signal.SIGKILL))


@pytest.fixture(scope="module")
def worker_settings(
    tmp_path_factory: pytest.TempPathFactory, worker_db_url: str, module_redis: str
) -> Settings:
    return build_settings(
        tmp_path_factory.mktemp("var"),
        worker_db_url,
        emptied(module_redis),
        checkpoint_seconds=1,
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


@pytest.mark.parametrize("params", [PARAMS, LBFGS_SCALES], ids=["adam", "lbfgs-scales"])
def test_interrupted_again_and_again_the_job_ends_as_if_undisturbed(
    worker_settings: Settings,
    celery_app: Any,
    tmp_path: Path,
    workers: list[WorkerProcess],
    params: dict[str, Any],
) -> None:
    settings = worker_settings
    workers.extend(WorkerProcess(settings, tmp_path, name=f"w{i}") for i in range(2))
    for w in workers:
        w.start()
    reference = submit(settings, celery_app, params=params)
    wait_for_status(settings, reference.id, "succeeded")

    job = submit(settings, celery_app, params=params)
    resumed: list[int | None] = []
    for n, (target, sig) in enumerate(INTERRUPTIONS):
        running = wait_for_status(settings, job.id, "running")
        # a checkpoint of this attempt, and some iterations past it (work the kill loses)
        wait_for(lambda: _newest_checkpoint(settings, job.id) > 0, timeout=180, what="checkpoint")
        wait_for_iteration(settings, job.id, _newest_checkpoint(settings, job.id) + 2)
        assert get_job(settings, job.id).status == "running", "finished before the kill"
        victim = next(w for w in workers if running.worker.startswith(w.nodename + "/"))
        if target == "child":
            victim.kill_child(sig)
        else:
            victim.kill(sig)
            victim.proc.wait(30)  # type: ignore[union-attr]
            workers.remove(victim)
            victim.stop()

        def restarted(attempts: int = n + 2) -> bool:
            if get_job(settings, job.id).attempts >= attempts:
                return True
            sweep(settings, celery_app)  # a dead node's job: once its lock has expired
            return False

        wait_for(restarted, timeout=180, interval=0.5, what="the job restarted")
        resumed.append(get_job(settings, job.id).resumed_from)

    done = wait_for_status(settings, job.id, "succeeded", "failed")
    assert done.status == "succeeded", done.error
    assert done.attempts == len(INTERRUPTIONS) + 1
    assert all(r is not None and r > 0 for r in resumed), resumed
    assert resumed == sorted(resumed) and done.resumed_from == resumed[-1]
    assert done.iterations_computed > params["iterations"]  # the work the kills cost
    check_finished_job(settings, job.id, params["iterations"], params["snapshot_every"])
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
