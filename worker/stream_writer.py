"""The attempt's stream entries, written to Redis from a background thread in batches.

The loop thread only hands an entry over (:meth:`StreamWriter.put`: a lock and an append, no
I/O); the writer thread sends what has gathered in one fenced script call
(``AttemptStream.append_many_checking_cancel``: the lock checked, the entries added in order,
the cancel flag read) at most every ``interval`` seconds, at once when the last batch is
older than that (so a job's first entry, and each entry of a slow job, goes out at once),
and whenever the loop thread asks for a :meth:`drain`. When no entries are due it reads the
cancel flag on its own on the same schedule, so a cancel is seen within about ``interval``
however long an iteration takes. The flag goes to ``on_cancel``; a refused write (the lock is
another runner's) to ``on_fenced``, and nothing of the attempt is written after it.

Each entry is the dict the runner keeps in its history; the writer sets its ``"id"`` once
the entry is in the stream. :meth:`drain` returns when every entry handed over before it has
its id: the runner drains before a checkpoint (a checkpoint holds only streamed entries) and
before the attempt ends, whatever the ending.

Redis away (``ProgressSink`` backs off): entries wait in memory, in order, and go out when
Redis answers again, so a short outage loses nothing. The wait is bounded: beyond ``bound``
entries (the stream's own ``MAXLEN``: older entries would be trimmed from it anyway) the
oldest get stand-in ids and are not streamed, and so does everything still waiting when a
drain finds Redis away (one forced try first). Either is logged with a count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from stylequeue.shared.progress import Fenced
from stylequeue.worker.progress_sink import ProgressSink

log = logging.getLogger("stylequeue.worker")

INTERVAL_SECONDS = 0.1  # a batch at most this often
POLL_SECONDS = 0.1  # the cancel flag read on its own when no batch went for this long
DRAIN_TIMEOUT = 30.0  # a drain waits this long at most for the thread (a stuck Redis call)


class StreamWriter:
    def __init__(
        self,
        sink: ProgressSink,
        *,
        on_cancel: Callable[[bool], None],
        on_fenced: Callable[[], None],
        bound: int,
        interval: float | None = None,
    ) -> None:
        self.sink = sink
        self.job_id = sink.job_id
        self.on_cancel = on_cancel
        self.on_fenced = on_fenced
        self.bound = max(1, bound)
        self.interval = INTERVAL_SECONDS if interval is None else interval
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[dict[str, Any]] = deque()
        self._handed = 0  # entries handed over so far
        self._settled = 0  # of those, how many have an id (or were dropped once fenced)
        self._drain_to = 0  # a drain waits for _settled to reach this
        self._closing = False
        self._fenced = False
        self._last_write = -float("inf")
        self._last_poll = -float("inf")
        self.poll_interval = max(self.interval, POLL_SECONDS)
        self._thread: threading.Thread | None = None
        # what happened, for the end-of-attempt log line (and tests)
        self.batches = 0
        self.streamed = 0
        self.stood_in = 0  # entries given stand-in ids: in the history, not in the stream
        self.cpu_seconds = 0.0

    # ---- the loop thread's side ------------------------------------------------------------

    def start(self) -> StreamWriter:
        self._thread = threading.Thread(
            target=self._run, name=f"stream-{self.job_id[:8]}", daemon=True
        )
        self._thread.start()
        return self

    def put(self, entry: dict[str, Any]) -> None:
        """Hand ``entry`` over; its ``"id"`` is set once it is streamed. Never blocks on I/O."""
        with self._cond:
            self._pending.append(entry)
            self._handed += 1
            # the thread wakes on its own when a batch is due; an entry due at once (the
            # first, or the first after a pause) wakes it now
            if time.monotonic() - self._last_write >= self.interval:
                self._cond.notify()

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> bool:
        """Wait until every entry handed over so far has its id; False if the thread did not
        get there within ``timeout`` (then the rest is settled here, with stand-in ids)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._drain_to = max(self._drain_to, self._handed)
            self._cond.notify()
            while self._settled < self._drain_to:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    self._stand_in(len(self._pending), "the writer did not finish in time")
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        """Drain, then stop the thread."""
        self.drain()
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(DRAIN_TIMEOUT)
        log.info(
            "job %s: stream writer: %d entries in %d batches, %d not streamed, %.0f ms CPU",
            self.job_id, self.streamed, self.batches, self.stood_in, 1000 * self.cpu_seconds,
        )  # fmt: skip

    @property
    def backing_off(self) -> bool:
        """Redis is away: entries wait (a periodic checkpoint had better wait too)."""
        return self.sink.backing_off()

    # ---- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        started = time.thread_time()
        try:
            while self._step():
                pass
        except Exception:  # never silent: a drain then settles what is left itself
            log.exception("job %s: the stream writer stopped", self.job_id)
        finally:
            self.cpu_seconds = time.thread_time() - started

    def _step(self) -> bool:
        """One wake-up: write what is due, or read the flag when nothing was written for a
        while; False once closing with nothing left."""
        with self._cond:
            while True:
                forced = self._settled < self._drain_to
                now = time.monotonic()
                write_at = self._last_write + self.interval if self._pending else float("inf")
                poll_at = max(self._last_write, self._last_poll) + self.poll_interval
                if forced or now >= write_at:
                    batch = list(self._pending)
                    self._last_write = now
                    break
                if self._closing:
                    return False
                if now >= poll_at:
                    batch = []
                    self._last_poll = now
                    break
                # idle: wake when a batch could next go too (put() notifies only when an
                # entry is due at once, not for each entry)
                idle_until = self._last_write + self.interval
                wake = min(write_at, poll_at, idle_until if idle_until > now else poll_at)
                self._cond.wait(wake - now)
        self._write(batch, forced)
        return True

    def _write(self, batch: list[dict[str, Any]], forced: bool) -> None:
        if self._fenced:
            self._settle(batch, [])
            return
        if not batch:
            flag = self.sink.read_cancel_flag()
            if flag is not None:
                self.on_cancel(flag)
            return
        try:
            appended = self.sink.append_many(batch, force=forced)
        except Fenced:
            self._fenced = True
            self.on_fenced()
            self._settle(batch, [])
            return
        if appended.cancel is not None:
            self.on_cancel(appended.cancel)
        self._settle(batch, appended.ids)
        with self._cond:
            if forced and self._pending:
                self._stand_in(len(self._pending), "Redis is unreachable")
            elif len(self._pending) > self.bound:
                self._stand_in(len(self._pending) - self.bound, "Redis has been away too long")

    def _settle(self, batch: list[dict[str, Any]], ids: list[str]) -> None:
        """The first ``len(ids)`` entries of ``batch`` were streamed with these ids; when
        fenced (``ids`` empty, nothing of ours is written any more) the whole batch is
        dropped. Only entries still waiting are touched: a drain that gave up on the thread
        may have settled them already."""
        with self._cond:
            done = 0
            for i, entry in enumerate(batch[: len(batch) if self._fenced else len(ids)]):
                if not self._pending or self._pending[0] is not entry:
                    break
                self._pending.popleft()
                if i < len(ids):
                    entry["id"] = ids[i]
                done += 1
            self._settled += done
            if ids:
                self.batches += 1
                self.streamed += len(ids)
            self._cond.notify_all()

    def _stand_in(self, n: int, why: str) -> None:
        """Give the ``n`` oldest waiting entries stand-in ids (caller holds the lock)."""
        if n <= 0:
            return
        entries = [self._pending.popleft() for _ in range(n)]
        for entry, sid in zip(entries, self.sink.stand_in_ids(n), strict=True):
            entry["id"] = sid
        self._settled += n
        self.stood_in += n
        self._cond.notify_all()
        log.warning(
            "job %s: %s: %d progress entries (iterations %s-%s) not streamed; the saved "
            "history keeps them",
            self.job_id, why, n, entries[0].get("iteration"), entries[-1].get("iteration"),
        )  # fmt: skip
