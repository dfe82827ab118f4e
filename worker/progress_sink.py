"""An attempt's progress stream, best effort: a Redis outage costs stream entries, never the job.

Every write goes through :class:`~stylequeue.shared.progress.AttemptStream`, fenced by the
attempt's lock token: a refused write raises :class:`~stylequeue.shared.progress.Fenced`,
which the runner reads as "this attempt is lost". Redis errors are absorbed instead: the sink
notes that Redis is away and, until ``retry_seconds`` have passed, does not try it again
(:meth:`backing_off`); its caller (``worker.stream_writer``) keeps the entries meanwhile.
Entries that cannot wait any longer get :meth:`stand_in_ids`: made-up, still increasing ids
(the history saved to storage keeps every entry; only the stream misses them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from stylequeue.shared.progress import AttemptStream

log = logging.getLogger("stylequeue.worker")

CHUNK = 256  # entries per script call (its arguments stay a few thousand)


@dataclass
class Appended:
    ids: list[str] = field(default_factory=list)  # the first len(ids) entries were streamed
    cancel: bool | None = None  # the cancel flag, read in the same round trip; None: not read


def _id_key(sid: str) -> tuple[int, int]:
    ms, seq = (int(x) for x in sid.split("-"))
    return ms, seq


class ProgressSink:
    def __init__(self, stream: AttemptStream, retry_seconds: float) -> None:
        self.stream = stream
        self.job_id = stream.job_id
        self.retry_seconds = retry_seconds
        self._down = False
        self._retry_at = 0.0  # while Redis is away, try it again only from then
        self._last_id = (0, 0)

    @property
    def redis_down(self) -> bool:
        return self._down

    def backing_off(self) -> bool:
        """Redis was away at the last try and its retry time has not come."""
        return self._down and time.monotonic() < self._retry_at

    def append_many(self, entries: Sequence[Mapping[str, Any]], *, force: bool = False) -> Appended:
        """XADD ``entries`` in order, a chunk per fenced script call, reading the cancel flag
        on the way. Returns the ids of those written: all of them, or a first part when Redis
        went away (or none while it is backed off from, unless ``force``). Raises ``Fenced``."""
        done = Appended()
        if self.backing_off() and not force:
            return done
        try:
            for start in range(0, len(entries), CHUNK):
                ids, cancel = self.stream.append_many_checking_cancel(
                    entries[start : start + CHUNK]
                )
                done.ids += ids
                done.cancel = bool(done.cancel) or cancel
                self._last_id = max(self._last_id, _id_key(ids[-1]))
        except redis.RedisError as exc:
            self._went_away(exc)
            return done
        if self._down:
            log.info("job %s: progress stream back", self.job_id)
            self._down = False
        return done

    def stand_in_ids(self, n: int) -> list[str]:
        """``n`` made-up ids for entries that will not be streamed: above every id seen, so
        the history's ids keep increasing."""
        ms, seq = int(time.time() * 1000), 0
        out = []
        for _ in range(n):
            if (ms, seq) <= self._last_id:
                ms, seq = self._last_id[0], self._last_id[1] + 1
            self._last_id = (ms, seq)
            out.append(f"{ms}-{seq}")
        return out

    def read_cancel_flag(self) -> bool | None:
        """The Redis cancel flag; None while Redis is away (not retried before its time)."""
        if self.backing_off():
            return None
        try:
            return self.stream.cancel_requested()
        except redis.RedisError as exc:
            self._went_away(exc)
            return None

    def reset(self) -> None:
        """Forget earlier attempts' entries. Raises ``Fenced`` and Redis errors: an attempt
        must not stream after another's entries."""
        self.stream.reset()

    def last_iteration(self) -> int | None:
        """The stream's newest iteration (what a dead runner reached); raises Redis errors."""
        return self.stream.last_iteration()

    def resume_after(self, last_id: str, next_iteration: int) -> tuple[list[dict[str, Any]], int]:
        """A job resumed from a checkpoint whose last entry is ``last_id``: keep the entries
        after it that go on from ``next_iteration`` one by one (the dead runner computed
        them; the resumed one computes them again and need not stream them twice), delete
        the rest. Returns (the entries kept after ``last_id``, how many were deleted). The
        stand-in ids of a later Redis outage continue above the stream's. Raises like
        :meth:`reset`."""
        later = self.stream.entries_after(last_id)
        kept: list[dict[str, Any]] = []
        for entry in later:
            if entry.get("iteration") != next_iteration + len(kept):
                break
            kept.append(entry)
        newest = later[-1]["id"] if later else last_id
        self._last_id = max(self._last_id, _id_key(str(newest)))
        deleted = self.stream.trim_after(kept[-1]["id"] if kept else last_id)
        return kept, deleted

    def expire(self, seconds: int) -> None:
        """Let the stream expire (the job ended); best effort. Raises ``Fenced``."""
        try:
            self.stream.expire(seconds)
        except redis.RedisError as exc:
            log.warning("job %s: could not set the stream's expiry: %s", self.job_id, exc)

    def _went_away(self, exc: redis.RedisError) -> None:
        if not self._down:
            log.warning("job %s: progress stream unavailable: %s", self.job_id, exc)
            self._down = True
        self._retry_at = time.monotonic() + self.retry_seconds
