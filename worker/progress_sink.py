"""An attempt's progress stream, best effort: a Redis outage costs stream entries, never the job.

Every write goes through :class:`~stylequeue.shared.progress.AttemptStream`, fenced by the
attempt's lock token: a refused write raises :class:`~stylequeue.shared.progress.Fenced`,
which the runner reads as "this attempt is lost". Redis errors are absorbed instead: while
Redis is away the sink hands out made-up, still increasing ids (the history saved to storage
keeps every entry) and tries Redis again only every ``retry_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from stylequeue.shared.progress import AttemptStream

log = logging.getLogger("stylequeue.worker")


@dataclass(frozen=True)
class Appended:
    id: str  # the stream's id for the entry, or a stand-in while Redis is away
    cancel: bool | None  # the cancel flag, read in the same round trip; None: not read


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

    def append(self, entry: Mapping[str, Any]) -> Appended:
        """XADD ``entry`` (reading the cancel flag on the way); raises ``Fenced``."""
        cancel: bool | None = None
        try:
            if self._down and time.monotonic() < self._retry_at:
                raise redis.ConnectionError("still backing off")
            sid, cancel = self.stream.append_checking_cancel(entry)
            if self._down:
                log.info("job %s: progress stream back", self.job_id)
                self._down = False
            ms, seq = (int(x) for x in sid.split("-"))
        except redis.RedisError as exc:
            self._went_away(exc)
            ms, seq = int(time.time() * 1000), 0
            if ms <= self._last_id[0]:
                ms, seq = self._last_id[0], self._last_id[1] + 1
        self._last_id = (ms, seq)
        return Appended(f"{ms}-{seq}", cancel)

    def read_cancel_flag(self) -> bool | None:
        """The Redis cancel flag; None while Redis is away (not retried before its time)."""
        if self._down:
            return None
        try:
            return self.stream.cancel_requested()
        except redis.RedisError:
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
        ms, seq = (int(x) for x in str(newest).split("-"))
        self._last_id = max(self._last_id, (ms, seq))
        deleted = self.stream.trim_after(kept[-1]["id"] if kept else last_id)
        return kept, deleted

    def expire(self, seconds: int) -> None:
        """Let the stream expire (the job ended); best effort. Raises ``Fenced``."""
        try:
            self.stream.expire(seconds)
        except redis.RedisError as exc:
            log.warning("job %s: could not set the stream's expiry: %s", self.job_id, exc)

    def _went_away(self, exc: redis.RedisError) -> None:
        now = time.monotonic()
        if not self._down:
            log.warning("job %s: progress stream unavailable: %s", self.job_id, exc)
            self._down = True
            self._retry_at = now + self.retry_seconds
        elif now >= self._retry_at:
            self._retry_at = now + self.retry_seconds
