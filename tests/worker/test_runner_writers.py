"""The runner's background writers drain where it matters: before each checkpoint (a
checkpoint holds only streamed entries and stored snapshots) and before the attempt ends,
whatever ends it. The stream writer here sends a batch only when asked (its interval an
hour), so only those drains can have written what the stream holds."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from stylequeue.shared import keys
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import get_storage
from stylequeue.worker import runner, stop_signal, stream_writer
from stylequeue.worker.checkpoints import Checkpoint, CheckpointStore
from tests.factories import get_job, make_job
from tests.worker_process import check_finished_job, read_stream

WORKER = "test@host/1"


@pytest.fixture(autouse=True)
def _batches_only_when_drained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_writer, "INTERVAL_SECONDS", 3600.0)


def test_the_writers_drain_before_each_checkpoint(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner._Checkpointer, "due", lambda self, k: k % 3 == 0)
    storage = get_storage(wsettings)
    at_save: list[tuple[Checkpoint, list[dict[str, Any]], list[bool]]] = []
    real_save = CheckpointStore.save

    def save(store: CheckpointStore, ckpt: Checkpoint) -> Any:
        stored = [storage.exists(keys.snapshot_key(ckpt.job_id, i, attempt=ckpt.attempt))
                  for i in ckpt.snapshots]  # fmt: skip
        at_save.append((ckpt, read_stream(wsettings, ckpt.job_id), stored))
        return real_save(store, ckpt)

    monkeypatch.setattr(CheckpointStore, "save", save)
    job = make_job(wsettings, params={"iterations": 8, "snapshot_every": 2})
    assert runner.execute(job.id, wsettings, worker_name=WORKER).status == "succeeded"
    assert [c.state.iteration for c, _, _ in at_save] == [3, 6]
    for ckpt, stream_then, stored in at_save:
        k = ckpt.state.iteration
        # every iteration up to the checkpoint's was in the stream as it was saved, with the
        # ids the checkpoint's history gives them
        assert [e["iteration"] for e in stream_then] == list(range(1, k + 1))
        assert ckpt.history == stream_then
        # and every snapshot up to it was stored and listed
        assert ckpt.snapshots == list(range(2, k + 1, 2)) and all(stored)
    check_finished_job(wsettings, job.id, 8, 2)


def _cancel_in_row_at(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, job_id: str, at: int
) -> None:
    """The web's cancel, on the row only (the Redis flag would be read by the stream writer,
    whose batches wait here), after iteration ``at``: the row flusher reads it."""
    from stylequeue.shared.db import session_scope
    from stylequeue.shared.models import Job
    from stylequeue.worker import engine

    real = engine.transfer

    def canceled(*args: Any, on_iteration: Any, **kwargs: Any) -> Any:
        def hook(report: Any) -> None:
            on_iteration(report)
            if report.iteration == at:
                with session_scope(settings.database_url) as session:
                    row = session.get(Job, job_id)
                    assert row is not None
                    row.cancel_requested = True

        return real(*args, on_iteration=hook, **kwargs)

    monkeypatch.setattr(engine, "transfer", canceled)
    monkeypatch.setattr(runner, "DB_FLUSH_SECONDS", 0.0)


@pytest.mark.parametrize("ending", ["succeeded", "canceled", "preempted", "failed"])
def test_the_writers_drain_before_the_attempt_ends(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    params = {"iterations": 200 if ending == "canceled" else 9, "snapshot_every": 4}
    job = make_job(wsettings, params=params)
    deadline = None
    if ending == "canceled":
        _cancel_in_row_at(monkeypatch, wsettings, job.id, 3)
    elif ending == "failed":
        deadline = time.monotonic()  # the soft deadline: stops after the first iteration
    if ending == "preempted":
        stop_signal.request_preempt()
    try:
        outcome = runner.execute(job.id, wsettings, worker_name=WORKER, deadline=deadline)
    finally:
        stop_signal.clear_preempt()
    done = get_job(wsettings, job.id)
    assert (outcome.status, done.status) == (
        ("queued", "queued") if ending == "preempted" else (ending, ending)
    )
    n = done.iterations_done
    assert 0 < n < params["iterations"] or ending == "succeeded"
    entries = read_stream(wsettings, job.id)
    assert [e["iteration"] for e in entries] == list(range(1, n + 1))
    if ending == "preempted":  # the checkpoint holds them, as the stream does
        (key,) = get_storage(wsettings).list(keys.checkpoint_prefix(job.id))
        data = get_storage(wsettings).get(key)
        header = json.loads(data.split(b"\n", 3)[2])
        ckpt = Checkpoint.decode(data, job_id=job.id, fingerprint=header["fingerprint"])
        assert ckpt.history == entries
        return
    history = json.loads(get_storage(wsettings).get(done.history_key))["entries"]
    assert history == entries  # same ids and values
    if ending == "succeeded":
        check_finished_job(wsettings, job.id, 9, 4)
    listed = done.snapshot_iterations
    assert listed == sorted({*range(4, n + 1, 4), *([n] if n == params["iterations"] else [])})
    for i in listed:
        assert get_storage(wsettings).exists(keys.job_snapshot_key(done, i))
