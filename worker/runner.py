"""One attempt at one job: lock, mark running, run the engine, stream, store, finish.

Celery-free on purpose (``worker.tasks`` is the thin Celery wrapper), so tests and the bench
can drive a job in-process with explicit settings. The engine (TensorFlow) is imported on
first use, never at import time.

State machine of an attempt::

    lock held by a live runner ............ return "busy" (the message is acked; that
                                             runner finishes the job)
    row missing / terminal ................ return (duplicate delivery)
    cancel requested (row or Redis flag) .. -> canceled
    attempts >= MAX_ATTEMPTS .............. -> failed "worker lost N times"
    otherwise ............................. -> running (attempts + 1, progress reset)
        engine finished ................... -> succeeded
        stopped by cancel ................. -> canceled (best-so-far saved as the result)
        stopped by the soft deadline ...... -> failed "time limit reached ..." (best saved)
        SoftTimeLimitExceeded ............. -> failed, latest snapshot saved as the result
        any other exception ............... -> failed with a one-line reason
        lock lost (we were presumed dead) . leave the row alone: the new runner owns it
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from stylequeue.shared import keys
from stylequeue.shared.db import session_scope
from stylequeue.shared.locks import JobLock
from stylequeue.shared.models import Job
from stylequeue.shared.params import TransferParams
from stylequeue.shared.progress import FIELDS, ProgressStream, redis_client
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import JobStatus, transition
from stylequeue.shared.storage import Storage, get_storage

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("stylequeue.worker")

MAX_ATTEMPTS = 3  # a job whose runner died this many times fails instead of looping
DB_FLUSH_SECONDS = 1.0  # progress fields in the row are written at most this often
MAX_ERROR_CHARS = 1000
REDIS_RETRY_SECONDS = 5.0  # Redis unreachable mid-job: retry the stream this often


@dataclass
class Outcome:
    """What an attempt did; ``status`` is the row's status afterwards (None: untouched)."""

    action: str  # ran | busy | missing | duplicate | canceled | gave_up | lost
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
) -> Outcome:
    """Run one attempt of ``job_id`` under its lock. Never raises for job errors."""
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        # A cheap answer to duplicate deliveries, without touching the lock; _start re-checks
        # under the lock.
        if job is None:
            log.warning("job %s: no such row (deleted?); dropping the message", job_id)
            return Outcome("missing")
        if job.terminal:
            log.info("job %s: already %s; duplicate delivery ignored", job_id, job.status)
            return Outcome("duplicate", job.status)
    own_client = client is None
    client = client or redis_client(settings.redis_url)
    lock = JobLock(client, job_id, settings.lock_ttl_seconds)
    try:
        if not lock.acquire():
            log.info("job %s: another runner holds its lock; not running it twice", job_id)
            return Outcome("busy")
        lock.start_renewing()
        try:
            return _Attempt(job_id, settings, worker_name, lock, client, deadline).run()
        finally:
            # Released only after the final state is committed: the sweeper reads "running
            # and no lock" as "runner died".
            lock.release()
    finally:
        if own_client:
            client.close()


class _Attempt:
    def __init__(
        self,
        job_id: str,
        settings: Settings,
        worker_name: str,
        lock: JobLock,
        client: redis.Redis,
        deadline: float | None,
    ) -> None:
        self.job_id = job_id
        self.settings = settings
        self.worker_name = worker_name
        self.lock = lock
        self.stream = ProgressStream(client, settings.progress_maxlen)
        self.storage: Storage = get_storage(settings)
        self.started = time.monotonic()
        self.deadline = deadline if deadline is not None else soft_deadline(settings, self.started)
        self.tracker: _Tracker | None = None
        self.attempt = 0  # this attempt's number in the row, once _start marked it running

    def _db(self):  # type: ignore[no-untyped-def]
        return session_scope(self.settings.database_url)

    # ---- the attempt ---------------------------------------------------------------------

    def run(self) -> Outcome:
        started = self._start()
        if isinstance(started, Outcome):
            if started.action in ("canceled", "gave_up"):
                self._expire_stream()  # a dead attempt's entries: expire like any job's
            return started
        params, input_keys, attempt = started
        log.info(
            "job %s start: attempt %d on %s, %d iterations at max %d px",
            self.job_id, attempt, self.worker_name, params.iterations, params.max_size,
        )  # fmt: skip
        try:
            self._reset_progress(attempt)
            outcome = self._run_engine(params, input_keys)
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

    def _start(self) -> Outcome | tuple[TransferParams, dict[str, Any], int]:
        """Decide whether to run; if so mark the row running (attempts + 1, progress cleared)."""
        with self._db() as session:
            job = session.get(Job, self.job_id, with_for_update=True)
            if job is None:
                log.warning("job %s: no such row (deleted?); dropping the message", self.job_id)
                return Outcome("missing")
            if job.terminal:
                log.info("job %s: already %s; duplicate delivery ignored", self.job_id, job.status)
                return Outcome("duplicate", job.status)
            if job.cancel_requested or self._cancel_flag():
                transition(job, JobStatus.CANCELED, cancel_requested=True)
                log.info("job %s: canceled before it started", self.job_id)
                return Outcome("canceled", job.status)
            if job.attempts >= MAX_ATTEMPTS:
                transition(
                    job, JobStatus.FAILED,
                    error=f"worker lost {job.attempts} times; giving up on this job",
                )  # fmt: skip
                return Outcome("gave_up", job.status, error=job.error)
            transition(
                job, JobStatus.RUNNING,
                attempts=job.attempts + 1, worker=self.worker_name, iterations_done=0,
                snapshot_iterations=[], best_loss=None, best_iteration=None, error=None,
                result_key=None, history_key=None,
            )  # fmt: skip
            params = TransferParams.from_dict(job.params)
            input_keys = dict(job.input_keys)
            attempt = self.attempt = job.attempts
        return params, input_keys, attempt

    def _reset_progress(self, attempt: int) -> None:
        """A re-delivered job restarts cleanly: forget the dead attempt's entries and images."""
        self.stream.reset(self.job_id)
        if attempt > 1:
            self.storage.delete_prefix(keys.job_prefix(self.job_id) + "snapshots/")

    def _run_engine(self, params: TransferParams, input_keys: dict[str, Any]) -> Outcome:
        from stylequeue.worker import (
            engine,  # TensorFlow: only in the worker process, only when needed
        )
        from stylequeue.worker.engine.hardware import resolve_precision

        # The worker's precision, not the job's: the warm extractor is built for it.
        params = replace(params, precision=resolve_precision(self.settings.precision))

        content = engine.decode_image(self.storage.get(input_keys["content"]))
        styles = [engine.decode_image(self.storage.get(k)) for k in input_keys["styles"]]
        weights = params.weights or self.settings.vgg19_weights
        self.tracker = tracker = _Tracker(self, engine.encode_png, params, weights)
        result = engine.transfer(
            content, styles, params, weights=weights,
            on_iteration=tracker.on_iteration, should_stop=tracker.should_stop,
            xla=self.settings.engine_xla, deterministic=self.settings.engine_deterministic,
        )  # fmt: skip
        if self.lock.lost.is_set():
            return self._lost(tracker.iterations)
        self.storage.put(keys.result_key(self.job_id), engine.encode_png(result.image), "image/png")
        history = self._save_history(result.weights, params)
        if result.stopped and tracker.cancel_seen:
            status, error = JobStatus.CANCELED, None
        elif result.stopped and tracker.deadline_hit:
            status = JobStatus.FAILED
            error = (
                f"time limit reached after {result.iterations_done} iterations; best-so-far saved"
            )
        else:
            status, error = JobStatus.SUCCEEDED, None
        height, width = int(result.image.shape[0]), int(result.image.shape[1])
        return self._finish(
            status,
            error=error,
            result_key=keys.result_key(self.job_id),
            history_key=history,
            best_loss=float(result.best_loss),
            best_iteration=int(result.best_iteration),
            weights=str(result.weights),
            width=width,
            height=height,
            iterations_done=int(result.iterations_done),
            snapshot_iterations=list(tracker.snapshots),
        )

    # ---- endings -------------------------------------------------------------------------

    def _finish(self, status: JobStatus, *, error: str | None = None, **fields: Any) -> Outcome:
        with self._db() as session:
            job = session.get(Job, self.job_id, with_for_update=True)
            if not self._still_ours(job):
                # The sweeper presumed us dead and re-queued the job: the new runner owns it.
                return self._lost(fields.get("iterations_done", 0))
            transition(job, status, error=error, **fields)
        self._expire_stream()
        return Outcome(
            "ran", status.value, iterations=int(fields.get("iterations_done", 0)), error=error
        )

    def _expire_stream(self) -> None:
        try:
            self.stream.expire(self.job_id, self.settings.progress_ttl_seconds)
        except redis.RedisError as exc:
            log.warning("job %s: could not set the stream's expiry: %s", self.job_id, exc)

    def _still_ours(self, job: Job | None) -> bool:
        """The row is still this attempt's: running, with our attempt number (a runner that
        restarted the job after the sweeper presumed us dead has bumped it; our renewer may
        not have noticed the lost lock yet), and our lock not known to be lost."""
        return (
            job is not None
            and job.status == JobStatus.RUNNING.value
            and job.attempts == self.attempt
            and not self.lock.lost.is_set()
        )

    def _fail(self, reason: str, **fields: Any) -> Outcome:
        tracker = self.tracker
        extra: dict[str, Any] = {}
        if tracker is not None:
            extra = {
                "iterations_done": tracker.iterations,
                "snapshot_iterations": list(tracker.snapshots),
                "best_loss": tracker.best_loss,
                "best_iteration": tracker.best_iteration,
            }
            try:
                extra["history_key"] = self._save_history(tracker.weights, tracker.params)
            except Exception as exc:  # the reason we fail matters more than the history
                log.warning("job %s: could not save the history: %s", self.job_id, exc)
        extra.update(fields)
        return self._finish(JobStatus.FAILED, error=reason, **extra)

    def _finish_after_soft_limit(self) -> Outcome:
        """Backup path: Celery's soft limit fired inside the engine. Save what we have."""
        tracker = self.tracker
        n = tracker.iterations if tracker else 0
        fields: dict[str, Any] = {}
        saved = ""
        if tracker is not None and tracker.latest_snapshot is not None:
            try:
                self.storage.put(
                    keys.result_key(self.job_id),
                    tracker.encode_png(tracker.latest_snapshot),
                    "image/png",
                )
                height, width = tracker.latest_snapshot.shape[:2]
                fields = {"result_key": keys.result_key(self.job_id), "width": int(width),
                          "height": int(height)}  # fmt: skip
                saved = f"; latest snapshot (iteration {tracker.latest_snapshot_iteration}) saved"
            except Exception as exc:
                log.warning("job %s: could not save the latest snapshot: %s", self.job_id, exc)
        return self._fail(f"time limit reached after {n} iterations{saved}", **fields)

    def _lost(self, iterations: int) -> Outcome:
        log.error(
            "job %s: lost its lock (presumed dead and re-queued); leaving it to the new runner",
            self.job_id,
        )
        return Outcome("lost", None, iterations=iterations)

    def _save_history(self, weights: str | None, params: TransferParams | None) -> str:
        """The loss history in storage, same entries and ids as the stream."""
        tracker = self.tracker
        doc = {
            "job_id": self.job_id,
            "weights": weights,
            "params": params.to_dict() if params is not None else None,
            "entries": tracker.entries if tracker is not None else [],
        }
        key = keys.history_key(self.job_id)
        self.storage.put(key, json.dumps(doc).encode(), "application/json")
        return key

    # ---- flags ---------------------------------------------------------------------------

    def _cancel_flag(self) -> bool:
        try:
            return self.stream.cancel_requested(self.job_id)
        except redis.RedisError as exc:
            log.warning("job %s: cannot read the cancel flag: %s", self.job_id, exc)
            return False


@dataclass
class _Tracker:
    """The engine's callbacks: stream each iteration, store snapshots, poll for stop."""

    attempt: _Attempt
    encode_png: Callable[[np.ndarray], bytes]
    params: TransferParams | None = None
    weights: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[int] = field(default_factory=list)
    best_loss: float | None = None
    best_iteration: int | None = None
    latest_snapshot: np.ndarray | None = None
    latest_snapshot_iteration: int | None = None
    cancel_seen: bool = False
    deadline_hit: bool = False
    last_flush: float = 0.0
    _last_id: tuple[int, int] = (0, 0)
    flag_read: bool = False  # the cancel flag came back with the last XADD
    _redis_down: bool = False
    _retry_redis_at: float = 0.0  # while Redis is away, try it again only every few seconds

    @property
    def iterations(self) -> int:
        return self.entries[-1]["iteration"] if self.entries else 0

    def on_iteration(self, report: Any) -> None:
        a = self.attempt
        if a.lock.lost.is_set():
            return
        entry: dict[str, Any] = {"iteration": int(report.iteration)}
        for name in FIELDS[1:]:
            entry[name] = float(getattr(report, name))
        entry = {"id": self._append(entry), **entry}
        self.entries.append(entry)
        if report.is_best:
            self.best_loss, self.best_iteration = entry["loss"], entry["iteration"]
        flush = time.monotonic() - self.last_flush >= DB_FLUSH_SECONDS
        if report.snapshot is not None:
            a.storage.put(
                keys.snapshot_key(a.job_id, entry["iteration"]),
                self.encode_png(report.snapshot),
                "image/png",
            )
            self.snapshots.append(entry["iteration"])
            self.latest_snapshot = report.snapshot
            self.latest_snapshot_iteration = entry["iteration"]
            flush = True
        if flush:
            self._flush()

    def _append(self, entry: dict[str, Any]) -> str:
        """XADD (and read the cancel flag in the same round trip); if Redis is briefly
        away, keep going with a made-up, still-increasing id.

        Progress is best effort: a Redis blip must not kill an hour of GPU work. The history
        in storage stays complete either way.
        """
        a = self.attempt
        try:
            if self._redis_down and time.monotonic() < self._retry_redis_at:
                raise redis.ConnectionError("still backing off")
            sid, cancelled = a.stream.append_checking_cancel(a.job_id, entry)
            self.flag_read = True
            self.cancel_seen = self.cancel_seen or cancelled
            if self._redis_down:
                log.info("job %s: progress stream back", a.job_id)
                self._redis_down = False
            ms, seq = (int(x) for x in sid.split("-"))
        except redis.RedisError as exc:
            if not self._redis_down:
                log.warning("job %s: progress stream unavailable: %s", a.job_id, exc)
                self._redis_down = True
                self._retry_redis_at = time.monotonic() + REDIS_RETRY_SECONDS
            elif time.monotonic() >= self._retry_redis_at:
                self._retry_redis_at = time.monotonic() + REDIS_RETRY_SECONDS
            ms, seq = int(time.time() * 1000), 0
            if ms <= self._last_id[0]:
                ms, seq = self._last_id[0], self._last_id[1] + 1
            sid = f"{ms}-{seq}"
        self._last_id = (ms, seq)
        return sid

    def _flush(self) -> None:
        """Write progress fields to the row; read its cancel_requested on the way."""
        a = self.attempt
        self.last_flush = time.monotonic()
        with a._db() as session:
            job = session.get(Job, a.job_id)
            if not a._still_ours(job):
                return
            job.iterations_done = self.iterations
            job.best_loss = self.best_loss
            job.best_iteration = self.best_iteration
            job.snapshot_iterations = list(self.snapshots)
            if job.cancel_requested:
                self.cancel_seen = True

    def should_stop(self) -> bool:
        a = self.attempt
        if self.cancel_seen or a.lock.lost.is_set():
            return True
        if time.monotonic() >= a.deadline:
            self.deadline_hit = True
            return True
        if self.flag_read:  # read with this iteration's XADD, a moment ago
            self.flag_read = False
        elif not self._redis_down:
            with contextlib.suppress(redis.RedisError):  # the row's flag is read at flushes too
                self.cancel_seen = a.stream.cancel_requested(a.job_id)
        return self.cancel_seen
