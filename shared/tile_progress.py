"""Progress within an iteration, for a job painted in tiles: a short Redis stream per job.

An iteration of a print takes minutes; the job's stream (``shared.progress``) gets one entry
per iteration, so the runner also writes one entry per tile here (the iteration, the phase,
tiles done of total), and the web hands the latest to the dashboard with the progress page.
A stream of its own, not entries in the job's stream: that one holds exactly one entry per
iteration, the same ids as the saved history, which the chart, resumes and the history rely
on.

Writes are fenced like the job's stream (the Lua script checks the job's lock still holds the
attempt's token, else :class:`~stylequeue.shared.progress.Fenced`) and read the cancel flag in
the same round trip, so a cancel is seen within one tile. The stream keeps the last
``MAXLEN`` entries and expires ``ttl`` seconds after the last write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from stylequeue.shared.progress import Fenced
from stylequeue.shared.redis_keys import cancel_key, lock_key, tiles_key

FIELDS = ("iteration", "phase", "done", "total", "elapsed")
MAXLEN = 16
PHASES = ("targets", "grams", "step")

# KEYS[1] = lock key, KEYS[2] = tiles key, KEYS[3] = cancel key
# ARGV[1] = fencing token, ARGV[2] = maxlen, ARGV[3] = ttl seconds, ARGV[4..] = field, value
# -> {0} when the lock is not ours (nothing written), else {1, entry id, cancel flag}
_APPEND = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end
local id = redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[2], '*', unpack(ARGV, 4))
redis.call('expire', KEYS[2], ARGV[3])
return {1, id, redis.call('exists', KEYS[3])}
"""


def _encode(entry: Mapping[str, Any]) -> list[str]:
    return [
        "iteration", str(int(entry["iteration"])), "phase", str(entry["phase"]),
        "done", str(int(entry["done"])), "total", str(int(entry["total"])),
        "elapsed", repr(float(entry["elapsed"])),
    ]  # fmt: skip


def _decode(fields: Mapping[bytes | str, bytes | str]) -> dict[str, Any]:
    raw = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    return {
        "iteration": int(raw["iteration"]),
        "phase": raw["phase"],
        "done": int(raw["done"]),
        "total": int(raw["total"]),
        "elapsed": float(raw["elapsed"]),
    }


class AttemptTiles:
    """One attempt's tile entries, each refused unless the job's lock holds ``token``."""

    def __init__(self, client: redis.Redis, job_id: str, token: str, ttl: int) -> None:
        self.job_id = job_id
        self.token = token
        self.ttl = ttl
        self._keys = [lock_key(job_id), tiles_key(job_id), cancel_key(job_id)]
        self._append = client.register_script(_APPEND)

    def append_checking_cancel(self, entry: Mapping[str, Any]) -> bool:
        """Add one tile's entry; whether a cancel is requested. Raises :class:`Fenced` and
        ``redis.RedisError``."""
        reply = self._append(keys=self._keys, args=[self.token, MAXLEN, self.ttl, *_encode(entry)])
        if not reply[0]:
            raise Fenced(self.job_id)
        return bool(reply[2])


def latest_tiles(client: redis.Redis, job_id: str) -> dict[str, Any] | None:
    """The newest tile entry of the job, or None. Raises ``redis.RedisError``."""
    rows = client.xrevrange(tiles_key(job_id), max="+", min="-", count=1) or []
    for _, fields in rows:
        if fields:
            return _decode(fields)
    return None
