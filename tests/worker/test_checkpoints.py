"""Checkpoints and resume, driven in-process: a runner dies mid-job (a BaseException out of
the engine, as from a killed process: nothing of the attempt's ending runs) and the next
attempt resumes from the newest valid checkpoint, ending as the undisturbed job.

A real worker SIGKILLed mid-job: test_worker_checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis

from stylequeue.shared import keys
from stylequeue.shared.progress import ProgressStream
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.storage import get_storage
from stylequeue.worker import runner
from stylequeue.worker.checkpoints import Checkpoint, CheckpointStore
from tests.factories import get_job, make_job
from tests.worker_process import check_finished_job, read_stream

WORKER = "test@host/1"
PARAMS = {"iterations": 12, "snapshot_every": 4}
EVERY = 3  # a checkpoint after every third iteration (instead of every N seconds)
CRASH_AT = 8  # the dead runner's last iteration: its checkpoint is at 6
ENTRY = {"iteration": 1, "loss": 1.0, "content": 0, "style": 0, "tv": 0, "elapsed": 1}


class Killed(BaseException):
    """The process died: not an Exception, so no ending of the attempt runs."""


@pytest.fixture
def client(wsettings: Settings, redis_of: Callable[[Settings], redis.Redis]) -> redis.Redis:
    return redis_of(wsettings)


@pytest.fixture(autouse=True)
def _checkpoint_by_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner._Checkpointer, "due", lambda self, k: k % EVERY == 0)
    monkeypatch.setattr(runner, "DB_FLUSH_SECONDS", 0.0)  # the row follows closely


def _die_at(monkeypatch: pytest.MonkeyPatch, iteration: int) -> None:
    from stylequeue.worker import engine

    real = engine.transfer

    def dies(*args: Any, on_iteration: Any, **kwargs: Any) -> Any:
        def hook(report: Any) -> None:
            on_iteration(report)
            if report.iteration == iteration:
                raise Killed()

        return real(*args, on_iteration=hook, **kwargs)

    monkeypatch.setattr(engine, "transfer", dies)


def _crash(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, job_id: str, at: int = CRASH_AT
) -> None:
    """Attempt 1 runs to ``at`` and dies (its lock released, as the sweeper would see)."""
    with monkeypatch.context() as patch:
        _die_at(patch, at)
        with pytest.raises(Killed):
            runner.execute(job_id, settings, worker_name="dead@host/9")


def _stored(settings: Settings, job_id: str) -> dict[str, Any]:
    """What a finished job shows: result, snapshots and history values (no ids or times)."""
    job = get_job(settings, job_id)
    storage = get_storage(settings)
    history = json.loads(storage.get(job.history_key))["entries"]
    fields = ("iteration", "loss", "content", "style", "tv")
    return {
        "result": storage.get(job.result_key),
        "snapshots": {
            i: storage.get(keys.job_snapshot_key(job, i)) for i in job.snapshot_iterations
        },
        "history": [[e[k] for k in fields] for e in history],
        "best": (job.best_loss, job.best_iteration, job.iterations_done, job.status),
    }


@pytest.fixture(params=["folder", "s3"])
def any_store(request: pytest.FixtureRequest, wsettings: Settings) -> Settings:
    """``wsettings`` on a storage folder, or on an S3 bucket (moto's server)."""
    if request.param == "folder":
        return wsettings
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("s3_endpoint")
    return replace(wsettings, storage_url=f"s3://{bucket}/sq", s3_endpoint_url=endpoint)


def test_a_resumed_job_ends_exactly_as_the_undisturbed_one(
    any_store: Settings, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    wsettings = any_store
    undisturbed = make_job(wsettings, params=PARAMS)
    assert runner.execute(undisturbed.id, wsettings, worker_name=WORKER).status == "succeeded"

    job = make_job(wsettings, params=PARAMS)
    _crash(wsettings, monkeypatch, job.id)
    dead = get_job(wsettings, job.id)
    assert (dead.status, dead.attempts, dead.iterations_done) == ("running", 1, CRASH_AT)
    assert dead.iterations_computed == CRASH_AT and dead.resumed_from is None
    before = read_stream(wsettings, job.id)
    assert [e["iteration"] for e in before] == list(range(1, CRASH_AT + 1))
    storage = get_storage(wsettings)
    listed = storage.list(keys.checkpoint_prefix(job.id))
    assert listed == [keys.checkpoint_key(job.id, attempt=1, iteration=6)]  # 3 went when 6 came

    outcome = runner.execute(job.id, wsettings, worker_name=WORKER)
    assert outcome.status == "succeeded"
    done = get_job(wsettings, job.id)
    assert (done.attempts, done.resumed_from) == (2, 6)
    assert done.iterations_computed == CRASH_AT + PARAMS["iterations"] - 6
    # one clean 1..N stream and history, snapshots of both attempts under attempt 2
    check_finished_job(wsettings, job.id, PARAMS["iterations"], PARAMS["snapshot_every"])
    after = read_stream(wsettings, job.id)
    # the dead runner's entries stayed, same ids, also those after the checkpoint (7 and 8
    # were computed again, not streamed again: no reader sees an iteration twice)
    assert after[:CRASH_AT] == before
    assert _sid(after[CRASH_AT]["id"]) > _sid(before[-1]["id"])  # no cursor goes back
    # byte-identical to the undisturbed job: result, every snapshot, every loss
    assert _stored(wsettings, job.id) == _stored(wsettings, undisturbed.id)
    # and nothing left behind: checkpoints and the dead attempt's files went
    assert storage.list(keys.checkpoint_prefix(job.id)) == []
    assert storage.list(keys.attempt_prefix(job.id, 1)) == []


def _row_lagged(settings: Settings, job_id: str, iterations: int) -> None:
    """The row as the dead runner's last progress flush left it: the flushes go about once a
    second from a thread of their own, so a runner dies with its row behind its loop (the
    in-process crash here flushed once more on the way out, as a clean exit would)."""
    from stylequeue.shared.db import session_scope
    from stylequeue.shared.models import Job

    with session_scope(settings.database_url) as session:
        row = session.get(Job, job_id)
        assert row is not None
        row.iterations_done = row.iterations_computed = iterations


def test_work_lost_is_counted_though_the_row_lagged_behind(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dead runner's row was last written at iteration 4, it died at 7: the checkpoint's
    count (6) and the stream entry after it (7) say what it ran."""
    job = make_job(wsettings, params=PARAMS)
    _crash(wsettings, monkeypatch, job.id, at=7)
    _row_lagged(wsettings, job.id, 4)
    assert runner.execute(job.id, wsettings, worker_name=WORKER).status == "succeeded"
    done = get_job(wsettings, job.id)
    assert (done.resumed_from, done.iterations_computed) == (6, 7 + PARAMS["iterations"] - 6)


def test_work_before_the_first_checkpoint_is_counted(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner died at 2, before its first checkpoint (due at 3) and before the row heard
    of any iteration: the stream says what it ran, and the next attempt counts it."""
    job = make_job(wsettings, params=PARAMS)
    _crash(wsettings, monkeypatch, job.id, at=2)
    _row_lagged(wsettings, job.id, 0)
    dead = get_job(wsettings, job.id)
    assert (dead.iterations_done, dead.iterations_computed, dead.checkpoints) == (0, 0, 0)
    assert get_storage(wsettings).list(keys.checkpoint_prefix(job.id)) == []
    assert runner.execute(job.id, wsettings, worker_name=WORKER).status == "succeeded"
    done = get_job(wsettings, job.id)
    assert (done.resumed_from, done.resumes) == (None, 0)
    assert done.iterations_computed == 2 + PARAMS["iterations"]


def test_checkpoints_and_resumes_are_counted_on_the_row(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(wsettings, params=PARAMS)
    _crash(wsettings, monkeypatch, job.id)  # checkpoints at 3 and 6, dead at 8
    dead = get_job(wsettings, job.id)
    assert (dead.checkpoints, dead.checkpoint_iteration, dead.resumes) == (2, 6, 0)
    assert runner.execute(job.id, wsettings, worker_name=WORKER).status == "succeeded"
    done = get_job(wsettings, job.id)
    assert (done.checkpoints, done.resumes) == (3, 1)  # and at 9 (none at the last, 12)


def _checkpoint(settings: Settings, job_id: str) -> tuple[str, bytes, Checkpoint]:
    storage = get_storage(settings)
    (key,) = storage.list(keys.checkpoint_prefix(job_id))
    data = storage.get(key)
    ckpt = Checkpoint.decode(data, job_id=job_id, fingerprint=_header(data)["fingerprint"])
    return key, data, ckpt


def _header(data: bytes) -> dict[str, Any]:
    return json.loads(data.split(b"\n", 3)[2])


@pytest.mark.parametrize("valid_one_too", [True, False])
def test_torn_damaged_or_foreign_checkpoints_are_never_resumed(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch, valid_one_too: bool
) -> None:
    """Newer-looking checkpoints that are torn (cut short), damaged (a flipped byte in the
    state or in the header), of
    other parameters (fingerprint) or lying about their iteration are skipped: the job
    resumes from the valid one, or, without one, starts again at 1; either way it ends
    as the undisturbed job."""
    undisturbed = make_job(wsettings, params=PARAMS)
    runner.execute(undisturbed.id, wsettings, worker_name=WORKER)
    job = make_job(wsettings, params=PARAMS)
    _crash(wsettings, monkeypatch, job.id)
    storage = get_storage(wsettings)
    key, data, ckpt = _checkpoint(wsettings, job.id)

    def at(attempt: int, iteration: int) -> str:
        return keys.checkpoint_key(job.id, attempt=attempt, iteration=iteration)

    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    storage.put(at(1, 7), data[: len(data) // 2])  # torn
    storage.put(at(1, 8), bytes(flipped))  # damaged
    storage.put(at(1, 9), replace(ckpt, fingerprint="0" * 64).encode())  # other parameters
    # a well-formed one at 10 whose header was damaged after its checksum was taken
    relabelled = replace(
        ckpt, state=replace(ckpt.state, iteration=10),
        history=[*ckpt.history, *({**ckpt.history[-1], "iteration": i} for i in (7, 8, 9, 10))],
    )  # fmt: skip
    encoded = relabelled.encode()
    cut = encoded.index(b'"loss":') + len(b'"loss":')
    digit = b"1" if encoded[cut : cut + 1] != b"1" else b"2"
    storage.put(at(1, 10), encoded[:cut] + digit + encoded[cut + 1 :])
    storage.put(at(2, 1), data)  # a copy whose key lies about attempt and iteration
    storage.put(keys.checkpoint_prefix(job.id) + "a0003-i000010/stray.bin", b"junk")
    if not valid_one_too:
        storage.delete_prefix(key.rsplit("/", 1)[0] + "/")

    assert runner.execute(job.id, wsettings, worker_name=WORKER).status == "succeeded"
    done = get_job(wsettings, job.id)
    assert done.resumed_from == (6 if valid_one_too else None)
    check_finished_job(wsettings, job.id, PARAMS["iterations"], PARAMS["snapshot_every"])
    assert _stored(wsettings, job.id) == _stored(wsettings, undisturbed.id)
    assert storage.list(keys.checkpoint_prefix(job.id)) == []


def test_a_new_checkpoint_replaces_older_ones_and_a_stale_one_loses(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ordered by (attempt, iteration): a presumed-dead attempt's late checkpoint, though
    at a higher iteration, is not resumed over the live attempt's, and the live one's next
    write removes it."""
    job = make_job(wsettings, params=PARAMS)
    _crash(wsettings, monkeypatch, job.id)
    storage = get_storage(wsettings)
    _, data, ckpt = _checkpoint(wsettings, job.id)
    store = CheckpointStore(storage, job.id)
    assert store.newest(ckpt.fingerprint) is not None
    # attempt 2 checkpointed at 3 (a copy of attempt 1's state relabelled)...
    store.save(replace(ckpt, attempt=2, state=replace(ckpt.state, iteration=3, best_iteration=1),
                       history=ckpt.history[:3]))  # fmt: skip
    assert storage.list(keys.checkpoint_prefix(job.id)) == [
        keys.checkpoint_key(job.id, attempt=2, iteration=3)
    ]
    # ...then stale attempt 1 lands one at 6: attempt 2's stays the newest
    storage.put(keys.checkpoint_key(job.id, attempt=1, iteration=6), data)
    newest = store.newest(ckpt.fingerprint)
    assert newest is not None and (newest.attempt, newest.iteration) == (2, 3)


@pytest.mark.parametrize("status", ["succeeded", "failed", "canceled"])
def test_an_ended_job_keeps_no_checkpoint(wsettings: Settings, status: str) -> None:
    """A delivery that finds the job ended (it ended outside a runner) deletes them."""
    job = make_job(wsettings, status=status, finished_at=utcnow(), attempts=1)
    storage = get_storage(wsettings)
    storage.put(keys.checkpoint_key(job.id, attempt=1, iteration=5), b"state")
    assert runner.execute(job.id, wsettings, worker_name=WORKER).action == "duplicate"
    assert storage.list(keys.checkpoint_prefix(job.id)) == []


@pytest.mark.parametrize("ending", ["canceled", "gave_up"])
def test_a_job_ending_without_running_deletes_its_checkpoints(
    wsettings: Settings, client: Any, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    job = make_job(wsettings, params=PARAMS)
    _crash(wsettings, monkeypatch, job.id)
    if ending == "canceled":
        ProgressStream(client).request_cancel(job.id)
    else:
        from stylequeue.shared.db import session_scope
        from stylequeue.shared.models import Job

        with session_scope(wsettings.database_url) as session:
            session.get(Job, job.id).attempts = runner.MAX_ATTEMPTS
    assert get_storage(wsettings).list(keys.checkpoint_prefix(job.id))
    assert runner.execute(job.id, wsettings, worker_name=WORKER).action == ending
    assert get_storage(wsettings).list(keys.checkpoint_prefix(job.id)) == []


def test_a_job_that_fails_after_resuming_keeps_no_checkpoint(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed (here: its soft deadline already passed) after resuming: the best so far is
    kept, the checkpoints go, and the work counts are the row's."""
    job = make_job(wsettings, params=PARAMS)
    _crash(wsettings, monkeypatch, job.id)
    outcome = runner.execute(job.id, wsettings, worker_name=WORKER, deadline=0.0)
    done = get_job(wsettings, job.id)
    assert (outcome.status, done.resumed_from, done.iterations_done) == ("failed", 6, 7)
    assert done.iterations_computed == CRASH_AT + 1
    assert get_storage(wsettings).list(keys.checkpoint_prefix(job.id)) == []
    history = json.loads(get_storage(wsettings).get(done.history_key))["entries"]
    assert [e["iteration"] for e in history] == list(range(1, 8))
    assert read_stream(wsettings, job.id) == history  # the dead runner's 8 went


def _sid(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


def test_resume_keeps_the_dead_runners_entries_that_go_on_from_the_checkpoint(
    client: Any,
) -> None:
    """The checkpoint is at 2; the dead runner streamed 3, 4, then (a Redis blip lost 5)
    6, 7: 3 and 4 stay (computed again, not streamed again), 6 and 7 go (recomputed and
    streamed after 4, in order)."""
    from stylequeue.shared.locks import lock_key
    from stylequeue.shared.progress import AttemptStream
    from stylequeue.worker.progress_sink import ProgressSink

    client.set(lock_key("job"), "token")
    stream = ProgressStream(client)
    ids = {i: stream.append("job", {**ENTRY, "iteration": i}) for i in (1, 2, 3, 4, 6, 7)}
    sink = ProgressSink(AttemptStream(client, "job", "token"), 5.0)
    kept, dropped = sink.resume_after(ids[2], 3)
    assert [(e["id"], e["iteration"]) for e in kept] == [(ids[3], 3), (ids[4], 4)]
    assert dropped == 2
    assert [e["iteration"] for e in stream.read("job")[0]] == [1, 2, 3, 4]
    assert sink.resume_after(ids[4], 5) == ([], 0)
