"""The row's progress fields, written by time from a background thread, never by the loop.

``flush`` (the runner's: a fenced row update that also reads ``cancel_requested``) runs every
``every`` seconds, and soon after :meth:`RowFlusher.poke` (a snapshot was stored: the page
should list it), though never more often than every ``MIN_SECONDS``. A slow or unreachable
database delays the row, never the loop; a failed flush is logged and tried again at the
next turn. :meth:`close` stops the thread and flushes once more from the caller's thread,
so the row is exact where the loop stopped, whatever ended it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("stylequeue.worker")

MIN_SECONDS = 0.2  # two flushes at least this far apart, pokes or not


class RowFlusher:
    def __init__(self, job_id: str, flush: Callable[[], None], every: float) -> None:
        self.job_id = job_id
        self.flush = flush
        self.every = max(every, MIN_SECONDS)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last = time.monotonic()
        self._failing = False
        self._thread: threading.Thread | None = None
        self.flushes = 0

    def start(self) -> RowFlusher:
        self._thread = threading.Thread(
            target=self._run, name=f"row-{self.job_id[:8]}", daemon=True
        )
        self._thread.start()
        return self

    def poke(self) -> None:
        """Flush soon (within ``MIN_SECONDS``)."""
        self._wake.set()

    def close(self, *, final: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        if final:
            self._flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            poked = self._wake.wait(max(0.0, self._last + self.every - time.monotonic()))
            if self._stop.is_set():
                return
            if poked:
                self._wake.clear()
                early = self._last + MIN_SECONDS - time.monotonic()
                if early > 0 and self._stop.wait(early):
                    return
            self._flush()

    def _flush(self) -> None:
        self._last = time.monotonic()
        try:
            self.flush()
        except Exception as exc:  # the database away for a moment: the next turn tries again
            if not self._failing:
                log.warning("job %s: progress not written to the row: %s", self.job_id, exc)
            self._failing = True
            return
        if self._failing:
            log.info("job %s: progress written to the row again", self.job_id)
        self._failing = False
        self.flushes += 1
