"""The broker is down when a job is submitted: the row stays queued, nothing is lost; once
Redis is back the sweeper sends it and the worker runs it.

The broker here is a private redis-server the test stops and starts again on the same port.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import kombu.exceptions
import pytest
import redis

from stylequeue.shared.celery_app import create_celery, enqueue_run_job
from stylequeue.shared.settings import Settings
from stylequeue.shared.sweeper import sweep
from tests import services
from tests.factories import get_job, make_job
from tests.worker_process import WorkerProcess, check_finished_job, wait_for_status


def test_job_submitted_while_broker_down_runs_after_the_sweeper(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    port = services.free_port()
    with services.private_redis(tmp_path / "redis-1", port) as (url, first_redis):
        settings = make_settings(
            database_url=database_url, redis_url=url, lock_ttl_seconds=3, queued_grace_seconds=0
        )
        worker = WorkerProcess(settings, tmp_path / "logs")
        try:
            worker.start()
            first_redis.terminate()  # the broker goes away
            first_redis.wait(10)

            # Submit as the web does: commit the row, then enqueue -- which fails.
            job = make_job(settings, params={"iterations": 6, "snapshot_every": 3})
            app = create_celery(settings)
            # Celery gives up after its retries with kombu's OperationalError, caused by the
            # Redis client's refused connection (not some other error on the way).
            with pytest.raises(kombu.exceptions.OperationalError) as raised:
                enqueue_run_job(app, job.id)
            print(f"enqueue with the broker down: {raised.value!r}", file=sys.stderr)
            assert isinstance(raised.value.__cause__, redis.ConnectionError), raised.value
            row = get_job(settings, job.id)
            assert row.status == "queued" and row.enqueued_at is None  # kept, not lost
            # ... and untouched: nothing started, no attempt counted, no worker named
            assert (row.attempts, row.started_at, row.worker, row.iterations_done) == (
                0, None, None, 0,
            )  # fmt: skip

            down = sweep(settings, app)  # nothing to do without Redis; no harm either
            assert down.errors and (down.requeued, down.recovered) == (0, 0)
            assert get_job(settings, job.id).status == "queued"

            with services.private_redis(tmp_path / "redis-2", port):  # back, empty
                report = sweep(settings, app)
                assert (report.requeued, report.errors) == (1, [])
                assert get_job(settings, job.id).enqueued_at is not None
                done = wait_for_status(
                    settings, job.id, "succeeded", "failed", timeout=240, worker=worker
                )
                assert done.status == "succeeded", done.error
                assert done.attempts == 1
                check_finished_job(settings, job.id, 6, 3)
                app.close()
                worker.stop()  # while its broker is still up: a quick warm shutdown
        except BaseException:
            print(worker.log_tail(), file=sys.stderr)
            raise
        finally:
            worker.stop()
