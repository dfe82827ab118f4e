"""StopSignal alone: why the engine stops (lost, cancel from the row or Redis, preemption,
deadline)."""

from __future__ import annotations

import time

from stylequeue.worker.stop_signal import StopReason, StopSignal, clear_preempt, request_preempt


class Flag:
    def __init__(self, value: bool | None = False) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> bool | None:
        self.reads += 1
        return self.value


def signal(flag: Flag, *, lost: bool = False, deadline: float | None = None) -> StopSignal:
    later = time.monotonic() + 3600 if deadline is None else deadline
    return StopSignal(later, is_lost=lambda: lost, read_flag=flag)


def test_runs_on_while_nothing_says_stop() -> None:
    stop = signal(Flag())
    assert not stop.should_stop() and stop.reason is None


def test_a_flag_read_with_the_xadd_is_not_read_again() -> None:
    flag = Flag()
    stop = signal(flag)
    stop.note_flag(False)
    assert not stop.should_stop() and flag.reads == 0
    assert not stop.should_stop() and flag.reads == 1  # no XADD came with this one: read it


def test_cancel_from_the_xadd_the_row_or_a_read() -> None:
    stop = signal(Flag())
    stop.note_flag(True)
    assert stop.should_stop() and stop.reason is StopReason.CANCEL
    row = signal(Flag())
    row.note_row_cancel(True)
    assert row.should_stop() and row.reason is StopReason.CANCEL
    read = signal(Flag(True))
    assert read.should_stop() and read.cancel_seen


def test_redis_away_reads_as_no_cancel() -> None:
    stop = signal(Flag(None))
    stop.note_flag(None)  # the XADD did not reach Redis
    assert not stop.should_stop() and not stop.cancel_seen


def test_deadline_and_lost() -> None:
    late = signal(Flag(), deadline=time.monotonic() - 1)
    assert late.should_stop() and late.reason is StopReason.DEADLINE
    lost = signal(Flag(True), lost=True)
    assert lost.should_stop() and lost.reason is StopReason.LOST  # lost wins over a cancel


def test_preempt_stops_unless_lost_or_canceled() -> None:
    request_preempt()
    try:
        stop = signal(Flag(), deadline=0.0)  # past its deadline too: preempt comes first
        assert stop.should_stop() and stop.reason is StopReason.PREEMPT
        canceled = signal(Flag(True))
        assert canceled.should_stop() and canceled.reason is StopReason.CANCEL
        lost = signal(Flag(), lost=True)
        assert lost.should_stop() and lost.reason is StopReason.LOST
    finally:
        clear_preempt()
    assert not signal(Flag()).should_stop()
