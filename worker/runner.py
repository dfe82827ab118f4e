"""One attempt at one job: lock, mark running, run the engine, stream, store, finish.

Not a Celery task (``worker.tasks`` is the thin wrapper; the only Celery name here is the
soft-limit exception it catches), so tests and the bench drive a job in-process with explicit
settings. The engine (TensorFlow) is imported on
first use, never at import time.

State machine of an attempt::

    lock held by a live runner ............ return "busy" (the message is acked; that
                                             runner finishes the job)
    row missing ........................... return (the message is dropped); under the
                                             lock: purge what is left (a deleted job)
    row terminal .......................... return (duplicate delivery); its stream is set
                                             to expire and unreferenced attempts' files
                                             deleted (it may have ended outside a runner)
    cancel requested (row or Redis flag) .. -> canceled
    attempts - preemptions >= MAX_ATTEMPTS  -> failed "worker lost N times" (crashes only)
    otherwise ............................. -> running (attempts + 1; from the newest valid
                                             checkpoint if any, else from iteration 1)
        engine finished ................... -> succeeded
        stopped by cancel ................. -> canceled (best-so-far saved as the result)
        stopped by the soft deadline ...... -> failed "time limit reached ..." (best saved)
        stopped by preemption ............. -> queued (preemptions + 1): a final checkpoint
                                             is written first; the lock is released and
                                             the task re-sends the message (worker.tasks)
        SoftTimeLimitExceeded ............. -> failed, latest snapshot saved as the result
        any other exception ............... -> failed with a one-line reason
        lock lost (we were presumed dead) . leave the row alone: the new runner owns it
        row gone (the job was deleted) .... write nothing more; purge the job's files and
                                             stream (shared.deletion), then return

Fencing: the sweeper may presume a runner dead (its lock expired, say during a Redis outage)
and another runner start attempt N + 1 while the first still runs. Every write of an attempt
is therefore checked where it is written, not only by the lock renewer's ``lost`` flag:

- Redis (stream entries, reset, expiry): a Lua script writes only while the job's lock still
  holds this attempt's token (``shared.progress.AttemptStream``; entries go a batch per
  script call, from the stream writer's thread); a refusal stops the attempt (outcome
  ``lost``).
- Storage (snapshots, result, history): under the attempt's own prefix
  (``jobs/<id>/attempts/<n>/``, ``shared.keys``), so a stale attempt never overwrites the
  live one's files; the row points at the winning attempt's, and the winner deletes the
  other attempts' prefixes once it has finished the job. A job that ends without running
  (canceled before it started, or given up after MAX_ATTEMPTS lost runners) keeps only the
  files its row still points at: the last attempt's snapshots when the dead runner listed
  some (the page shows how far it got), nothing otherwise; every other attempt's prefix is
  deleted then, under the lock (``shared.keys.unreferenced_attempts``).
- The row: updated under ``SELECT ... FOR UPDATE`` only while it is ``running`` with this
  attempt's number (:class:`AttemptFence`).

The loop thread does no I/O (``_Recorder``): each iteration's entry goes to the stream writer
(``worker.stream_writer``: batches at most every 100 ms, the cancel flag read with them),
snapshots to the snapshot writer (``worker.snapshot_writer``: made, encoded and stored off
the loop, two at most in memory), the row's progress to a flusher (``worker.row_flusher``,
about once a second). ``_Recorder.writing`` drains them and writes the row once more on
every way out of the engine, so each ending above finds every iteration streamed (or, Redis
away, given a stand-in id: logged) and every snapshot stored.

Deleting: ``DELETE /api/v1/jobs/<id>`` (or retention) removes the row at once and sets the
cancel flag. The attempt notices at its next fenced row write (a flush, every second or
snapshot) or by the flag, and before it stores a result it looks for the row once more:
gone, it writes nothing more and purges the whole job under its lock (``shared.deletion``),
files of earlier attempts and checkpoints included, so nothing of it is left.

Checkpoints (``worker.checkpoints``): every ``STYLEQUEUE_CHECKPOINT_SECONDS`` the engine hands
over its whole state and, once the writers have caught up (``_Recorder.drain``: a
checkpoint holds only streamed entries and stored snapshots; a periodic one waits while
Redis is away), it goes to storage with the history and snapshot list so far (per
job, one new object each time, checked by checksum and the job's fingerprint when read). A
new attempt resumes from the newest valid one: same iteration numbering; the stream keeps
the entries up to the checkpoint and the dead runner's entries after it (those iterations
are computed again but not streamed again, so no reader sees one twice; entries after a gap
are deleted and streamed anew), the history continues from the checkpoint's with them, and
the snapshots up to it are copied into the new attempt's prefix. The engine's state is restored
bit for bit, so on the same machine and precision the result is the undisturbed run's.
Every ending deletes the job's checkpoints.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import redis
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session, object_session

from stylequeue.shared import keys
from stylequeue.shared.db import get_sessionmaker, session_scope
from stylequeue.shared.deletion import purge
from stylequeue.shared.locks import JobLock
from stylequeue.shared.models import Job
from stylequeue.shared.params import TransferParams
from stylequeue.shared.progress import AttemptStream, Fenced, expire_job_stream
from stylequeue.shared.redis_client import redis_client
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import JobStatus, transition
from stylequeue.shared.storage import ObjectNotFound, Storage, get_storage
from stylequeue.shared.tile_progress import AttemptTiles
from stylequeue.shared.webhook_outbox import PROGRESS, record, record_change
from stylequeue.worker.budget import worker_budget
from stylequeue.worker.checkpoints import Checkpoint, CheckpointStore, fingerprint
from stylequeue.worker.progress_sink import ProgressSink
from stylequeue.worker.row_flusher import RowFlusher
from stylequeue.worker.snapshot_writer import SnapshotWriter
from stylequeue.worker.stop_signal import StopReason, StopSignal, preempt_requested
from stylequeue.worker.stream_writer import StreamWriter
from stylequeue.worker.webhook_events import AttemptWebhooks

if TYPE_CHECKING:
    import numpy as np
    from celery import Celery

    from stylequeue.worker.engine.state import EngineState

log = logging.getLogger("stylequeue.worker")

MAX_ATTEMPTS = 3  # a job whose runner died this many times fails instead of looping
DB_FLUSH_SECONDS = 1.0  # progress fields in the row are written this often (and on snapshots)
MAX_ERROR_CHARS = 1000
REDIS_RETRY_SECONDS = 5.0  # Redis unreachable mid-job: retry the stream this often


class Action(StrEnum):
    """What an attempt did."""

    RAN = "ran"  # ran the engine and wrote the final state
    BUSY = "busy"  # another live runner holds the job's lock
    MISSING = "missing"  # no such row
    DUPLICATE = "duplicate"  # the row is terminal already
    CANCELED = "canceled"  # canceled before it started
    GAVE_UP = "gave_up"  # lost MAX_ATTEMPTS times: failed without running
    LOST = "lost"  # presumed dead, the job restarted elsewhere: left to the new runner
    PREEMPTED = "preempted"  # the worker is shutting down: checkpointed, back to queued
    DELETED = "deleted"  # the job was deleted while running: stopped, everything purged


@dataclass
class Outcome:
    """What an attempt did; ``status`` is the row's status afterwards (None: untouched)."""

    action: Action
    status: str | None = None
    iterations: int = 0
    seconds: float = 0.0
    error: str | None = None


def soft_deadline(settings: Settings, started: float) -> float:
    """When to stop on our own, ahead of Celery's soft limit, so the best image is saved."""
    soft = float(settings.job_soft_time_limit)
    margin = min(30.0, max(0.5, soft * 0.05))
    return started + max(0.0, soft - margin)


def one_line(exc: BaseException) -> str:
    """A readable one-line reason: WeightsUnavailable as is, others ``Type: message``."""
    from stylequeue.worker.engine.errors import WeightsUnavailable  # no TensorFlow in this module

    text = str(exc) if isinstance(exc, WeightsUnavailable) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def execute(
    job_id: str,
    settings: Settings,
    *,
    worker_name: str,
    deadline: float | None = None,
    client: redis.Redis | None = None,
    celery: Celery | None = None,
) -> Outcome:
    """Run one attempt of ``job_id`` under its lock. Never raises for job errors.
    ``celery`` sends the job's webhook events (one is made from settings if not given)."""
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        # A cheap answer to duplicate deliveries, without touching the lock; _start re-checks
        # under the lock.
        status = None if job is None else JobStatus(job.status)
        unreferenced = keys.unreferenced_attempts(job) if job is not None and job.terminal else []
    if status is None:
        log.warning("job %s: no such row (deleted?); dropping the message", job_id)
        return Outcome(Action.MISSING)
    own_client = client is None
    client = client or redis_client(settings.redis_url)
    try:
        if status.terminal:
            log.info("job %s: already %s; duplicate delivery ignored", job_id, status)
            # It may have ended outside a runner (canceled while queued, say): its stream
            # expires like any ended job's.
            expire_ended_stream(client, job_id, settings.progress_ttl_seconds)
            # and the files of earlier attempts its row does not point at go (an ended row
            # never changes, so no lock is needed for that)
            delete_attempts(get_storage(settings), job_id, unreferenced)
            CheckpointStore(get_storage(settings), job_id).delete_all()
            return Outcome(Action.DUPLICATE, status.value)
        lock = JobLock(client, job_id, settings.lock_ttl_seconds)
        if not lock.acquire():
            log.info("job %s: another runner holds its lock; not running it twice", job_id)
            return Outcome(Action.BUSY)
        lock.start_renewing()
        webhooks = AttemptWebhooks(settings, celery)
        try:
            return _Attempt(job_id, settings, worker_name, lock, client, deadline, webhooks).run()
        finally:
            webhooks.close()
            # Released only after the final state is committed: the sweeper reads "running
            # and no lock" as "runner died".
            lock.release()
    finally:
        if own_client:
            client.close()


def expire_ended_stream(client: redis.Redis, job_id: str, seconds: int) -> None:
    """Let the stream of a job that has ended expire, unfenced (no runner writes to an ended
    job); for a job this runner did not end itself. Best effort: Redis errors are logged."""
    try:
        expire_job_stream(client, job_id, seconds)
    except redis.RedisError as exc:
        log.warning("job %s: could not set its stream's expiry: %s", job_id, exc)


def delete_attempts(storage: Storage, job_id: str, attempts: Iterable[int]) -> None:
    """Delete these attempts' files (``jobs/<id>/attempts/<n>/``) of an ended job: ones its
    row does not point at. Best effort: errors are logged."""
    for attempt in attempts:
        try:
            storage.delete_prefix(keys.attempt_prefix(job_id, attempt))
        except Exception as exc:
            log.warning("job %s: could not delete attempt %d: %s", job_id, attempt, exc)


def _session_of(job: Job) -> Session:
    """The session a row from :meth:`AttemptFence.row` is in (its event goes with it)."""
    session = object_session(job)
    assert session is not None
    return session


class AttemptFence:
    """What makes a write this attempt's: its number in the row, checked under ``SELECT ...
    FOR UPDATE``, and its lock still held (the lock's token is also checked by Redis in each
    stream write; a refusal lands here through :meth:`refused`)."""

    def __init__(self, job_id: str, database_url: str, lock: JobLock) -> None:
        self.job_id = job_id
        self.database_url = database_url
        self.lock = lock
        self.token = lock.value
        self.attempt = 0  # set once the row is marked running with this attempt's number
        self._refused = False
        self.gone = False  # the row was found missing: the job was deleted

    @property
    def lost(self) -> bool:
        """Write nothing more: another runner has the job, or the job is gone."""
        return self._refused or self.gone or self.lock.lost.is_set()

    def check_gone(self) -> bool:
        """Look for the row (a plain read); True, and :attr:`gone` set, when it is missing."""
        if not self.gone:
            with session_scope(self.database_url) as session:
                self.gone = session.get(Job, self.job_id) is None
        return self.gone

    def gone_now(self) -> bool:
        """:meth:`check_gone`, a database error reading as "still there" (the next row write
        finds out)."""
        try:
            return self.check_gone()
        except Exception as exc:
            log.warning("job %s: could not look for its row: %s", self.job_id, exc)
            return False

    def refused(self) -> None:
        """A fenced write was refused: the lock holds another runner's token."""
        if not self._refused:
            log.error("job %s: a write was refused: the job is no longer ours", self.job_id)
        self._refused = True

    def holds(self, job: Job | None) -> bool:
        """The row is still this attempt's: running, with our attempt number (a runner that
        restarted the job after the sweeper presumed us dead has bumped it; our renewer may
        not have noticed the lost lock yet), and our lock not known to be lost."""
        return (
            job is not None
            and job.status == JobStatus.RUNNING.value
            and job.attempts == self.attempt
            and not self.lost
        )

    @contextmanager
    def row(self) -> Iterator[Job | None]:
        """The row locked for update while it is ours, else None (write nothing then)."""
        with session_scope(self.database_url) as session:
            job = session.get(Job, self.job_id, with_for_update=True)
            if job is None:
                self.gone = True
            yield job if self.holds(job) else None


class _Attempt:
    def __init__(
        self,
        job_id: str,
        settings: Settings,
        worker_name: str,
        lock: JobLock,
        client: redis.Redis,
        deadline: float | None,
        webhooks: AttemptWebhooks,
    ) -> None:
        self.job_id = job_id
        self.webhooks = webhooks
        self.settings = settings
        self.worker_name = worker_name
        self.client = client
        self.fence = AttemptFence(job_id, settings.database_url, lock)
        self.sink = ProgressSink(
            AttemptStream(client, job_id, self.fence.token, settings.progress_maxlen),
            REDIS_RETRY_SECONDS,
        )
        self.storage: Storage = get_storage(settings)
        self.started = time.monotonic()
        self.stop = StopSignal(
            deadline if deadline is not None else soft_deadline(settings, self.started),
            is_lost=lambda: self.fence.lost,
        )
        self.recorder: _Recorder | None = None
        self.unreferenced: list[int] = []  # attempts to delete when it ends without running
        self.checkpoints = CheckpointStore(self.storage, job_id)
        self.resume: Checkpoint | None = None  # what this attempt resumes from
        self.prior = (0, 0)  # the row's (iterations_done, iterations_computed) before ours
        self.computed_before = 0  # iterations earlier attempts ran (the row's count)
        self.fingerprint = ""  # the job's, for its checkpoints (set by _start)

    @property
    def attempt(self) -> int:
        return self.fence.attempt

    # ---- the attempt ---------------------------------------------------------------------

    def run(self) -> Outcome:
        self.resume = self._find_checkpoint()
        started = self._start()
        self.webhooks.send()  # started, or completed when it ended without running
        if isinstance(started, Outcome):
            if started.action is Action.MISSING:
                self._purge_deleted(locked=True)  # deleted just now; we hold its lock
            elif started.action in (Action.CANCELED, Action.GAVE_UP, Action.DUPLICATE):
                self._expire_stream()  # a dead attempt's entries: expire like any job's
                # Ended without running: earlier (dead) attempts' files the row does not
                # point at go now, and its checkpoints; nobody else would delete them.
                self._delete_attempts(self.unreferenced)
                self.checkpoints.delete_all()
            return started
        params, input_keys = started
        log.info(
            "job %s start: attempt %d on %s, %d iterations at max %d px%s",
            self.job_id, self.attempt, self.worker_name, params.iterations, params.max_size,
            f", resumed from iteration {self.resume.iteration}" if self.resume else "",
        )  # fmt: skip
        try:
            outcome = self._run_engine(params, input_keys)
        except Fenced:
            self.fence.refused()
            outcome = self._lost()
        except SoftTimeLimitExceeded:
            outcome = self._finish_after_soft_limit()
        except Exception as exc:
            log.exception("job %s failed", self.job_id)
            outcome = self._fail(one_line(exc))
        outcome.seconds = time.monotonic() - self.started
        per_it = outcome.seconds / outcome.iterations if outcome.iterations else 0.0
        log.info(
            "job %s end: %s after %d iterations in %.2fs (%.3fs/iteration)%s",
            self.job_id, outcome.status or outcome.action, outcome.iterations, outcome.seconds,
            per_it, f": {outcome.error}" if outcome.error else "",
        )  # fmt: skip
        return outcome

    def _start(self) -> Outcome | tuple[TransferParams, dict[str, Any]]:
        """Decide whether to run; if so mark the row running (attempts + 1, progress cleared)."""
        with session_scope(self.settings.database_url) as session:
            job = session.get(Job, self.job_id, with_for_update=True)
            if job is None:
                log.warning("job %s: no such row (deleted?); dropping the message", self.job_id)
                return Outcome(Action.MISSING)
            if job.terminal:
                log.info("job %s: already %s; duplicate delivery ignored", self.job_id, job.status)
                self.unreferenced = keys.unreferenced_attempts(job)
                return Outcome(Action.DUPLICATE, job.status)
            if job.cancel_requested or self.sink.read_cancel_flag():
                transition(job, JobStatus.CANCELED, cancel_requested=True)
                self.webhooks.note(record_change(session, job))
                log.info("job %s: canceled before it started", self.job_id)
                self.unreferenced = keys.unreferenced_attempts(job)
                return Outcome(Action.CANCELED, job.status)
            # Preemptions (a worker shut down cleanly) are not crashes: only runners that
            # died without warning count towards the limit.
            crashes = job.attempts - (job.preemptions or 0)
            if crashes >= MAX_ATTEMPTS:
                transition(
                    job, JobStatus.FAILED,
                    error=f"worker lost {crashes} times; giving up on this job",
                )  # fmt: skip
                self.webhooks.note(record_change(session, job))
                self.unreferenced = keys.unreferenced_attempts(job)
                return Outcome(Action.GAVE_UP, job.status, error=job.error)
            resume = self.resume
            # What the earlier attempts' row said, before ours overwrites it (see _restore).
            self.prior = (job.iterations_done or 0, job.iterations_computed or 0)
            transition(
                job, JobStatus.RUNNING,
                attempts=job.attempts + 1, worker=self.worker_name,
                resumes=(job.resumes or 0) + (1 if resume else 0),
                checkpoint_iteration=resume.iteration if resume else None,
                iterations_done=resume.iteration if resume else 0,
                snapshot_iterations=[],  # the resumed ones once copied to this attempt
                best_loss=resume.state.best_loss if resume else None,
                best_iteration=resume.state.best_iteration if resume else None,
                resumed_from=resume.iteration if resume else None,
                error=None, result_key=None, history_key=None,
            )  # fmt: skip
            self.webhooks.note(record_change(session, job))  # started, on the first attempt
            self.webhooks.watch(job)
            self.computed_before = job.iterations_computed or 0
            self.fingerprint = self._fingerprint(dict(job.params), dict(job.input_keys))
            params = TransferParams.from_dict(job.params)
            input_keys = dict(job.input_keys)
            self.fence.attempt = job.attempts
        return params, input_keys

    def _fingerprint(self, params: dict[str, Any], input_keys: dict[str, Any]) -> str:
        weights = TransferParams.from_dict(params).weights or self.settings.vgg19_weights
        return fingerprint(self.job_id, params, input_keys, weights)

    def _find_checkpoint(self) -> Checkpoint | None:
        """The newest valid checkpoint of this job and its parameters (we hold its lock, so
        no live attempt writes one now); None when there is none or it cannot be read."""
        try:
            with session_scope(self.settings.database_url) as session:
                job = session.get(Job, self.job_id)
                if job is None or job.terminal:
                    return None
                fp = self._fingerprint(dict(job.params), dict(job.input_keys))
            return self.checkpoints.newest(fp)
        except Exception as exc:  # no checkpoint is no reason to fail: start from 1
            log.warning("job %s: could not look for checkpoints: %s", self.job_id, exc)
            return None

    def _restore(self, recorder: _Recorder) -> None:
        """Bring the stream, snapshots and row to the checkpoint resumed from (or clear the
        stream of earlier attempts' entries when starting from iteration 1)."""
        resume = self.resume
        self._count_dead_work(recorder)
        if resume is None:
            self.sink.reset()  # a re-delivered job without a checkpoint restarts from 1
            recorder.flush()
            return
        kept, dropped = self.sink.resume_after(str(resume.history[-1]["id"]), resume.iteration + 1)
        # The dead runner's entries after the checkpoint stay in the stream: those
        # iterations are computed again (bit for bit on the same machine) but not streamed
        # twice; the history takes the kept entries as they are.
        recorder.replay = {int(e["iteration"]): e for e in kept}
        # The work before us: the row's count lags the dead runner by up to a flush; the
        # checkpoint's count plus the entries streamed after it is exact while Redis was up.
        recorder.computed_before = max(
            recorder.computed_before, resume.iterations_computed + len(kept) + dropped
        )
        recorder.snapshots = self._copy_snapshots(resume)
        log.info(
            "job %s: resuming at iteration %d (checkpoint of attempt %d); %d later stream "
            "entries kept, %d dropped, %d snapshots kept",
            self.job_id, resume.iteration + 1, resume.attempt, len(kept), dropped,
            len(recorder.snapshots),
        )  # fmt: skip
        recorder.flush()

    def _count_dead_work(self, recorder: _Recorder) -> None:
        """Add the iterations a dead runner streamed after its last flush to the row (the
        row lags it by up to a flush, and by everything when it died before its first
        checkpoint): earlier attempts ran ``computed - done`` plus the last iteration
        streamed, as the row's two fields move together."""
        done, computed = self.prior
        try:
            streamed = self.sink.last_iteration()
        except redis.RedisError as exc:  # the row's figure then, a flush behind at worst
            log.warning("job %s: could not read the stream's last entry: %s", self.job_id, exc)
            return
        if streamed is not None and streamed > done:
            recorder.computed_before = max(recorder.computed_before, computed - done + streamed)

    def _copy_snapshots(self, resume: Checkpoint) -> list[int]:
        """The checkpoint's snapshots, copied from its attempt's prefix into ours (the row
        lists one attempt's); one that has gone meanwhile is left out."""
        copied = []
        for iteration in resume.snapshots:
            source = keys.snapshot_key(self.job_id, iteration, attempt=resume.attempt)
            try:
                data = self.storage.get(source)
            except ObjectNotFound:
                log.warning("job %s: snapshot %s is gone; not kept", self.job_id, source)
                continue
            target = keys.snapshot_key(self.job_id, iteration, attempt=self.attempt)
            self.storage.put(target, data, "image/png")
            copied.append(iteration)
        return copied

    def _run_engine(self, params: TransferParams, input_keys: dict[str, Any]) -> Outcome:
        from stylequeue.worker import (
            engine,  # TensorFlow: only in the worker process, only when needed
        )
        from stylequeue.worker.engine.hardware import resolve_precision

        # The worker's precision, not the job's: the warm extractor is built for it.
        params = replace(params, precision=resolve_precision(self.settings.precision))

        weights = params.weights or self.settings.vgg19_weights
        resume = self.resume
        self.recorder = recorder = _Recorder(
            job_id=self.job_id, fence=self.fence, sink=self.sink, stop=self.stop,
            storage=self.storage, encode_png=engine.encode_png, params=params, weights=weights,
            webhooks=self.webhooks,
            entries=list(resume.history) if resume else [],
            best=(resume.state.best_loss, resume.state.best_iteration) if resume else (None, None),
            resumed_from=resume.iteration if resume else 0,
            computed_before=self.computed_before,
            tiles=AttemptTiles(
                self.client, self.job_id, self.fence.token, self.settings.progress_ttl_seconds
            ),
        )  # fmt: skip
        self._restore(recorder)
        content = engine.decode_image(self.storage.get(input_keys["content"]))
        styles = [engine.decode_image(self.storage.get(k)) for k in input_keys["styles"]]
        checkpointer = _Checkpointer(
            self.checkpoints, recorder, self.fingerprint, float(self.settings.checkpoint_seconds)
        )
        # The stream, snapshots and row are written from background threads, drained before
        # each checkpoint and on the way out of this block, whatever ends the loop.
        with recorder.writing(self.settings.progress_maxlen):
            result = engine.transfer(
                content, styles, params, weights=weights,
                on_iteration=recorder.on_iteration, should_stop=self.stop.should_stop,
                xla=self.settings.engine_xla, deterministic=self.settings.engine_deterministic,
                resume=resume.state if resume else None,
                checkpoint_due=checkpointer.due, on_checkpoint=checkpointer.save,
                # above the worker's memory budget the engine paints in tiles (or refuses)
                memory_budget=worker_budget(self.settings.engine).bytes,
                on_tile=recorder.on_tile,
            )  # fmt: skip
        # deleted meanwhile (the cancel flag may have stopped us before any row write)?
        if self.fence.lost or self.fence.check_gone():
            return self._lost()
        if result.stopped and self.stop.reason is StopReason.PREEMPT:
            return self._preempted()
        result_key = keys.result_key(self.job_id, attempt=self.attempt)
        self.storage.put(result_key, engine.encode_png(result.image), "image/png")
        history = self._save_history()
        status, error = JobStatus.SUCCEEDED, None
        if result.stopped and self.stop.reason is StopReason.CANCEL:
            status = JobStatus.CANCELED
        elif result.stopped and self.stop.reason is StopReason.DEADLINE:
            status = JobStatus.FAILED
            error = (
                f"time limit reached after {result.iterations_done} iterations; best-so-far saved"
            )
        height, width = int(result.image.shape[0]), int(result.image.shape[1])
        return self._finish(
            status,
            error=error,
            result_key=result_key,
            history_key=history,
            # a tiled job stopped before its first whole iteration has no loss yet
            best_loss=float(result.best_loss) if result.best_iteration else None,
            best_iteration=int(result.best_iteration) or None,
            weights=str(result.weights),
            width=width,
            height=height,
            iterations_done=int(result.iterations_done),
            iterations_computed=recorder.computed,
            snapshot_iterations=list(recorder.snapshots),
        )

    # ---- endings -------------------------------------------------------------------------

    def _finish(self, status: JobStatus, *, error: str | None = None, **fields: Any) -> Outcome:
        with self.fence.row() as job:
            if job is None:
                # The sweeper presumed us dead and re-queued the job: the new runner owns it.
                return self._lost()
            transition(job, status, error=error, **fields)
            self.webhooks.note(record_change(_session_of(job), job))  # completed
        self.webhooks.send()
        self._expire_stream()
        # Once the job is ours for good, the files of the attempts before ours go (a later
        # attempt cannot exist: the row is terminal), and its checkpoints.
        self._delete_attempts(range(1, self.attempt))
        self.checkpoints.delete_all()
        return Outcome(
            Action.RAN, status.value, iterations=int(fields.get("iterations_done", 0)), error=error
        )

    def _preempted(self) -> Outcome:
        """The worker is shutting down: the engine stopped after a final checkpoint (see
        :meth:`_Checkpointer.due`); the row goes back to ``queued`` with ``preemptions + 1``
        (fenced), keeping its progress, stream, snapshots and checkpoints for the next
        runner. The caller releases the lock; the task re-sends the message."""
        recorder = self.recorder
        assert recorder is not None
        best_loss, best_iteration = recorder.best
        with self.fence.row() as job:
            if job is None:
                return self._lost()
            transition(
                job, JobStatus.QUEUED,
                preemptions=(job.preemptions or 0) + 1, worker=None,
                iterations_done=recorder.iterations, iterations_computed=recorder.computed,
                best_loss=best_loss, best_iteration=best_iteration,
                snapshot_iterations=list(recorder.snapshots),
            )  # fmt: skip
        log.info(
            "job %s: preempted at iteration %d (worker shutting down); back in the queue",
            self.job_id, recorder.iterations,
        )  # fmt: skip
        return Outcome(Action.PREEMPTED, JobStatus.QUEUED.value, iterations=recorder.iterations)

    def _expire_stream(self) -> None:
        try:
            self.sink.expire(self.settings.progress_ttl_seconds)
        except Fenced:  # another runner owns the job now: its stream is not ours to expire
            self.fence.refused()

    def _delete_attempts(self, attempts: Iterable[int]) -> None:
        delete_attempts(self.storage, self.job_id, attempts)

    def _fail(self, reason: str, **fields: Any) -> Outcome:
        if self.fence.lost:
            return self._lost()
        recorder = self.recorder
        extra: dict[str, Any] = {}
        if recorder is not None:
            best_loss, best_iteration = recorder.best
            extra = {
                "iterations_done": recorder.iterations,
                "iterations_computed": recorder.computed,
                "snapshot_iterations": list(recorder.snapshots),
                "best_loss": best_loss,
                "best_iteration": best_iteration,
            }
            try:
                extra["history_key"] = self._save_history()
            except Exception as exc:  # the reason we fail matters more than the history
                log.warning("job %s: could not save the history: %s", self.job_id, exc)
        extra.update(fields)
        return self._finish(JobStatus.FAILED, error=reason, **extra)

    def _finish_after_soft_limit(self) -> Outcome:
        """Backup path: Celery's soft limit fired inside the engine. Save what we have."""
        recorder = self.recorder
        n = recorder.iterations if recorder else 0
        fields: dict[str, Any] = {}
        saved = ""
        latest = recorder.latest_snapshot if recorder is not None else None
        if recorder is not None and latest is not None and not self.fence.lost:
            try:
                key = keys.result_key(self.job_id, attempt=self.attempt)
                self.storage.put(key, recorder.encode_png(latest), "image/png")
                height, width = latest.shape[:2]
                fields = {"result_key": key, "width": int(width), "height": int(height)}
                saved = f"; latest snapshot (iteration {recorder.latest_snapshot_iteration}) saved"
            except Exception as exc:
                log.warning("job %s: could not save the latest snapshot: %s", self.job_id, exc)
        return self._fail(f"time limit reached after {n} iterations{saved}", **fields)

    def _lost(self) -> Outcome:
        if self.fence.gone_now():  # not: lost to another runner
            return self._deleted()
        log.error(
            "job %s: lost its lock (presumed dead and re-queued); leaving it to the new runner",
            self.job_id,
        )
        self._tidy_after_lost()
        iterations = self.recorder.iterations if self.recorder is not None else 0
        return Outcome(Action.LOST, None, iterations=iterations)

    def _deleted(self) -> Outcome:
        """The job was deleted while this attempt ran: nothing more is written (the fence
        says ``lost``), and everything of the job goes now, under its lock."""
        log.info("job %s: deleted while running; stopped, purging what it left", self.job_id)
        try:
            held = self.fence.lock.owned()
        except redis.RedisError:
            held = False
        self._purge_deleted(locked=held)
        iterations = self.recorder.iterations if self.recorder is not None else 0
        return Outcome(Action.DELETED, None, iterations=iterations)

    def _purge_deleted(self, *, locked: bool) -> None:
        """Purge the deleted job (``shared.deletion.purge``): ``locked`` when we still hold
        its lock; otherwise the purge takes it (busy: whoever holds it purges). Never raises:
        what fails is left to the sweeper."""
        purge(
            get_sessionmaker(self.settings.database_url), self.storage, self.client,
            self.job_id, lock_ttl_seconds=self.settings.lock_ttl_seconds, locked=locked,
        )  # fmt: skip

    def _tidy_after_lost(self) -> None:
        """Our files once a later attempt has started (it cleared the row's references to
        them), the job is gone, or it ended without pointing at them (whoever ended it may
        have deleted our prefix while we still wrote); kept while the row may still list
        our snapshots. And the job's stream, when the job has ended or is gone meanwhile
        (nobody else may set its expiry then); left alone while the job may still run (the
        next runner resets it). Best effort; ours are written by now."""
        try:
            with session_scope(self.settings.database_url) as session:
                job = session.get(Job, self.job_id)
                gone = job is None
                ended = job is not None and job.terminal
                superseded = (
                    job is None
                    or job.attempts > self.attempt
                    or (job.terminal and self.attempt in keys.unreferenced_attempts(job))
                )
        except Exception as exc:
            log.warning("job %s: could not read the row after losing it: %s", self.job_id, exc)
            return
        if gone or ended:
            expire_ended_stream(self.client, self.job_id, self.settings.progress_ttl_seconds)
            self.checkpoints.delete_all()  # ours may have landed after the ending deleted them
        if superseded and self.attempt > 0:
            try:
                self.storage.delete_prefix(keys.attempt_prefix(self.job_id, self.attempt))
            except Exception as exc:
                log.warning(
                    "job %s: could not delete the lost attempt's files: %s", self.job_id, exc
                )

    def _save_history(self) -> str:
        """The loss history in this attempt's storage, same entries and ids as the stream."""
        recorder = self.recorder
        if recorder is not None and recorder.replay and recorder.entries:
            # Ended before reaching the dead runner's last streamed iteration: its entries
            # past ours go, so the stream shows what the history holds.
            try:
                self.sink.stream.trim_after(str(recorder.entries[-1]["id"]))
            except (Fenced, redis.RedisError) as exc:
                log.warning("job %s: could not trim the stream: %s", self.job_id, exc)
        doc = {
            "job_id": self.job_id,
            "weights": recorder.weights if recorder is not None else None,
            "params": recorder.params.to_dict() if recorder is not None else None,
            "entries": recorder.entries if recorder is not None else [],
        }
        key = keys.history_key(self.job_id, attempt=self.attempt)
        self.storage.put(key, json.dumps(doc).encode(), "application/json")
        return key


@dataclass
class _Recorder:
    """The engine's per-iteration callback: hand the entry to the stream writer and the
    snapshot to the snapshot writer (this attempt's keys), keep the best. Nothing here waits
    for Redis, storage or the database: the row follows by time (:class:`RowFlusher`), and
    :meth:`drain` waits for the writers where a checkpoint or the ending needs them done."""

    job_id: str
    fence: AttemptFence
    sink: ProgressSink
    stop: StopSignal
    storage: Storage
    encode_png: Callable[[np.ndarray], bytes]
    params: TransferParams
    weights: str
    webhooks: AttemptWebhooks
    entries: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[int] = field(default_factory=list)
    # (loss, iteration) as ONE attribute: the row flusher's thread reads it while the loop
    # writes it, and two attributes could be read between the two writes
    best: tuple[float | None, int | None] = (None, None)
    latest_snapshot: np.ndarray | None = None
    latest_snapshot_iteration: int | None = None
    resumed_from: int = 0  # the checkpoint's iteration (0: started at 1)
    # iteration -> the stream's entry a dead runner wrote after the checkpoint: recorded as
    # is (id and values) when computed again, not streamed twice
    replay: dict[int, dict[str, Any]] = field(default_factory=dict)
    computed_before: int = 0  # iterations earlier attempts ran
    tiles: AttemptTiles | None = None  # progress within an iteration (tiled jobs)
    stream: StreamWriter | None = None  # while the engine runs (writing())
    snapshotter: SnapshotWriter | None = None
    row: RowFlusher | None = None
    flag_seen: bool = False  # the cancel flag was seen set (and the row looked for)

    @property
    def iterations(self) -> int:
        return self.entries[-1]["iteration"] if self.entries else 0

    @property
    def computed(self) -> int:
        """Iterations run across all attempts, this one's so far included."""
        return self.computed_before + max(0, self.iterations - self.resumed_from)

    @property
    def stream_backing_off(self) -> bool:
        return self.stream is not None and self.stream.backing_off

    def on_iteration(self, report: Any) -> None:
        if self.fence.lost:
            return
        k = int(report.iteration)
        entry: dict[str, Any] | None = self.replay.pop(k, None) if self.replay else None
        if entry is None:
            # FIELDS, in order; the writer sets the id once the entry is streamed
            entry = {
                "id": None, "iteration": k, "loss": float(report.loss),
                "content": float(report.content), "style": float(report.style),
                "tv": float(report.tv), "elapsed": float(report.elapsed),
            }  # fmt: skip
            assert self.stream is not None, "on_iteration outside writing()"
            self.stream.put(entry)
        self.entries.append(entry)
        if report.is_best:
            self.best = (float(report.loss), k)
        if report.has_snapshot:
            assert self.snapshotter is not None, "on_iteration outside writing()"
            self.snapshotter.put(k, report)

    def on_tile(self, report: Any) -> None:
        """A tiled job's progress within an iteration: to the tile stream, reading the cancel
        flag on the way (a cancel takes effect within one tile). Best effort while Redis is
        away; a refused write means the job is another runner's."""
        if self.fence.lost or self.tiles is None:
            return
        try:
            cancel = self.tiles.append_checking_cancel(
                {"iteration": report.iteration, "phase": report.phase, "done": report.done,
                 "total": report.total, "elapsed": report.elapsed}
            )  # fmt: skip
        except Fenced:
            self.fence.refused()
            return
        except redis.RedisError as exc:
            log.debug("job %s: tile progress not written: %s", self.job_id, exc)
            return
        self.stop.note_flag(cancel)

    def _store_snapshot(self, iteration: int, report: Any) -> None:
        """The snapshot writer's thread: make the image, encode it, store it, list it."""
        if self.fence.lost:  # another runner's, or deleted: store nothing more of it
            return
        image = report.snapshot
        self.storage.put(
            keys.snapshot_key(self.job_id, iteration, attempt=self.fence.attempt),
            self.encode_png(image),
            "image/png",
        )
        self.snapshots.append(iteration)
        self.latest_snapshot, self.latest_snapshot_iteration = image, iteration
        if self.row is not None:
            self.row.poke()  # the page lists it within a moment

    @contextmanager
    def writing(self, bound: int) -> Iterator[None]:
        """The background writers while the engine runs: drained and stopped on the way
        out, whatever ends the loop (a failed snapshot store is raised then if nothing else
        was), and the row written once more where the loop stopped."""
        with ExitStack() as closing:  # each closed, whatever the one before it raised
            self.row = RowFlusher(self.job_id, self._flush_by_time, DB_FLUSH_SECONDS).start()
            closing.callback(self.row.close)
            self.snapshotter = SnapshotWriter(self.job_id, self._store_snapshot).start()
            closing.callback(self.snapshotter.close)
            self.stream = StreamWriter(
                self.sink, on_cancel=self._on_cancel, on_fenced=self.fence.refused, bound=bound
            ).start()
            closing.callback(self.stream.close)
            yield
            self.snapshotter.drain()

    def drain(self) -> None:
        """Every iteration so far streamed (or given a stand-in id: Redis away) and every
        snapshot stored; raises a failed snapshot store's error."""
        if self.stream is not None:
            self.stream.drain()
        if self.snapshotter is not None:
            self.snapshotter.drain()

    def _on_cancel(self, flag: bool) -> None:
        """The stream writer's thread read the cancel flag. A delete sets it too: then the
        job is gone (``fence.lost``), and nothing more of it is stored."""
        self.stop.note_flag(flag)
        if flag and not self.flag_seen:  # once: the flag stays set until the job ends
            self.flag_seen = True
            self.fence.gone_now()

    def _flush_by_time(self) -> None:
        """The row flusher's turn; the ``progress`` webhook event goes with it when due."""
        self.flush(progress=self.webhooks.progress_due())

    def flush(self, *, progress: bool = False) -> None:
        """Write progress fields to the row while it is ours; read its cancel_requested.
        With ``progress``, the job's ``progress`` webhook event goes with them."""
        with self.fence.row() as job:
            if job is None:
                return
            best = self.best  # first: its iteration is never past iterations_done
            job.iterations_done = self.iterations
            job.iterations_computed = self.computed
            job.best_loss, job.best_iteration = best
            job.snapshot_iterations = list(self.snapshots)
            self.stop.note_row_cancel(bool(job.cancel_requested))
            if progress:
                self.webhooks.note(record(_session_of(job), job, PROGRESS))
                self.webhooks.progress_recorded()
        self.webhooks.send()


class _Checkpointer:
    """The engine's checkpoint hooks: due every ``seconds`` (0: never), the state stored with
    the history and snapshots streamed so far. A failed write is logged, never fatal: a
    checkpoint only saves work if the worker dies."""

    def __init__(
        self, store: CheckpointStore, recorder: _Recorder, fp: str, seconds: float
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.fingerprint = fp
        self.seconds = seconds
        self.next_at = time.monotonic() + seconds

    def due(self, iteration: int) -> bool:
        # Preempted: one last checkpoint before the engine stops (it asks should_stop next),
        # so the next runner loses nothing; even with periodic checkpoints off.
        if preempt_requested():
            return True
        # While Redis is away the entries since the last batch wait in the stream writer: a
        # periodic checkpoint waits with them (it holds streamed entries only).
        return (
            self.seconds > 0
            and time.monotonic() >= self.next_at
            and not self.recorder.stream_backing_off
        )

    def save(self, state: EngineState) -> None:
        recorder = self.recorder
        # Only a state whose every iteration was streamed (not refused) and recorded, and
        # whose snapshots are stored: the writers catch up first.
        recorder.drain()
        if recorder.fence.lost or recorder.iterations != state.iteration or not self.fingerprint:
            return
        ckpt = Checkpoint(
            job_id=recorder.job_id,
            attempt=recorder.fence.attempt,
            fingerprint=self.fingerprint,
            state=state,
            history=list(recorder.entries),
            snapshots=list(recorder.snapshots),
            iterations_computed=recorder.computed,
        )
        try:
            self.store.save(ckpt)
        except Exception as exc:
            log.warning(
                "job %s: checkpoint at iteration %d not written: %s",
                recorder.job_id, state.iteration, exc,
            )  # fmt: skip
        else:
            self._count(state.iteration)
        self.next_at = time.monotonic() + self.seconds

    def _count(self, iteration: int) -> None:
        """The row learns of the checkpoint (counted, and where a re-queued job resumes);
        best effort: the checkpoint itself is what a resume reads."""
        try:
            with self.recorder.fence.row() as job:
                if job is not None:
                    job.checkpoints = (job.checkpoints or 0) + 1
                    job.checkpoint_iteration = iteration
        except Exception as exc:
            log.warning("job %s: checkpoint not counted: %s", self.recorder.job_id, exc)
