"""Every iteration reaches a dashboard once and in order, through real worker processes, while
the stream is written in batches from a background thread: through a cancel, a preemption
(SIGTERM to the worker; the next worker resumes the job) and a Redis restart mid-job (the
writer keeps the entries while Redis is away and sends them when it is back).

The dashboard is a thread polling ``progress?after=<last id>`` as the pages do (XRANGE after
its last id), from before the job starts to after it ends; what it saw must be the job's
saved history, entry for entry.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from stylequeue.shared.celery_app import create_celery
from stylequeue.shared.db import session_scope
from stylequeue.shared.jobs import request_cancel
from stylequeue.shared.progress import ProgressStream
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import get_storage
from tests import services
from tests.factories import get_job, submit
from tests.worker.conftest import build_settings
from tests.worker_process import WorkerProcess, wait_for_job, wait_for_status

ITERATIONS = 2000  # far more than any of these runs: each ends with a cancel
PARAMS = {"iterations": ITERATIONS, "snapshot_every": 25, "max_size": 32}


class Dashboard:
    """A page polling the job's progress after its last id, Redis errors and all."""

    def __init__(self, redis_url: str, job_id: str) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=1)
        self.stream = ProgressStream(self.client)
        self.job_id = job_id
        self.seen: list[dict[str, Any]] = []
        self.errors = 0
        self._last: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.03):
            self.poll()

    def poll(self) -> None:
        try:
            entries, self._last = self.stream.read(self.job_id, after=self._last)
        except redis.RedisError:
            self.errors += 1
            return
        self.seen.extend(entries)

    @property
    def newest(self) -> int:
        return self.seen[-1]["iteration"] if self.seen else 0

    def close(self) -> list[dict[str, Any]]:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(10)
            self.poll()  # what came last
            self.client.close()
        return self.seen


def wait_seen(dashboard: Dashboard, iteration: int, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if dashboard.newest >= iteration:
            return
        time.sleep(0.05)
    raise AssertionError(f"iteration {iteration} not seen\n{worker.log_tail()}")


def cancel(settings: Settings, job_id: str) -> None:
    """As ``POST /api/v1/jobs/<id>/cancel`` does: the row, then the Redis flag."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        with session_scope(settings.database_url) as session:
            result = request_cancel(session, job_id, get_job(settings, job_id).owner,
                                    ProgressStream(client), stream_ttl_seconds=3600)  # fmt: skip
        assert result.accepted and result.worker_told, result
    finally:
        client.close()


def check_delivered(settings: Settings, job_id: str, seen: list[dict[str, Any]]) -> int:
    """The dashboard saw 1..N once, in order, exactly the saved history; returns N."""
    done = get_job(settings, job_id)
    assert done.status == "canceled", (done.status, done.error)
    n = done.iterations_done
    assert 0 < n < ITERATIONS
    assert [e["iteration"] for e in seen] == list(range(1, n + 1))
    history = json.loads(get_storage(settings).get(done.history_key))["entries"]
    assert seen == history  # ids and values
    return n


def job_settings(base: Settings, **overrides: Any) -> Settings:
    return replace(base, limits=replace(base.limits, max_iterations=ITERATIONS), **overrides)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        print(w.log_tail(), file=sys.stderr)
        w.stop()


def test_a_cancel_mid_job_delivers_every_iteration_once(
    worker_settings: Settings, celery_app: Any, celery_worker: WorkerProcess
) -> None:
    settings = worker_settings
    job = submit(settings, celery_app, params={**PARAMS, "iterations": 200})
    dashboard = Dashboard(settings.redis_url, job.id)
    try:
        wait_seen(dashboard, 5, celery_worker)
        cancel(settings, job.id)
        wait_for_status(settings, job.id, "canceled", "succeeded", "failed", worker=celery_worker)
    finally:
        seen = dashboard.close()
    assert 5 <= check_delivered(settings, job.id, seen) < 200


def test_a_preempted_job_delivers_every_iteration_once(
    tmp_path: Path, worker_db_url: str, workers: list[WorkerProcess]
) -> None:
    """SIGTERM to the first worker mid-job (checkpoint, back to the queue); the second
    resumes it; the dashboard polls through both."""
    with services.private_redis(tmp_path / "redis") as (url, _proc):
        settings = job_settings(
            build_settings(tmp_path / "var", worker_db_url, url, checkpoint_seconds=1),
            lock_ttl_seconds=600,  # only the preemption's release lets the second one in
        )
        app = create_celery(settings)
        try:
            first = WorkerProcess(settings, tmp_path / "logs", name="first")
            workers.append(first)
            first.start()
            job = submit(settings, app, params=PARAMS)
            dashboard = Dashboard(settings.redis_url, job.id)
            try:
                wait_seen(dashboard, 30, first)
                first.kill(signal.SIGTERM)  # the main process, as Docker does
                first.proc.wait(120)  # type: ignore[union-attr]
                stopped = get_job(settings, job.id)
                assert (stopped.status, stopped.preemptions) == ("queued", 1)
                # the first attempt streamed all it ran before it went
                wait_seen(dashboard, stopped.iterations_done, first)
                assert dashboard.newest == stopped.iterations_done

                second = WorkerProcess(settings, tmp_path / "logs", name="second")
                workers.append(second)
                second.start()
                wait_for_job(settings, job.id, lambda j: j.attempts == 2, worker=second)
                wait_seen(dashboard, stopped.iterations_done + 20, second)
                cancel(settings, job.id)
                wait_for_status(settings, job.id, "canceled", "succeeded", "failed",
                                worker=second)  # fmt: skip
            finally:
                seen = dashboard.close()
            n = check_delivered(settings, job.id, seen)
            assert stopped.iterations_done < n
            assert get_job(settings, job.id).resumed_from == stopped.iterations_done
            second.stop()
        finally:
            app.close()


def test_a_redis_restart_mid_job_delivers_every_iteration_once(
    tmp_path: Path, worker_db_url: str, workers: list[WorkerProcess]
) -> None:
    """Redis stops (saving its data, as a restart of a persistent Redis does) and comes back
    on the same port a moment later; the job runs on meanwhile, its entries wait in the
    stream writer and go out once Redis answers, so the dashboard misses none."""
    port = services.free_port()
    data = tmp_path / "redis"
    with services.private_redis(data, port) as (url, first_redis):
        settings = job_settings(
            build_settings(tmp_path / "var", worker_db_url, url), lock_ttl_seconds=60
        )
        app = create_celery(settings)
        worker = WorkerProcess(settings, tmp_path / "logs")
        workers.append(worker)
        worker.start()
        job = submit(settings, app, params=PARAMS)
        dashboard = Dashboard(url, job.id)
        try:
            wait_seen(dashboard, 10, worker)
            redis.Redis.from_url(url).shutdown(save=True)  # the data survives, as in production
            first_redis.wait(30)
            before_restart = get_job(settings, job.id).iterations_done
            time.sleep(2)  # the job runs on without Redis
            with services.private_redis(data, port):
                running = get_job(settings, job.id)
                assert running.status == "running", (running.status, running.error)
                # iterations ran while Redis was away, and are seen after all
                wait_seen(dashboard, running.iterations_done + 5, worker)
                cancel(settings, job.id)
                wait_for_status(settings, job.id, "canceled", "succeeded", "failed",
                                worker=worker)  # fmt: skip
                seen = dashboard.close()
                n = check_delivered(settings, job.id, seen)
                assert before_restart < running.iterations_done < n
                assert get_job(settings, job.id).attempts == 1  # the same runner throughout
                assert dashboard.errors > 0  # the dashboard did see Redis gone
                log = worker.log_text()
                assert "progress stream unavailable" in log and "progress stream back" in log
                assert "progress entries" not in log  # none given up (stand-in ids)
                app.close()
                worker.stop()  # while its broker is up: a quick warm shutdown
        finally:
            dashboard.close()
