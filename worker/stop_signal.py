"""When the engine should stop: a cancel (row or Redis flag), the worker shutting down
(preemption: :func:`request_preempt`, set by the worker's warm-shutdown hook in
``worker.app``), the soft deadline, or the attempt being lost (lock gone, or a fenced write
refused).

The Redis cancel flag usually comes back with each iteration's XADD (:meth:`note_flag`); when
it did not, :meth:`should_stop` reads it itself. The row's ``cancel_requested`` arrives with
each progress flush (:meth:`note_row_cancel`).
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
    def __init__(
        self,
        deadline: float,
        *,
        is_lost: Callable[[], bool],
        read_flag: Callable[[], bool | None],
    ) -> None:
        self.deadline = deadline
        self._is_lost = is_lost
        self._read_flag = read_flag  # None: the flag cannot be read now
        self._cancel = False
        self._flag_fresh = False  # the flag came back with the last XADD
        self.reason: StopReason | None = None  # why should_stop last said yes

    @property
    def cancel_seen(self) -> bool:
        return self._cancel

    def note_flag(self, flag: bool | None) -> None:
        """The Redis flag as read with an XADD (None: Redis was not reached)."""
        if flag is None:
            return
        self._flag_fresh = True
        self._cancel = self._cancel or flag

    def note_row_cancel(self, requested: bool) -> None:
        self._cancel = self._cancel or requested

    def should_stop(self) -> bool:
        if self._is_lost():
            self.reason = StopReason.LOST
        elif self._cancel or self._poll_flag():
            self.reason = StopReason.CANCEL
        elif preempt_requested():
            self.reason = StopReason.PREEMPT
        elif time.monotonic() >= self.deadline:
            self.reason = StopReason.DEADLINE
        else:
            self.reason = None
        return self.reason is not None

    def _poll_flag(self) -> bool:
        if self._flag_fresh:  # read with this iteration's XADD, a moment ago
            self._flag_fresh = False
        elif self._read_flag():
            self._cancel = True
        return self._cancel
