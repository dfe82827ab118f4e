"""The per-job lock: one runner at a time, renewed while held, given back only by its owner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import redis

from stylequeue.shared.locks import Holder, JobLock, lock_exists, lock_key
from tests.services import wait_for


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def test_second_runner_cannot_take_a_held_lock(wredis_url: str) -> None:
    client = _client(wredis_url)
    first = JobLock(client, "job-1", ttl_seconds=10)
    second = JobLock(client, "job-1", ttl_seconds=10)
    assert first.acquire()
    assert not second.acquire()  # same host, holder pid (this process) alive: no take-over
    assert lock_exists(client, "job-1")
    assert JobLock(client, "job-2", ttl_seconds=10).acquire()  # other jobs are independent
    first.release()
    assert second.acquire()


def test_release_and_renew_check_the_token(wredis_url: str) -> None:
    client = _client(wredis_url)
    mine = JobLock(client, "job-1", ttl_seconds=10)
    assert mine.acquire()
    intruder = JobLock(client, "job-1", ttl_seconds=10)
    assert not intruder.release()  # not its lock: nothing deleted
    assert not intruder.renew()
    assert mine.owned()
    client.pexpire(lock_key("job-1"), 500)
    assert mine.renew()
    assert client.pttl(lock_key("job-1")) > 5000
    assert mine.release()
    assert not lock_exists(client, "job-1")


def test_lock_expires_when_not_renewed(wredis_url: str) -> None:
    client = _client(wredis_url)
    dead = JobLock(client, "job-1", ttl_seconds=1)
    # A holder on another host: no pid check possible, only the TTL frees the lock.
    client.set(lock_key("job-1"), Holder("elsewhere", 1, "t").encode(), px=dead.ttl_ms)
    assert not JobLock(client, "job-1", ttl_seconds=1).acquire()
    wait_for(lambda: not lock_exists(client, "job-1"), timeout=30, what="lock expiry")
    assert JobLock(client, "job-1", ttl_seconds=1).acquire()


def test_renewer_keeps_the_lock_past_its_ttl(wredis_url: str) -> None:
    client = _client(wredis_url)
    lock = JobLock(client, "job-1", ttl_seconds=1)
    assert lock.acquire()
    lock.start_renewing()
    try:
        # Several TTLs' worth of renewals: still ours. Count renewals, not seconds.
        seen = []
        wait_for(
            lambda: seen.append(client.pttl(lock_key("job-1"))) or len(seen) > 30,
            timeout=60,
            interval=0.1,
            what="renewals",
        )
        assert all(ttl > 0 for ttl in seen)
        assert lock.owned() and not lock.lost.is_set()
    finally:
        lock.release()
    assert not lock_exists(client, "job-1")


def test_renewer_notices_a_lost_lock(wredis_url: str) -> None:
    client = _client(wredis_url)
    lock = JobLock(client, "job-1", ttl_seconds=1)
    assert lock.acquire()
    lock.start_renewing()
    client.set(lock_key("job-1"), "someone-else")  # e.g. expired and taken by a new runner
    assert lock.lost.wait(30)
    assert not lock.release()  # does not delete the new owner's lock
    assert client.get(lock_key("job-1")) == b"someone-else"


def test_lock_of_a_dead_process_on_this_host_is_taken_over(wredis_url: str) -> None:
    """A SIGKILLed pool child's lock: its successor on the same host need not wait the TTL."""
    client = _client(wredis_url)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    client.set(lock_key("job-1"), Holder(socket.gethostname(), dead_pid, "old").encode(), ex=60)
    heir = JobLock(client, "job-1", ttl_seconds=60)
    assert heir.acquire()
    assert heir.owned()
    # ... but never from a live process (this one):
    client.set(lock_key("job-2"), Holder(socket.gethostname(), os.getpid(), "x").encode(), ex=60)
    assert not JobLock(client, "job-2", ttl_seconds=60).acquire()


def test_holder_round_trip() -> None:
    holder = Holder("host|with|bars", 42, "tok")
    assert Holder.decode(holder.encode()) == holder
    assert Holder.decode(b"garbage") is None
    assert Holder.decode(None) is None
