"""When the engine should stop: a cancel (row or Redis flag), the worker shutting down
(preemption: :func:`request_preempt`, set by the worker's warm-shutdown hook in
``worker.app``), the soft deadline, or the attempt being lost (lock gone, or a fenced write
refused).

Nothing here does I/O: :meth:`should_stop` runs on the loop thread after every iteration
and as each step is dispatched (the engine reads losses in groups, and a yes reads the group
at once), and only reads what the background writers noted. The Redis cancel flag comes
from the stream writer (``worker.stream_writer``: read with each batch of entries, or on
its own, every ~100 ms: :meth:`note_flag`); the row's ``cancel_requested`` from each
progress flush of the row (``worker.row_flusher``, about once a second:
:meth:`note_row_cancel`). So a cancel stops the loop within about 100 ms or at the end of
the iteration under way, whichever is later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum

# Process-wide: this worker is shutting down, the running job should checkpoint and go back
# to the queue. Set from a signal handler (only an Event.set there).
_PREEMPT = threading.Event()


def request_preempt() -> None:
    _PREEMPT.set()


def clear_preempt() -> None:
    _PREEMPT.clear()


def preempt_requested() -> bool:
    return _PREEMPT.is_set()


class StopReason(StrEnum):
    CANCEL = "cancel"
    DEADLINE = "deadline"
    LOST = "lost"
    PREEMPT = "preempt"  # the worker is shutting down: checkpoint, back to the queue


class StopSignal:
    def __init__(self, deadline: float, *, is_lost: Callable[[], bool]) -> None:
        self.deadline = deadline
        self._is_lost = is_lost
        self._cancel = False  # set from the writers' threads, read by the loop's
        self.reason: StopReason | None = None  # why should_stop last said yes

    @property
    def cancel_seen(self) -> bool:
        return self._cancel

    def note_flag(self, flag: bool | None) -> None:
        """The Redis flag as the stream writer read it (None: Redis was not reached)."""
        if flag:
            self._cancel = True

    def note_row_cancel(self, requested: bool) -> None:
        if requested:
            self._cancel = True

    def should_stop(self) -> bool:
        if self._is_lost():
            self.reason = StopReason.LOST
        elif self._cancel:
            self.reason = StopReason.CANCEL
        elif preempt_requested():
            self.reason = StopReason.PREEMPT
        elif time.monotonic() >= self.deadline:
            self.reason = StopReason.DEADLINE
        else:
            self.reason = None
        return self.reason is not None
