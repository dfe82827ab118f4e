"""A whole worker node SIGKILLed mid-job: the job still finishes, exactly once.

Redis keeps the dead worker's message unacked until the visibility timeout (longer than the
longest job), so recovery comes from the per-job lock expiring and the sweeper re-queueing
the orphaned ``running`` row. Here the test runs the sweeper itself (in production: beat
every 30 s, or ``stylequeue sweep``).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import redis

from stylequeue.shared.locks import Holder, lock_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.sweeper import sweep
from tests.broker_messages import SWEEP_TASK, waiting
from tests.factories import get_job, submit
from tests.services import wait_for
from tests.worker_process import (
    WorkerProcess,
    check_finished_job,
    read_stream,
    wait_for_iteration,
    wait_for_status,
)

LONG = {"iterations": 150, "snapshot_every": 10, "max_size": 40}


class LockWatch:
    """Samples the job's lock in the background: which holders ever held it."""

    def __init__(self, url: str, job_id: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.key = lock_key(job_id)
        self.holders: list[Holder] = []
        self.gone_at: float | None = None  # when the key vanished after being held
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            holder = Holder.decode(self.client.get(self.key))
            if holder and (not self.holders or self.holders[-1] != holder):
                self.holders.append(holder)
            elif holder is None and self.holders and self.gone_at is None:
                self.gone_at = time.monotonic()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.close()


def test_sigkill_of_the_main_process_mid_job(
    worker_settings: Settings, celery_app: Any, tmp_path: Path
) -> None:
    """Two warm workers; the one running the job is SIGKILLed; the other finishes it."""
    workers = [WorkerProcess(worker_settings, tmp_path, name=n) for n in ("alpha", "beta")]
    watch: LockWatch | None = None
    try:
        for w in workers:
            w.start()
        job = submit(worker_settings, celery_app, params=LONG)
        watch = LockWatch(worker_settings.redis_url, job.id)
        before = wait_for_iteration(worker_settings, job.id, 3)
        running = wait_for_status(worker_settings, job.id, "running")
        victim = next(w for w in workers if running.worker.startswith(w.nodename + "/"))
        survivor = next(w for w in workers if w is not victim)
        child = victim.child_pids()[0]
        victim.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.proc.wait(30)  # type: ignore[union-attr]
        wait_for(lambda: not psutil.pid_exists(child), timeout=30, what="child gone (PDEATHSIG)")
        assert wait_for_status(worker_settings, job.id, "running").attempts == 1

        # While the lock lives the sweeper leaves the job alone (its runner might be alive);
        # once it has expired, one sweep recovers it.
        recovered = 0

        def swept() -> bool:
            nonlocal recovered
            recovered += sweep(worker_settings, celery_app).recovered
            return recovered > 0

        wait_for(swept, timeout=60, interval=0.2, what="sweeper recovers the orphan")
        recovered_after = time.monotonic() - killed_at
        assert watch.gone_at is not None
        expired_after = watch.gone_at - killed_at
        done = wait_for_status(worker_settings, job.id, "succeeded", "failed", worker=survivor)
        finished_after = time.monotonic() - killed_at
        assert done.status == "succeeded", done.error
        assert recovered == 1
        assert done.attempts == 2 and done.worker.startswith(survivor.nodename + "/")
        # Restarted from iteration 1 and never run twice at once: one clean 1..N history.
        after = read_stream(worker_settings, job.id)
        assert _sid(after[0]["id"]) > _sid(before[-1]["id"])
        check_finished_job(worker_settings, job.id, LONG["iterations"], LONG["snapshot_every"])
        watch.close()
        pids = [h.pid for h in watch.holders]
        assert pids == [child, survivor.child_pids()[0]]  # one holder, then the other
        # Later sweeps find nothing to do.
        report = sweep(worker_settings, celery_app)
        assert (report.recovered, report.requeued) == (0, 0)
        print(
            f"main SIGKILL: lock expired {expired_after:.1f}s after the kill "
            f"(TTL {worker_settings.lock_ttl_seconds}s), recovered by the sweeper after "
            f"{recovered_after:.1f}s, job finished {finished_after:.1f}s after the kill",
            file=sys.stderr,
        )
    except BaseException:
        print(*(w.log_tail() for w in workers), sep="\n", file=sys.stderr)
        raise
    finally:
        if watch is not None:
            watch.close()
        for w in workers:
            w.stop()


def test_sweep_task_recovers_through_the_worker(
    worker_settings: Settings, celery_app: Any, tmp_path: Path
) -> None:
    """The same recovery through the ``stylequeue.sweep_queued`` task, sent by beat's own
    scheduler from its schedule entry (every second instead of every 30 s)."""
    from celery.beat import Scheduler

    first = WorkerProcess(worker_settings, tmp_path, name="lost")
    second = WorkerProcess(worker_settings, tmp_path, name="sweeper")
    try:
        first.start()
        job = submit(worker_settings, celery_app, params=LONG)
        wait_for_iteration(worker_settings, job.id, 3)
        first.kill(signal.SIGKILL)
        first.proc.wait(30)  # type: ignore[union-attr]
        second.start()

        beat = Scheduler(app=celery_app)  # Celery beat's scheduler on the app's schedule

        def recovered() -> bool:
            if get_job(worker_settings, job.id).attempts >= 2:
                return True
            beat.apply_entry(beat.schedule["sweep-queued"], producer=beat.producer)
            return False

        try:
            wait_for(recovered, timeout=120, interval=1.0, what="sweep task recovers the job")
        finally:
            beat.close()
            beat.connection.release()
        done = wait_for_status(worker_settings, job.id, "succeeded", "failed", worker=second)
        assert done.status == "succeeded" and done.attempts == 2, done.error
        assert "recovered 1 orphaned" in second.log_text()
        check_finished_job(worker_settings, job.id, LONG["iterations"], LONG["snapshot_every"])
    except BaseException:
        print(first.log_tail(), second.log_tail(), sep="\n", file=sys.stderr)
        raise
    finally:
        first.stop()
        second.stop()


def test_beat_sends_the_sweep_to_the_workers_queue(
    worker_settings: Settings, celery_app: Any
) -> None:
    """Beat (``celery -A stylequeue.worker.app beat`` or ``worker -B``) sends the sweep every
    30 s: Celery's own beat scheduler, on the worker app's schedule, puts a
    ``stylequeue.sweep_queued`` message on the ``style`` queue the workers consume, once an
    interval has passed. (test_sweep_task_recovers_through_the_worker has a worker run
    such messages.)"""
    from celery.beat import Scheduler

    from stylequeue.shared.celery_app import SWEEP_INTERVAL_SECONDS
    from stylequeue.worker.app import celery as worker_app

    # The schedule beat runs with the worker's app is the one driven here (on this test's
    # private Redis), and its task is one the worker has.
    assert worker_app.conf.beat_schedule == celery_app.conf.beat_schedule
    assert SWEEP_TASK in worker_app.tasks
    client = redis.Redis.from_url(worker_settings.redis_url)
    client.delete("style")  # messages earlier tests left behind (no worker runs now)
    scheduler = Scheduler(app=celery_app)
    try:
        entry = scheduler.schedule["sweep-queued"]
        assert entry.task == SWEEP_TASK
        assert entry.is_due().is_due is False  # a fresh beat waits one interval...
        entry.last_run_at -= timedelta(seconds=SWEEP_INTERVAL_SECONDS)  # ...which has passed
        assert scheduler.tick() == 0  # 0: it sent a due entry
        sent = waiting(client)
        assert [(m.task, m.args, m.kwargs) for m in sent] == [(SWEEP_TASK, [], {})]
        assert sent[0].headers["celery_beat_task"] is True  # beat's own mark
        # dropped, not run late, if no worker takes it within one interval
        assert sent[0].properties["expiration"] == "30000"
    finally:
        scheduler.close()
        scheduler.connection.release()
        client.delete("style")
        client.close()


def _sid(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)
