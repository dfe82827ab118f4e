"""One attempt of run_job, driven in-process (real engine, Redis, database and storage).

The same code runs inside the Celery task; driving it here makes the state machine's edges
quick to reach. The real worker process is tested in test_worker_jobs / _recovery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded

from stylequeue.shared import keys
from stylequeue.shared.locks import JobLock, lock_exists, lock_key
from stylequeue.shared.progress import AttemptStream, ProgressStream
from stylequeue.shared.redis_keys import stream_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.storage import get_storage
from stylequeue.worker import runner, stop_signal, stream_writer
from stylequeue.worker.engine import core
from tests.factories import get_job, make_job
from tests.worker_process import check_finished_job, read_stream

WORKER = "test@host/1"
ENTRY = {"iteration": 1, "loss": 1.0, "content": 0, "style": 0, "tv": 0, "elapsed": 1}


@pytest.fixture
def client(wsettings: Settings, redis_of: Callable[[Settings], redis.Redis]) -> redis.Redis:
    return redis_of(wsettings)


def test_job_runs_to_succeeded(wsettings: Settings, client: Any) -> None:
    job = make_job(wsettings, params={"iterations": 7, "snapshot_every": 3})
    outcome = runner.execute(job.id, wsettings, worker_name=WORKER)
    assert (outcome.action, outcome.status, outcome.iterations) == ("ran", "succeeded", 7)

    done = get_job(wsettings, job.id)
    assert done.status == "succeeded" and done.error is None
    assert (done.attempts, done.worker, done.iterations_done) == (1, WORKER, 7)
    assert done.weights == "random" and (done.width, done.height) == (40, 32)
    assert done.best_loss is not None and 1 <= done.best_iteration <= 7
    assert done.started_at <= done.finished_at
    check_finished_job(wsettings, job.id, 7, 3)
    assert not lock_exists(client, job.id)
    assert 0 < client.ttl(stream_key(job.id)) <= wsettings.progress_ttl_seconds


@pytest.mark.parametrize("status", ["succeeded", "failed", "canceled"])
def test_terminal_job_is_left_alone(wsettings: Settings, client: Any, status: str) -> None:
    job = make_job(wsettings, status=status, finished_at=utcnow(), attempts=1)
    before = get_job(wsettings, job.id)
    outcome = runner.execute(job.id, wsettings, worker_name=WORKER)
    assert outcome.action == "duplicate"
    after = get_job(wsettings, job.id)
    assert (after.status, after.attempts, after.finished_at, after.worker) == (
        before.status, before.attempts, before.finished_at, before.worker,
    )  # fmt: skip
    assert read_stream(wsettings, job.id) == []
    assert not lock_exists(client, job.id)


def test_duplicate_delivery_lets_the_stream_expire(wsettings: Settings, client: Any) -> None:
    """The job ended outside a runner (canceled while queued after an earlier attempt
    streamed): the delivery that finds it ended sets the stream's expiry."""
    job = make_job(wsettings, status="canceled", finished_at=utcnow(), attempts=1)
    ProgressStream(client).append(job.id, ENTRY)
    assert runner.execute(job.id, wsettings, worker_name=WORKER).action == "duplicate"
    assert 0 < client.ttl(stream_key(job.id)) <= wsettings.progress_ttl_seconds


def test_missing_row_is_dropped(wsettings: Settings) -> None:
    assert runner.execute("no-such-job", wsettings, worker_name=WORKER).action == "missing"


def test_job_held_by_a_live_runner_is_not_run_twice(wsettings: Settings, client: Any) -> None:
    job = make_job(wsettings)
    other = JobLock(client, job.id, ttl_seconds=30)  # this live process holds it
    assert other.acquire()
    assert runner.execute(job.id, wsettings, worker_name=WORKER).action == "busy"
    assert get_job(wsettings, job.id).status == "queued"
    assert other.owned()  # not released by the refused runner
    other.release()


def test_cancel_before_start(wsettings: Settings, client: Any) -> None:
    flagged = make_job(wsettings)
    ProgressStream(client).request_cancel(flagged.id)
    in_row = make_job(wsettings, cancel_requested=True)
    for job in (flagged, in_row):
        outcome = runner.execute(job.id, wsettings, worker_name=WORKER)
        assert (outcome.action, get_job(wsettings, job.id).status) == ("canceled", "canceled")
        assert get_job(wsettings, job.id).attempts == 0


def test_job_lost_too_often_fails(wsettings: Settings, client: Any) -> None:
    job = make_job(wsettings, attempts=runner.MAX_ATTEMPTS)
    ProgressStream(client).append(job.id, {"iteration": 1, "loss": 1.0, "content": 0,
                                           "style": 0, "tv": 0, "elapsed": 1})  # fmt: skip
    outcome = runner.execute(job.id, wsettings, worker_name=WORKER)
    done = get_job(wsettings, job.id)
    assert (outcome.action, done.status) == ("gave_up", "failed")
    assert done.error.startswith(f"worker lost {runner.MAX_ATTEMPTS} times")
    # the last dead attempt's entries expire like any finished job's, not never
    assert 0 < client.ttl(stream_key(job.id)) <= wsettings.progress_ttl_seconds


def test_preemptions_do_not_count_as_crashes(wsettings: Settings) -> None:
    n = runner.MAX_ATTEMPTS
    # n + 1 attempts, two of them preempted: n - 1 crashes, below the limit: it runs
    job = make_job(wsettings, attempts=n + 1, preemptions=2, params={"iterations": 3})
    outcome = runner.execute(job.id, wsettings, worker_name=WORKER)
    assert (outcome.action, get_job(wsettings, job.id).status) == ("ran", "succeeded")
    # one preempted: n crashes: it gives up, naming the crashes only
    job = make_job(wsettings, attempts=n + 1, preemptions=1)
    outcome = runner.execute(job.id, wsettings, worker_name=WORKER)
    done = get_job(wsettings, job.id)
    assert (outcome.action, done.status) == ("gave_up", "failed")
    assert done.error.startswith(f"worker lost {n} times")


def test_preempted_job_checkpoints_requeues_and_resumes(wsettings: Settings, client: Any) -> None:
    settings = replace(wsettings, checkpoint_seconds=0)  # only the preemption's checkpoint
    job = make_job(settings, params={"iterations": 7, "snapshot_every": 3})
    stop_signal.request_preempt()
    try:
        outcome = runner.execute(job.id, settings, worker_name=WORKER)
    finally:
        stop_signal.clear_preempt()
    # stopped after the first iteration, with a checkpoint of it
    assert (outcome.action, outcome.status, outcome.iterations) == ("preempted", "queued", 1)
    queued = get_job(settings, job.id)
    assert queued.status == "queued" and queued.error is None and queued.worker is None
    assert (queued.attempts, queued.preemptions, queued.iterations_done) == (1, 1, 1)
    assert queued.started_at is None and queued.finished_at is None
    assert [k for k in get_storage(settings).list(keys.checkpoint_prefix(job.id))]
    assert not lock_exists(client, job.id)

    outcome = runner.execute(job.id, settings, worker_name=WORKER)
    done = get_job(settings, job.id)
    assert (outcome.status, done.status) == ("succeeded", "succeeded")
    assert (done.attempts, done.preemptions, done.resumed_from) == (2, 1, 1)
    assert done.iterations_computed == 7  # nothing computed twice
    check_finished_job(settings, job.id, 7, 3)


def test_missing_weights_file_fails_with_a_readable_reason(wsettings: Settings) -> None:
    settings = replace(wsettings, vgg19_weights="/nonexistent/vgg19_notop.h5")
    job = make_job(settings)
    outcome = runner.execute(job.id, settings, worker_name=WORKER)
    done = get_job(settings, job.id)
    assert (outcome.status, done.status) == ("failed", "failed")
    assert "/nonexistent/vgg19_notop.h5" in done.error and "STYLEQUEUE_VGG19_WEIGHTS" in done.error
    assert "\n" not in done.error and not done.error.startswith("WeightsUnavailable")


def test_engine_error_fails_as_type_and_message(wsettings: Settings) -> None:
    job = make_job(wsettings)
    get_storage(wsettings).put(keys.content_key(job.id), b"not an image")
    runner.execute(job.id, wsettings, worker_name=WORKER)
    done = get_job(wsettings, job.id)
    assert done.status == "failed"
    assert done.error.startswith("UnidentifiedImageError: ")


def test_soft_deadline_stops_and_keeps_the_best(wsettings: Settings) -> None:
    job = make_job(wsettings, params={"iterations": 50, "snapshot_every": 0})
    # A deadline already passed: the engine's first iteration always runs, then it stops.
    outcome = runner.execute(job.id, wsettings, worker_name=WORKER, deadline=time.monotonic())
    done = get_job(wsettings, job.id)
    assert done.status == "failed" and outcome.iterations == 1
    assert done.error == "time limit reached after 1 iterations; best-so-far saved"
    assert get_storage(wsettings).exists(keys.result_key(job.id, attempt=1))
    assert done.result_key and done.best_iteration == 1 and done.iterations_done == 1


def test_celery_soft_limit_saves_the_latest_snapshot(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backup path: Celery raises SoftTimeLimitExceeded inside the engine (a signal)."""
    from stylequeue.worker import engine

    real = engine.transfer

    def transfer_hit_by_soft_limit(*args: Any, on_iteration: Any, **kwargs: Any) -> Any:
        def hook(report: Any) -> None:
            on_iteration(report)
            if report.iteration == 5:
                raise SoftTimeLimitExceeded()

        return real(*args, on_iteration=hook, **kwargs)

    monkeypatch.setattr(engine, "transfer", transfer_hit_by_soft_limit)
    job = make_job(wsettings, params={"iterations": 30, "snapshot_every": 2})
    runner.execute(job.id, wsettings, worker_name=WORKER)
    done = get_job(wsettings, job.id)
    assert done.status == "failed"
    assert done.error == (
        "time limit reached after 5 iterations; latest snapshot (iteration 4) saved"
    )
    storage = get_storage(wsettings)
    assert storage.get(done.result_key) == storage.get(keys.snapshot_key(job.id, 4, attempt=1))
    history = json.loads(storage.get(done.history_key))
    assert [e["iteration"] for e in history["entries"]] == [1, 2, 3, 4, 5]


def test_redelivered_job_restarts_cleanly(wsettings: Settings, client: Any) -> None:
    """A running row whose runner died: the next attempt starts again from iteration 1."""
    job = make_job(wsettings, status="running", attempts=1, worker="dead@host/9",
                   started_at=utcnow(), iterations_done=5, snapshot_iterations=[4])  # fmt: skip
    stream = ProgressStream(client)
    for i in range(1, 6):  # the dead attempt's entries
        stream.append(job.id, {"iteration": i, "loss": 1.0, "content": 0, "style": 0, "tv": 0,
                               "elapsed": i})  # fmt: skip
    storage = get_storage(wsettings)
    storage.put(keys.snapshot_key(job.id, 6, attempt=1), b"stale")  # the dead attempt's
    outcome = runner.execute(job.id, wsettings, worker_name=WORKER)
    assert outcome.status == "succeeded"
    done = get_job(wsettings, job.id)
    assert (done.attempts, done.worker) == (2, WORKER)
    check_finished_job(wsettings, job.id, 8, 4)
    assert not storage.list(keys.attempt_prefix(job.id, 1))  # its files went at the end


def _flaky_redis(monkeypatch: pytest.MonkeyPatch, failing: Callable[[int], bool]) -> list[int]:
    """The stream's batch calls fail (Redis unreachable) where ``failing(call number)``; the
    sizes of the batches that got through are returned as they come."""
    real = AttemptStream.append_many_checking_cancel
    calls = {"n": 0}
    sent: list[int] = []

    def flaky(self: AttemptStream, entries: Any) -> Any:
        calls["n"] += 1
        if failing(calls["n"]):
            raise redis.ConnectionError("Redis went away")
        sent.append(len(entries))
        return real(self, entries)

    monkeypatch.setattr(AttemptStream, "append_many_checking_cancel", flaky)
    return sent


def test_redis_blip_mid_job_loses_nothing(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis away for a moment mid-job: the stream writer keeps the entries and sends them
    when Redis answers again, so the stream (not only the history) holds every iteration
    once, in order, with the history's ids."""
    monkeypatch.setattr(runner, "REDIS_RETRY_SECONDS", 0.0)
    monkeypatch.setattr(stream_writer, "INTERVAL_SECONDS", 0.0)  # a batch per iteration
    monkeypatch.setattr(core, "GROUP_SECONDS", 0.0)  # each iteration reported at once
    sent = _flaky_redis(monkeypatch, lambda call: call in (2, 3))
    job = make_job(wsettings, params={"iterations": 8, "snapshot_every": 4})
    with caplog.at_level("INFO", logger="stylequeue.worker"):
        assert runner.execute(job.id, wsettings, worker_name=WORKER).status == "succeeded"
    assert "progress stream unavailable: Redis went away" in caplog.text
    assert "progress stream back" in caplog.text
    assert "progress entries" not in caplog.text  # none given stand-in ids
    assert "stream writer: 8 entries in" in caplog.text and ", 0 not streamed" in caplog.text
    assert sum(sent) == 8
    check_finished_job(wsettings, job.id, 8, 4)  # stream == history, 1..8, ids increasing


def test_redis_gone_for_the_rest_of_the_job_does_not_fail_it(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Progress is best effort: Redis gone from the third batch on costs stream entries, not
    the job; what could not be streamed is logged, and the history in storage stays complete
    with increasing ids."""
    monkeypatch.setattr(runner, "REDIS_RETRY_SECONDS", 0.0)
    monkeypatch.setattr(stream_writer, "INTERVAL_SECONDS", 0.0)  # a batch per iteration
    monkeypatch.setattr(core, "GROUP_SECONDS", 0.0)  # each iteration reported at once
    sent = _flaky_redis(monkeypatch, lambda call: call >= 3)
    job = make_job(wsettings, params={"iterations": 8, "snapshot_every": 4})
    with caplog.at_level("WARNING", logger="stylequeue.worker"):
        assert runner.execute(job.id, wsettings, worker_name=WORKER).status == "succeeded"
    done = get_job(wsettings, job.id)
    history = json.loads(get_storage(wsettings).get(done.history_key))["entries"]
    assert [e["iteration"] for e in history] == list(range(1, 9))
    ids = [tuple(int(x) for x in e["id"].split("-")) for e in history]
    assert ids == sorted(ids) and len(set(ids)) == 8
    streamed = read_stream(wsettings, job.id)
    assert streamed == history[: sum(sent)]  # the first batches, as the history has them
    assert 0 < sum(sent) < 8
    assert f"Redis is unreachable: {8 - sum(sent)} progress entries" in caplog.text


def test_runner_whose_job_was_restarted_elsewhere_writes_nothing_of_it(
    wsettings: Settings, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Presumed dead (its lock expired during a Redis outage), the sweeper re-queued the job
    and another runner restarted it (attempt 2) before our renewer noticed the lost lock: we
    must write nothing into the other runner's attempt: no stream entries, no snapshot,
    result or history over its files, no row update."""
    from stylequeue.shared.db import session_scope
    from stylequeue.shared.models import Job
    from stylequeue.worker import engine

    settings = replace(wsettings, lock_ttl_seconds=600)  # our renewer does not look in time
    storage = get_storage(settings)
    stream = ProgressStream(client)
    real = engine.transfer
    theirs: dict[str, bytes] = {}

    def restarted_elsewhere(*args: Any, on_iteration: Any, **kwargs: Any) -> Any:
        def hook(report: Any) -> None:
            on_iteration(report)
            if report.iteration == 2:  # what the sweeper and the new runner's _start do
                client.set(lock_key(job.id), "elsewhere|1|other", ex=600)
                with session_scope(settings.database_url) as session:
                    row = session.get(Job, job.id)
                    row.attempts, row.worker, row.iterations_done = 2, "other@host/2", 0
                    row.snapshot_iterations = []
                client.delete(stream_key(job.id))
                stream.append(job.id, {"iteration": 1, "loss": 42.0, "content": 0, "style": 0,
                                       "tv": 0, "elapsed": 1})  # fmt: skip
                for key, data in theirs.items():
                    storage.put(key, data)

        return real(*args, on_iteration=hook, **kwargs)

    monkeypatch.setattr(engine, "transfer", restarted_elsewhere)
    monkeypatch.setattr(runner, "DB_FLUSH_SECONDS", 0.0)
    job = make_job(settings, params={"iterations": 6, "snapshot_every": 1})
    theirs.update({  # what attempt 2 has written so far, at the keys attempt 2 writes
        keys.snapshot_key(job.id, 1, attempt=2): b"their snapshot",
        keys.snapshot_key(job.id, 3, attempt=2): b"their snapshot 3",
        keys.result_key(job.id, attempt=2): b"their result",
        keys.history_key(job.id, attempt=2): b"their history",
    })  # fmt: skip
    outcome = runner.execute(job.id, settings, worker_name=WORKER)
    assert outcome.action == "lost"
    after = get_job(settings, job.id)
    assert (after.status, after.attempts, after.worker) == ("running", 2, "other@host/2")
    assert after.iterations_done == 0 and after.result_key is None
    assert after.snapshot_iterations == []
    assert client.get(lock_key(job.id)) == b"elsewhere|1|other"  # not released by us
    # the new attempt's stream holds its own entry only, none of ours after the takeover
    assert [(e["iteration"], e["loss"]) for e in read_stream(settings, job.id)] == [(1, 42.0)]
    assert client.ttl(stream_key(job.id)) == -1  # nor did we set it to expire
    # and its files are as it wrote them
    assert {key: storage.get(key) for key in theirs} == theirs
    assert not storage.list(keys.attempt_prefix(job.id, 1))  # ours went, superseded


@pytest.mark.parametrize("fate", ["canceled"])
def test_lost_runner_lets_the_stream_of_an_ended_job_expire(
    wsettings: Settings, client: Any, monkeypatch: pytest.MonkeyPatch, fate: str
) -> None:
    """Presumed dead (the lock lapsed), the job then ended without a runner (the sweeper
    re-queued it and it was canceled while queued): nobody else will set the stream's expiry,
    so the lost runner does. (Its row gone, the job was deleted: the lost runner purges it,
    tests/worker/test_runner_deleted.py.)"""
    from stylequeue.shared.db import session_scope
    from stylequeue.shared.models import Job
    from stylequeue.worker import engine

    settings = replace(wsettings, lock_ttl_seconds=600)  # our renewer does not look in time
    real = engine.transfer

    def ended_meanwhile(*args: Any, on_iteration: Any, **kwargs: Any) -> Any:
        def hook(report: Any) -> None:
            on_iteration(report)
            if report.iteration == 2:
                client.delete(lock_key(job.id))  # lapsed
                with session_scope(settings.database_url) as session:
                    row = session.get(Job, job.id)
                    if fate == "deleted":
                        session.delete(row)
                    else:  # ended, listing none of our snapshots
                        row.status, row.finished_at = "canceled", utcnow()
                        row.snapshot_iterations = []

        return real(*args, on_iteration=hook, **kwargs)

    monkeypatch.setattr(engine, "transfer", ended_meanwhile)
    monkeypatch.setattr(core, "GROUP_SECONDS", 0.0)  # iteration 1 handed over before 2 runs
    job = make_job(settings, params={"iterations": 6, "snapshot_every": 1})
    outcome = runner.execute(job.id, settings, worker_name=WORKER)
    assert outcome.action == "lost"
    # what was streamed before the lock lapsed (2 may still have waited in the stream
    # writer then, and was refused with everything after it)
    assert [e["iteration"] for e in read_stream(settings, job.id)] in ([1], [1, 2])
    assert 0 < client.ttl(stream_key(job.id)) <= settings.progress_ttl_seconds
    assert not get_storage(settings).list(keys.attempt_prefix(job.id, 1))  # nothing reads them


def _store_attempts(settings: Settings, job_id: str, attempts: int) -> None:
    """What dead runners left: a snapshot and a history in each attempt's prefix."""
    storage = get_storage(settings)
    for n in range(1, attempts + 1):
        storage.put(keys.snapshot_key(job_id, 4, attempt=n), b"snapshot")
        storage.put(keys.history_key(job_id, attempt=n), b"{}")


def _attempts_with_files(settings: Settings, job_id: str, attempts: int) -> list[int]:
    storage = get_storage(settings)
    return [n for n in range(1, attempts + 1) if storage.list(keys.attempt_prefix(job_id, n))]


def test_job_given_up_keeps_only_the_files_its_row_points_at(wsettings: Settings) -> None:
    """Lost MAX_ATTEMPTS times: the earlier attempts' files go; the last one's snapshot,
    which the (failed) row still lists, stays."""
    n = runner.MAX_ATTEMPTS
    job = make_job(wsettings, attempts=n, iterations_done=5, snapshot_iterations=[4])
    _store_attempts(wsettings, job.id, n)
    assert runner.execute(job.id, wsettings, worker_name=WORKER).action == "gave_up"
    assert _attempts_with_files(wsettings, job.id, n) == [n]
    done = get_job(wsettings, job.id)
    assert get_storage(wsettings).exists(keys.job_snapshot_key(done, 4))


@pytest.mark.parametrize(("listed", "kept"), [([], []), ([4], [2])])
def test_job_canceled_before_it_started_again_deletes_earlier_attempts(
    wsettings: Settings, listed: list[int], kept: list[int]
) -> None:
    """Re-queued after two dead attempts, then canceled before a runner took it."""
    job = make_job(wsettings, attempts=2, cancel_requested=True, snapshot_iterations=listed)
    _store_attempts(wsettings, job.id, 2)
    assert runner.execute(job.id, wsettings, worker_name=WORKER).action == "canceled"
    assert _attempts_with_files(wsettings, job.id, 2) == kept
    assert get_storage(wsettings).exists(keys.content_key(job.id))  # inputs stay


def test_duplicate_delivery_of_a_job_canceled_while_queued_deletes_earlier_attempts(
    wsettings: Settings,
) -> None:
    """Canceled by the web while re-queued: the delivery that finds it ended tidies up."""
    job = make_job(wsettings, status="canceled", finished_at=utcnow(), attempts=2)
    _store_attempts(wsettings, job.id, 2)
    assert runner.execute(job.id, wsettings, worker_name=WORKER).action == "duplicate"
    assert _attempts_with_files(wsettings, job.id, 2) == []
