"""StopSignal alone: why the engine stops (lost, cancel from the row or Redis, preemption,
deadline). It reads nothing itself: the writers' threads note what they read."""

from __future__ import annotations

import time

from stylequeue.worker.stop_signal import StopReason, StopSignal, clear_preempt, request_preempt


def signal(*, lost: bool = False, deadline: float | None = None) -> StopSignal:
    later = time.monotonic() + 3600 if deadline is None else deadline
    return StopSignal(later, is_lost=lambda: lost)


def test_runs_on_while_nothing_says_stop() -> None:
    stop = signal()
    stop.note_flag(False)
    stop.note_row_cancel(False)
    assert not stop.should_stop() and stop.reason is None


def test_cancel_from_the_stream_writer_or_the_row() -> None:
    stop = signal()
    stop.note_flag(True)
    assert stop.should_stop() and stop.reason is StopReason.CANCEL and stop.cancel_seen
    row = signal()
    row.note_row_cancel(True)
    assert row.should_stop() and row.reason is StopReason.CANCEL


def test_a_cancel_once_seen_stays_seen() -> None:
    stop = signal()
    stop.note_flag(True)
    stop.note_flag(False)  # a later read (the flag expired, say) does not take it back
    stop.note_row_cancel(False)
    assert stop.should_stop() and stop.reason is StopReason.CANCEL


def test_redis_away_reads_as_no_cancel() -> None:
    stop = signal()
    stop.note_flag(None)  # the writer did not reach Redis
    assert not stop.should_stop() and not stop.cancel_seen


def test_deadline_and_lost() -> None:
    late = signal(deadline=time.monotonic() - 1)
    assert late.should_stop() and late.reason is StopReason.DEADLINE
    lost = signal(lost=True)
    lost.note_flag(True)
    assert lost.should_stop() and lost.reason is StopReason.LOST  # lost wins over a cancel


def test_preempt_stops_unless_lost_or_canceled() -> None:
    request_preempt()
    try:
        stop = signal(deadline=0.0)  # past its deadline too: preempt comes first
        assert stop.should_stop() and stop.reason is StopReason.PREEMPT
        canceled = signal()
        canceled.note_flag(True)
        assert canceled.should_stop() and canceled.reason is StopReason.CANCEL
        lost = signal(lost=True)
        assert lost.should_stop() and lost.reason is StopReason.LOST
    finally:
        clear_preempt()
    assert not signal().should_stop()
