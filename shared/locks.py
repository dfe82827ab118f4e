"""Per-job locks in Redis, so a job never runs twice at once.

A runner takes ``SET key value NX EX ttl`` with a random token in the value, renews it every
``ttl / 3`` from a daemon thread while the job runs, and releases it only if the token is
still its own (Lua compare-and-delete). A runner that dies stops renewing; the key expires
within ``ttl`` and the sweeper treats a ``running`` row without a lock as orphaned.

The value is also the attempt's fencing token: every write of an attempt to Redis is a script
that checks it first (``shared.progress.AttemptStream``). It names the holder
(``host|pid|token``): a runner on the same host whose predecessor's process is gone (a
SIGKILLed pool child) takes the lock over at once instead of waiting for the TTL.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass

import redis

from stylequeue.shared.redis_keys import lock_key

log = logging.getLogger("stylequeue.locks")

# KEYS[1] = lock key, ARGV[1] = expected value, ARGV[2] = ttl ms
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# KEYS[1] = lock key, ARGV[1] = value seen (dead holder), ARGV[2] = new value, ARGV[3] = ttl ms
_TAKE_OVER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


def release_if_held(client: redis.Redis, key: str, value: str) -> bool:
    """Delete the lock ``key`` only if it still holds ``value`` (compare-and-delete): the one
    way any stylequeue lock (a job's, the sweeper's) is given back."""
    return bool(client.eval(_RELEASE, 1, key, value))


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    token: str

    def encode(self) -> str:
        return f"{self.host}|{self.pid}|{self.token}"

    @classmethod
    def decode(cls, raw: bytes | str | None) -> Holder | None:
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        parts = text.split("|")
        if len(parts) < 3:
            return None
        host, pid, token = "|".join(parts[:-2]), parts[-2], parts[-1]
        try:
            return cls(host, int(pid), token)
        except ValueError:
            return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class JobLock:
    """One runner's hold on one job. Not reentrant; one instance per attempt."""

    def __init__(self, client: redis.Redis, job_id: str, ttl_seconds: int) -> None:
        if ttl_seconds < 1:
            raise ValueError("lock ttl must be at least 1 s")
        self.redis = client
        self.job_id = job_id
        self.key = lock_key(job_id)
        self.ttl_ms = int(ttl_seconds * 1000)
        self.holder = Holder(socket.gethostname(), os.getpid(), secrets.token_hex(16))
        self.value = self.holder.encode()
        self.lost = threading.Event()  # set when a renewal finds the lock no longer ours
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- taking and giving back ----------------------------------------------------------

    def acquire(self) -> bool:
        """Take the lock, or take it over from a dead holder on this host; False if held."""
        if self.redis.set(self.key, self.value, nx=True, px=self.ttl_ms):
            return True
        current = self.redis.get(self.key)
        if current is None:  # expired between the two calls
            return bool(self.redis.set(self.key, self.value, nx=True, px=self.ttl_ms))
        holder = Holder.decode(current)
        if holder and holder.host == self.holder.host and not _pid_alive(holder.pid):
            taken = self.redis.eval(_TAKE_OVER, 1, self.key, current, self.value, self.ttl_ms)
            if taken:
                log.info("job %s: took the lock over from dead pid %s", self.job_id, holder.pid)
                return True
        return False

    def renew(self) -> bool:
        """Extend the TTL if the lock is still ours."""
        return bool(self.redis.eval(_RENEW, 1, self.key, self.value, self.ttl_ms))

    def release(self) -> bool:
        """Delete the lock if it is still ours; stops the renewer."""
        self.stop_renewing()
        try:
            return release_if_held(self.redis, self.key, self.value)
        except redis.RedisError as exc:  # it expires on its own
            log.warning("job %s: could not release lock: %s", self.job_id, exc)
            return False

    def owned(self) -> bool:
        current = self.redis.get(self.key)
        return (
            current is not None
            and (current.decode() if isinstance(current, bytes) else current) == self.value
        )

    # ---- renewal -------------------------------------------------------------------------

    def start_renewing(self) -> None:
        """Renew every ttl/3 from a daemon thread until released or lost."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"lock-renew-{self.job_id[:8]}", daemon=True
        )
        self._thread.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _renew_loop(self) -> None:
        interval = self.ttl_ms / 3000.0
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    log.error("job %s: lock lost (expired or taken over)", self.job_id)
                    self.lost.set()
                    return
            except redis.RedisError as exc:
                # Keep trying: a short blip must not stop a long job. If Redis stays away
                # longer than the TTL the next renewal finds the key gone and sets `lost`.
                log.warning("job %s: lock renewal failed: %s", self.job_id, exc)

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_exists(client: redis.Redis, job_id: str) -> bool:
    return bool(client.exists(lock_key(job_id)))
