"""Per-job progress as a Redis Stream (``XADD`` with ``MAXLEN``, read with ``XRANGE``).

The worker appends one entry per iteration; the dashboard reads entries after the last id
it has seen. Streams expire some days after the job ends; the full history is also saved to
object storage, so Redis forgetting loses nothing.

The same module holds the cancel flag, a key the worker reads every iteration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis

FIELDS = ("iteration", "loss", "content", "style", "tv", "elapsed")
STREAM_ID_RE = r"^\d{1,20}-\d{1,20}$"


def stream_key(job_id: str) -> str:
    return f"stylequeue:progress:{job_id}"


def cancel_key(job_id: str) -> str:
    return f"stylequeue:cancel:{job_id}"


def _encode(entry: Mapping[str, Any]) -> dict[str, str]:
    return {k: repr(float(entry[k])) if k != "iteration" else str(int(entry[k])) for k in FIELDS}


def _decode(stream_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": stream_id.decode() if isinstance(stream_id, bytes) else stream_id}
    for raw_key, raw_value in fields.items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
        out[key] = int(value) if key == "iteration" else float(value)
    return out


class ProgressStream:
    def __init__(self, client: redis.Redis, maxlen: int = 20_000) -> None:
        self.redis = client
        self.maxlen = maxlen

    def append(self, job_id: str, entry: Mapping[str, Any]) -> str:
        """Add one iteration; old entries beyond ``maxlen`` are trimmed (approximately)."""
        sid = self.redis.xadd(
            stream_key(job_id), _encode(entry), maxlen=self.maxlen, approximate=True
        )
        return sid.decode() if isinstance(sid, bytes) else sid

    def append_checking_cancel(self, job_id: str, entry: Mapping[str, Any]) -> tuple[str, bool]:
        """``append`` and ``cancel_requested`` in one round trip (the worker's per-iteration
        call: one network wait per iteration instead of two)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(stream_key(job_id), _encode(entry), maxlen=self.maxlen, approximate=True)
        pipe.exists(cancel_key(job_id))
        sid, cancelled = pipe.execute()
        return (sid.decode() if isinstance(sid, bytes) else sid), bool(cancelled)

    def append_many(self, job_id: str, entries: Iterable[Mapping[str, Any]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            pipe.xadd(stream_key(job_id), _encode(entry), maxlen=self.maxlen, approximate=True)
        pipe.execute()

    def read(
        self, job_id: str, after: str | None = None, count: int = 1000
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Entries strictly after ``after`` (oldest first) and the id to pass next time."""
        start = f"({after}" if after else "-"
        rows = self.redis.xrange(stream_key(job_id), min=start, max="+", count=count)
        entries = [_decode(sid, fields) for sid, fields in rows]
        return entries, (entries[-1]["id"] if entries else after)

    def reset(self, job_id: str) -> None:
        """Forget a run's entries (a re-delivered job restarts from iteration 1)."""
        self.redis.delete(stream_key(job_id))

    def expire(self, job_id: str, seconds: int) -> None:
        self.redis.expire(stream_key(job_id), seconds)
        self.redis.expire(cancel_key(job_id), seconds)

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(stream_key(job_id)))

    # ---- cancel flag --------------------------------------------------------------------

    def request_cancel(self, job_id: str, ttl_seconds: int = 7 * 24 * 3600) -> None:
        self.redis.set(cancel_key(job_id), b"1", ex=ttl_seconds)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(cancel_key(job_id)))


def redis_client(url: str) -> redis.Redis:
    """A client with short timeouts: progress is best-effort, never worth hanging a request."""
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )
