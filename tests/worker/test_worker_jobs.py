"""Jobs through a real ``celery worker`` (prefork, one warm child), as the web submits them.

One worker per module and database backend; its private Redis is the broker and the
progress store.
"""

from __future__ import annotations

import sys
from typing import Any

import redis

from stylequeue.shared.celery_app import enqueue_run_job
from stylequeue.shared.db import session_scope
from stylequeue.shared.locks import lock_exists
from stylequeue.shared.models import Job
from stylequeue.shared.progress import ProgressStream, cancel_key, stream_key
from stylequeue.shared.settings import Settings
from tests.factories import submit
from tests.services import wait_for
from tests.worker_process import (
    WorkerProcess,
    check_finished_job,
    read_stream,
    wait_for_iteration,
    wait_for_status,
)

LONG = {"iterations": 150, "snapshot_every": 10, "max_size": 40}  # long enough to act mid-run


def test_tensorflow_stays_out_of_the_main_process(celery_worker: WorkerProcess) -> None:
    """The parent only supervises; TensorFlow lives in the pool child."""
    import psutil

    def maps(pid: int) -> str:
        return "\n".join(m.path for m in psutil.Process(pid).memory_maps())

    assert "tensorflow" not in maps(celery_worker.pid)
    assert "tensorflow" in maps(celery_worker.child_pids()[0])
    info = celery_worker.fleet_info()
    assert info and info["weights"] == "random" and info["weights_ok"] is True
    assert info["device"] == "CPU" and info["memory"]["kind"] == "rss"  # for the fleet view
    # the budget the web admits jobs by: measured at start (no STYLEQUEUE_WORKER_MEMORY here)
    assert info["memory_budget"] > info["memory"]["used_bytes"]
    assert info["memory_budget_source"] in ("cgroup", "available")
    from stylequeue.worker.engine.hardware import resolve_precision

    line = f"extractor warm: weights=random, precision={resolve_precision('auto')}, took "
    assert line in celery_worker.log_text()


def test_job_succeeds_with_progress_snapshots_and_history(
    worker_settings: Settings, celery_app: Any, celery_worker: WorkerProcess
) -> None:
    job = submit(worker_settings, celery_app, params={"iterations": 12, "snapshot_every": 5})
    done = wait_for_status(worker_settings, job.id, "succeeded", "failed", worker=celery_worker)
    assert done.status == "succeeded", done.error
    assert done.attempts == 1 and done.worker.startswith(celery_worker.nodename + "/")
    assert done.iterations_done == 12 and done.weights == "random"
    check_finished_job(worker_settings, job.id, 12, 5)
    client = redis.Redis.from_url(worker_settings.redis_url)
    # Released just after the final commit (the sweeper reads "running, no lock" as dead).
    wait_for(lambda: not lock_exists(client, job.id), timeout=30, what="lock released")
    assert client.ttl(f"stylequeue:progress:{job.id}") > 0  # expires some days after the end
    client.close()


def test_progress_is_readable_while_running(
    worker_settings: Settings, celery_app: Any, celery_worker: WorkerProcess
) -> None:
    """A dashboard polling ``after=<last id>`` sees every iteration once, in order."""
    job = submit(worker_settings, celery_app, params={"iterations": 60, "snapshot_every": 0})
    client = redis.Redis.from_url(worker_settings.redis_url)
    stream = ProgressStream(client)
    seen: list[dict[str, Any]] = []
    last: str | None = None

    def poll() -> bool:
        nonlocal last
        entries, last = stream.read(job.id, after=last)
        seen.extend(entries)
        return bool(seen) and seen[-1]["iteration"] == 60

    wait_for(poll, timeout=180, interval=0.05, what="all iterations streamed")
    assert [e["iteration"] for e in seen] == list(range(1, 61))
    client.close()
    wait_for_status(worker_settings, job.id, "succeeded", worker=celery_worker)


def test_cancel_mid_run(
    worker_settings: Settings, celery_app: Any, celery_worker: WorkerProcess
) -> None:
    job = submit(worker_settings, celery_app, params=LONG)
    wait_for_iteration(worker_settings, job.id, 3)
    # As the web's cancel does: the row's flag, then the Redis flag the loop polls.
    with session_scope(worker_settings.database_url) as session:
        row = session.get(Job, job.id)
        assert row is not None
        row.cancel_requested = True
    client = redis.Redis.from_url(worker_settings.redis_url)
    # Set the flag and read the newest streamed iteration in one MULTI/EXEC, so we know
    # exactly how far the job was when the flag appeared.
    pipe = client.pipeline(transaction=True)
    pipe.set(cancel_key(job.id), b"1", ex=3600)
    pipe.xrevrange(stream_key(job.id), count=1)
    _, newest = pipe.execute()
    client.close()
    at_flag = int(newest[0][1][b"iteration"])

    done = wait_for_status(worker_settings, job.id, "canceled", "succeeded", "failed")
    assert done.status == "canceled", done.error
    # The stream writer reads the flag with each batch (or on its own) a few times a second
    # and the loop stops at the end of the iteration under way: how many iterations that is
    # depends on their speed (bench/queue_latency.py measures the time); never the whole job.
    assert at_flag <= done.iterations_done < LONG["iterations"]
    entries = read_stream(worker_settings, job.id)
    assert [e["iteration"] for e in entries] == list(range(1, done.iterations_done + 1))
    from stylequeue.shared.storage import get_storage

    storage = get_storage(worker_settings)
    assert storage.get(done.result_key).startswith(b"\x89PNG")  # best-so-far kept
    assert done.history_key and storage.exists(done.history_key)
    assert done.best_iteration is not None and done.best_iteration <= done.iterations_done


def test_duplicate_delivery_of_a_finished_job_does_nothing(
    worker_settings: Settings, celery_app: Any, celery_worker: WorkerProcess
) -> None:
    job = submit(worker_settings, celery_app, params={"iterations": 4, "snapshot_every": 2})
    first = wait_for_status(worker_settings, job.id, "succeeded", worker=celery_worker)
    entries = read_stream(worker_settings, job.id)
    enqueue_run_job(celery_app, job.id)  # a broker's re-delivery: the raw message again
    wait_for(
        lambda: f"job {job.id}: already succeeded" in celery_worker.log_text(),
        timeout=180,
        what="duplicate handled",
    )
    again = wait_for_status(worker_settings, job.id, "succeeded")
    assert (again.attempts, again.finished_at, again.worker) == (
        first.attempts, first.finished_at, first.worker,
    )  # fmt: skip
    assert read_stream(worker_settings, job.id) == entries


def test_sigkill_of_the_pool_child_requeues_at_once(
    worker_settings: Settings, celery_app: Any, celery_worker: WorkerProcess
) -> None:
    """task_reject_on_worker_lost puts the message back; the new child takes the dead one's
    lock over (same host, pid gone) and restarts the job. No sweeper involved."""
    job = submit(worker_settings, celery_app, params=LONG)
    wait_for_iteration(worker_settings, job.id, 3)
    killed = celery_worker.kill_child()
    celery_worker.wait_ready(not_pid=killed)  # the pool forks and warms a new child

    done = wait_for_status(worker_settings, job.id, "succeeded", "failed", worker=celery_worker)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2 and not done.worker.endswith(f"/{killed}")
    check_finished_job(worker_settings, job.id, LONG["iterations"], LONG["snapshot_every"])
    print(f"child {killed} killed; job restarted and finished", file=sys.stderr)
