"""Per-job progress as a Redis Stream (``XADD`` with ``MAXLEN``, read with ``XRANGE``).

The worker appends one entry per iteration, in batches a few times a second; the dashboard
reads entries after the last id it has seen. Streams expire some days after the job ends;
the full history is also saved to object storage, so Redis forgetting loses nothing.

The same module holds the cancel flag, a key the worker reads with each batch of entries it
writes (and on its own when no entries are due), a few times a second.

Every job's stream expires once the job has ended, whoever ended it: the runner that finished
it (fenced, below), or, for a job that ended outside a runner's normal finish (canceled while
queued, a duplicate delivery of an ended job, a runner that lost a job that then ended), the
unfenced :func:`expire_job_stream`.

A runner writes through :class:`AttemptStream`: each write (a batch of entries, reset, trim,
expiry) is a Lua script that first checks that the job's lock still holds the runner's token
(its fencing token) and refuses the write otherwise (:class:`Fenced`). A runner presumed dead,
whose job another runner restarted, can then never add its iterations to the new attempt's
stream.
:class:`ProgressStream` is the unfenced reader (web) and test helper.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from stylequeue.shared.redis_keys import cancel_key, lock_key, stream_key

FIELDS = ("iteration", "loss", "content", "style", "tv", "elapsed")
STREAM_ID_RE = r"^\d{1,20}-\d{1,20}$"


def _encode(entry: Mapping[str, Any]) -> dict[FieldT, EncodableT]:  # what XADD takes
    return {k: repr(float(entry[k])) if k != "iteration" else str(int(entry[k])) for k in FIELDS}


def _decode(stream_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": stream_id.decode() if isinstance(stream_id, bytes) else stream_id}
    for raw_key, raw_value in fields.items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
        out[key] = int(value) if key == "iteration" else float(value)
    return out


def expire_job_stream(client: redis.Redis, job_id: str, seconds: int) -> None:
    """Let ``job_id``'s stream and cancel flag expire ``seconds`` from now: for a job that has
    ended (no runner writes to it any more). Unfenced; raises ``redis.RedisError``."""
    pipe = client.pipeline(transaction=False)
    pipe.expire(stream_key(job_id), seconds)
    pipe.expire(cancel_key(job_id), seconds)
    pipe.execute()


class ProgressStream:
    """Reading a job's stream and its cancel flag (web); unfenced appends (tests, bench)."""

    def __init__(self, client: redis.Redis, maxlen: int = 20_000) -> None:
        self.redis = client
        self.maxlen = maxlen

    def append(self, job_id: str, entry: Mapping[str, Any]) -> str:
        """Add one iteration; old entries beyond ``maxlen`` are trimmed (approximately)."""
        sid = self.redis.xadd(
            stream_key(job_id), _encode(entry), maxlen=self.maxlen, approximate=True
        )
        return sid.decode() if isinstance(sid, bytes) else sid

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
        rows = self.redis.xrange(stream_key(job_id), min=start, max="+", count=count) or []
        # redis-py types an entry's id and fields as optional (XREADGROUP/XCLAIM can answer
        # nil for a deleted entry); XRANGE never does
        entries = [
            _decode(sid, fields) for sid, fields in rows if sid is not None and fields is not None
        ]
        return entries, (entries[-1]["id"] if entries else after)

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(stream_key(job_id)))

    def expire(self, job_id: str, seconds: int) -> None:
        """The job ended: its stream and cancel flag go ``seconds`` from now
        (:func:`expire_job_stream`). Raises ``redis.RedisError``."""
        expire_job_stream(self.redis, job_id, seconds)

    # ---- cancel flag --------------------------------------------------------------------

    def request_cancel(self, job_id: str, ttl_seconds: int = 7 * 24 * 3600) -> None:
        self.redis.set(cancel_key(job_id), b"1", ex=ttl_seconds)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(cancel_key(job_id)))


# ---- an attempt's fenced writes ------------------------------------------------------------

# KEYS[1] = lock key, KEYS[2] = stream key, KEYS[3] = cancel key
# ARGV[1] = fencing token (the lock's value), ARGV[2] = maxlen, ARGV[3..] = field, value, ...
# -> {0} when the lock is not ours (nothing written), else {1, entry id, cancel flag}
_APPEND = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end
local id = redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return {1, id, redis.call('exists', KEYS[3])}
"""
# The same for several entries in one call (the worker's batches): ARGV[3] = fields per entry
# times 2, ARGV[4..] = the entries' field, value pairs one after another; trimmed once.
# -> {0} when the lock is not ours (nothing written), else {1, cancel flag, id, id, ...}
_APPEND_MANY = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end
local width = tonumber(ARGV[3])
local out = {1, redis.call('exists', KEYS[3])}
for i = 4, #ARGV, width do
  out[#out + 1] = redis.call('xadd', KEYS[2], '*', unpack(ARGV, i, i + width - 1))
end
redis.call('xtrim', KEYS[2], 'MAXLEN', '~', ARGV[2])
return out
"""
# KEYS[1] = lock key, KEYS[2] = stream key, ARGV[1] = fencing token -> 0 fenced, 1 done
_RESET = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[2])
return 1
"""
# KEYS[1] = lock key, KEYS[2] = stream key, ARGV[1] = fencing token, ARGV[2] = an entry id
# -> -1 fenced, else how many entries after that id were deleted
_TRIM_AFTER = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return -1 end
local later = redis.call('xrange', KEYS[2], '(' .. ARGV[2], '+')
for _, entry in ipairs(later) do redis.call('xdel', KEYS[2], entry[1]) end
return #later
"""
# KEYS[1] = lock key, KEYS[2] = stream key, KEYS[3] = cancel key
# ARGV[1] = fencing token, ARGV[2] = seconds -> 0 fenced, 1 done
_EXPIRE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('expire', KEYS[2], ARGV[2])
redis.call('expire', KEYS[3], ARGV[2])
return 1
"""


class Fenced(Exception):
    """The job's lock no longer holds this attempt's token: the write was refused."""


class AttemptStream:
    """One attempt's writes to its job's stream, each refused unless the job's lock (checked
    by Redis in the same script) still holds ``token``. Raises :class:`Fenced` then, and
    ``redis.RedisError`` when Redis cannot be reached."""

    def __init__(self, client: redis.Redis, job_id: str, token: str, maxlen: int = 20_000):
        self.redis = client
        self.job_id = job_id
        self.token = token
        self.maxlen = maxlen
        self._keys = [lock_key(job_id), stream_key(job_id), cancel_key(job_id)]
        self._append = client.register_script(_APPEND)
        self._append_many = client.register_script(_APPEND_MANY)
        self._reset = client.register_script(_RESET)
        self._trim_after = client.register_script(_TRIM_AFTER)
        self._expire = client.register_script(_EXPIRE)

    def append_checking_cancel(self, entry: Mapping[str, Any]) -> tuple[str, bool]:
        """Add one iteration (trimmed to about ``maxlen``) and read the cancel flag, in one
        round trip: the entry's id and whether a cancel is requested."""
        fields = [item for pair in _encode(entry).items() for item in pair]
        reply = self._append(keys=self._keys, args=[self.token, self.maxlen, *fields])
        if not reply[0]:
            raise Fenced(self.job_id)
        sid = reply[1]
        return (sid.decode() if isinstance(sid, bytes) else sid), bool(reply[2])

    def append_many_checking_cancel(
        self, entries: Sequence[Mapping[str, Any]]
    ) -> tuple[list[str], bool]:
        """Add several iterations in order in one fenced script call (one round trip; all or
        nothing: the lock is checked once, before the first), trim to about ``maxlen``, and
        read the cancel flag: the entries' ids and whether a cancel is requested. Keep a call
        to a few hundred entries (the caller splits longer runs)."""
        if not entries:
            raise ValueError("no entries to append")
        fields = [item for e in entries for pair in _encode(e).items() for item in pair]
        width = 2 * len(FIELDS)
        reply = self._append_many(keys=self._keys, args=[self.token, self.maxlen, width, *fields])
        if not reply[0]:
            raise Fenced(self.job_id)
        ids = [sid.decode() if isinstance(sid, bytes) else str(sid) for sid in reply[2:]]
        return ids, bool(reply[1])

    def reset(self) -> None:
        """Forget earlier attempts' entries (a re-delivered job restarts from iteration 1)."""
        if not self._reset(keys=self._keys[:2], args=[self.token]):
            raise Fenced(self.job_id)

    def entries_after(self, last_id: str) -> list[dict[str, Any]]:
        """The entries after ``last_id``, oldest first (read by the lock's holder)."""
        rows = self.redis.xrange(stream_key(self.job_id), min=f"({last_id}", max="+") or []
        return [_decode(sid, fields) for sid, fields in rows if sid is not None and fields]

    def last_iteration(self) -> int | None:
        """The newest entry's iteration (None: an empty or missing stream)."""
        rows = self.redis.xrevrange(stream_key(self.job_id), count=1) or []
        for sid, fields in rows:
            if sid is not None and fields:
                return int(_decode(sid, fields)["iteration"])
        return None

    def trim_after(self, last_id: str) -> int:
        """Keep the entries up to ``last_id`` and delete the later ones (a job resumed from a
        checkpoint recomputes those iterations); returns how many went. New entries still get
        ids above every earlier one (a stream's last id never goes back), so readers' cursors
        stay valid."""
        deleted = int(self._trim_after(keys=self._keys[:2], args=[self.token, last_id]))
        if deleted < 0:
            raise Fenced(self.job_id)
        return deleted

    def expire(self, seconds: int) -> None:
        """Let the stream and the cancel flag expire ``seconds`` from now (the job ended)."""
        if not self._expire(keys=self._keys, args=[self.token, seconds]):
            raise Fenced(self.job_id)

    def cancel_requested(self) -> bool:
        return bool(self.redis.exists(cancel_key(self.job_id)))
