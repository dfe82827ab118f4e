"""Snapshots made, encoded (PNG) and stored off the loop thread, a couple at most in memory.

The loop thread hands over what a snapshot is made from (:meth:`SnapshotWriter.put`); a
background thread calls ``save`` for each, in order. At most ``capacity`` snapshots are
handed over and not yet stored: a store slower than the snapshots come makes ``put`` wait for
room (logged once per attempt, with the time waited at the end), so a slow store costs
time, never memory, and never a snapshot. A failed ``save`` is raised again in the loop
thread (at the next ``put`` or :meth:`drain`), so it fails the job as it did when snapshots
were stored inline. :meth:`drain` returns once every snapshot handed over is stored: the
runner drains before a checkpoint (which lists the stored snapshots) and before the attempt
ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("stylequeue.worker")

CAPACITY = 2  # snapshots handed over and not yet stored, at most


class SnapshotWriter:
    def __init__(
        self, job_id: str, save: Callable[[int, Any], None], *, capacity: int = CAPACITY
    ) -> None:
        self.job_id = job_id
        self.save = save
        self.capacity = max(1, capacity)
        self._cond = threading.Condition()
        self._pending: deque[tuple[int, Any]] = deque()
        self._busy = False  # the thread holds one taken off _pending
        self._error: BaseException | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        self.stored = 0
        self.waited = 0.0  # seconds the loop thread waited for room

    def start(self) -> SnapshotWriter:
        self._thread = threading.Thread(
            target=self._run, name=f"snapshots-{self.job_id[:8]}", daemon=True
        )
        self._thread.start()
        return self

    def _in_memory(self) -> int:
        return len(self._pending) + (1 if self._busy else 0)

    def put(self, iteration: int, item: Any) -> None:
        """Hand over iteration's snapshot source; waits while ``capacity`` are in memory."""
        with self._cond:
            self._raise_error()
            if self._in_memory() >= self.capacity:
                if not self.waited:
                    log.warning(
                        "job %s: the snapshot store is behind; the loop waits for it",
                        self.job_id,
                    )
                started = time.monotonic()
                while self._in_memory() >= self.capacity and self._error is None:
                    self._cond.wait()
                self.waited += max(time.monotonic() - started, 1e-9)
                self._raise_error()
            self._pending.append((iteration, item))
            self._cond.notify_all()

    def drain(self) -> None:
        """Wait until every snapshot handed over is stored; raises a failed save's error."""
        with self._cond:
            while self._in_memory() and self._error is None:
                self._cond.wait()
            self._raise_error()

    def close(self) -> None:
        """Drain (without raising: the caller is ending the attempt anyway), stop the thread."""
        with self._cond:
            while self._in_memory() and self._error is None:
                self._cond.wait()
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(30)
        if self.waited:
            log.warning(
                "job %s: the loop waited %.2f s in all for the snapshot store",
                self.job_id, self.waited,
            )  # fmt: skip

    @property
    def error(self) -> BaseException | None:
        return self._error

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                iteration, item = self._pending.popleft()
                self._busy = True
            error: BaseException | None = None
            try:
                self.save(iteration, item)
            except BaseException as exc:  # handed to the loop thread, which fails the job
                error = exc
            del item  # the snapshot's memory goes before the thread waits again
            with self._cond:
                self._busy = False
                if error is None:
                    self.stored += 1
                else:
                    self._error = error
                    self._pending.clear()
                self._cond.notify_all()
