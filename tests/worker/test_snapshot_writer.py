"""The snapshot writer and the row flusher alone: in order, bounded in memory, errors handed
back to the loop thread; the row written by time, on a poke and once more at the end."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from stylequeue.worker.row_flusher import RowFlusher
from stylequeue.worker.snapshot_writer import SnapshotWriter
from tests.services import wait_for


class GatedStore:
    """A store that saves each snapshot only when the test lets it."""

    def __init__(self) -> None:
        self.saved: list[int] = []
        self.gates: dict[int, threading.Event] = {}
        self.started: list[int] = []

    def gate(self, iteration: int) -> threading.Event:
        return self.gates.setdefault(iteration, threading.Event())

    def save(self, iteration: int, item: Any) -> None:
        self.started.append(iteration)
        assert self.gate(iteration).wait(60), "never let through"
        self.saved.append(iteration)


def test_snapshots_are_stored_in_order_and_at_most_two_wait() -> None:
    store = GatedStore()
    writer = SnapshotWriter("job", store.save, capacity=2).start()
    writer.put(1, object())
    writer.put(2, object())  # 1 being stored, 2 waiting: two in memory
    wait_for(lambda: store.started == [1], what="the first store begun")
    third = threading.Thread(target=writer.put, args=(3, object()))
    third.start()
    time.sleep(0.3)  # room for a put that does not wait to show itself
    assert third.is_alive(), "a third snapshot was taken in while two were in memory"
    store.gate(1).set()
    third.join(30)
    assert not third.is_alive() and writer.waited > 0
    for i in (2, 3):
        store.gate(i).set()
    writer.drain()
    assert store.saved == [1, 2, 3]
    writer.close()


def test_a_failed_store_is_raised_in_the_loop_thread() -> None:
    def save(iteration: int, item: Any) -> None:
        if iteration == 2:
            raise OSError("disk full")

    writer = SnapshotWriter("job", save).start()
    writer.put(1, object())
    writer.put(2, object())
    with pytest.raises(OSError, match="disk full"):
        writer.drain()
    with pytest.raises(OSError, match="disk full"):
        writer.put(3, object())  # the job fails: nothing more is taken
    writer.close()  # and closing does not raise again


def test_the_row_is_written_by_time_on_a_poke_and_at_the_end() -> None:
    flushed: list[float] = []
    row = RowFlusher("job", lambda: flushed.append(time.monotonic()), every=3600.0).start()
    time.sleep(0.3)
    assert flushed == []  # not due for an hour
    row.poke()
    wait_for(lambda: len(flushed) == 1, what="a flush after the poke")
    row.close()
    assert len(flushed) == 2  # once more, from the closing thread


def test_a_failing_flush_is_logged_once_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def flush() -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise ConnectionError("database away")

    with caplog.at_level("INFO", logger="stylequeue.worker"):
        row = RowFlusher("job", flush, every=0.0).start()  # as often as allowed
        wait_for(lambda: len(calls) >= 5, what="flushes tried again")
        row.close(final=False)
    assert caplog.text.count("progress not written to the row: database away") == 1
    assert "progress written to the row again" in caplog.text
    assert row.flushes >= 2
