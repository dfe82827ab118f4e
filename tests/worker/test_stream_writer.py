"""The stream writer alone, on a real Redis: batches in order with their ids, the fence, the
cancel flag read on its own, and what it does while Redis is away (keeps the entries within a
bound, then stand-in ids, logged)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from stylequeue.shared.progress import AttemptStream, ProgressStream
from stylequeue.shared.redis_keys import lock_key
from stylequeue.worker.progress_sink import ProgressSink
from stylequeue.worker.stream_writer import StreamWriter
from tests.services import wait_for

JOB = "job-stream-writer"
TOKEN = "host|1|ours"


def entry(i: int) -> dict[str, Any]:
    return {"id": None, "iteration": i, "loss": float(i), "content": 0.5, "style": 0.25,
            "tv": 0.125, "elapsed": i / 10}  # fmt: skip


class Seen:
    """What the writer told its owner."""

    def __init__(self) -> None:
        self.cancel: list[bool] = []
        self.fenced = 0

    def on_cancel(self, flag: bool) -> None:
        self.cancel.append(flag)

    def on_fenced(self) -> None:
        self.fenced += 1


class Outage:
    """Redis unreachable for the stream's batch calls while ``down`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = threading.Event()
        self.refused = 0
        real = AttemptStream.append_many_checking_cancel

        def maybe(stream: AttemptStream, entries: Any) -> Any:
            if self.down.is_set():
                self.refused += 1
                raise redis.ConnectionError("Redis went away")
            return real(stream, entries)

        monkeypatch.setattr(AttemptStream, "append_many_checking_cancel", maybe)


@pytest.fixture
def client(wredis_url: str) -> Iterator[redis.Redis]:
    """The module's private Redis (no database needed here); the job's lock is ours."""
    client = redis.Redis.from_url(wredis_url)
    client.set(lock_key(JOB), TOKEN)
    yield client
    client.close()


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def make_writer(client: redis.Redis, seen: Seen) -> Iterator[Callable[..., StreamWriter]]:
    made: list[StreamWriter] = []

    def make(*, interval: float = 3600.0, bound: int = 1000, retry: float = 0.0) -> StreamWriter:
        sink = ProgressSink(AttemptStream(client, JOB, TOKEN), retry)
        writer = StreamWriter(sink, on_cancel=seen.on_cancel, on_fenced=seen.on_fenced,
                              bound=bound, interval=interval)  # fmt: skip
        made.append(writer.start())
        return writer

    yield make
    for writer in made:
        writer.close()


def streamed(client: redis.Redis) -> list[dict[str, Any]]:
    return ProgressStream(client).read(JOB, count=100_000)[0]


def test_entries_go_out_in_batches_in_order_with_their_ids(
    make_writer: Callable[..., StreamWriter], client: redis.Redis
) -> None:
    writer = make_writer()  # a batch due only at once (first entry) or when drained
    entries = [entry(i) for i in range(1, 31)]
    writer.put(entries[0])
    wait_for(lambda: entries[0]["id"] is not None, what="the first entry streamed at once")
    for e in entries[1:]:
        writer.put(e)
    assert all(e["id"] is None for e in entries[1:])  # waiting for their batch
    assert writer.drain()
    assert streamed(client) == entries  # same ids, same values, in order
    assert (writer.batches, writer.streamed, writer.stood_in) == (2, 30, 0)


def test_a_refused_write_writes_nothing_more(
    make_writer: Callable[..., StreamWriter], client: redis.Redis, seen: Seen
) -> None:
    writer = make_writer()
    first = entry(1)
    writer.put(first)
    writer.drain()
    client.set(lock_key(JOB), "elsewhere|2|theirs")  # another runner has the job now
    writer.put(entry(2))
    writer.drain()
    assert seen.fenced == 1
    client.set(lock_key(JOB), TOKEN)  # even were it ours again: the attempt is over
    writer.put(entry(3))
    writer.drain()
    assert streamed(client) == [first] and seen.fenced == 1


def test_the_cancel_flag_is_read_without_entries(
    make_writer: Callable[..., StreamWriter], client: redis.Redis, seen: Seen
) -> None:
    make_writer(interval=0.05)  # a long iteration: nothing to write for a while
    wait_for(lambda: seen.cancel[-1:] == [False], what="the flag read (not set)")
    ProgressStream(client).request_cancel(JOB)
    wait_for(lambda: seen.cancel[-1:] == [True], what="the flag read (set)")


def test_redis_away_for_a_moment_loses_nothing(
    make_writer: Callable[..., StreamWriter], client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    outage = Outage(monkeypatch)
    writer = make_writer(interval=0.01)
    entries = [entry(i) for i in range(1, 13)]
    writer.put(entries[0])
    writer.drain()
    outage.down.set()
    for e in entries[1:]:
        writer.put(e)
    wait_for(lambda: outage.refused >= 3, what="the writer trying while Redis is away")
    assert all(e["id"] is None for e in entries[1:])  # kept, in memory
    outage.down.clear()
    wait_for(lambda: entries[-1]["id"] is not None, what="the entries sent once Redis is back")
    assert streamed(client) == entries
    assert writer.stood_in == 0 and "not streamed" not in caplog.text


def test_beyond_the_bound_the_oldest_get_stand_in_ids(
    make_writer: Callable[..., StreamWriter], client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    outage = Outage(monkeypatch)
    writer = make_writer(interval=0.01, bound=5)
    entries = [entry(i) for i in range(1, 14)]
    writer.put(entries[0])
    writer.drain()
    outage.down.set()
    with caplog.at_level("WARNING", logger="stylequeue.worker"):
        for e in entries[1:]:
            writer.put(e)
        wait_for(lambda: writer.stood_in == 7, what="the oldest over the bound given up")
    # said so (in one warning or several, as the puts and the writer's tries interleaved)
    told = re.findall(r"Redis has been away too long: (\d+) progress entries", caplog.text)
    assert sum(map(int, told)) == 7
    outage.down.clear()
    writer.drain()
    assert streamed(client) == [entries[0], *entries[8:]]  # the newest 5 went out after all
    ids = [tuple(map(int, e["id"].split("-"))) for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # the history's stay in order


def test_a_drain_while_redis_is_away_gives_stand_in_ids(
    make_writer: Callable[..., StreamWriter], client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    outage = Outage(monkeypatch)
    writer = make_writer()
    entries = [entry(i) for i in range(1, 5)]
    writer.put(entries[0])
    writer.drain()
    outage.down.set()
    for e in entries[1:]:
        writer.put(e)
    with caplog.at_level("WARNING", logger="stylequeue.worker"):
        assert writer.drain()  # one forced try, then it settles for stand-ins
    assert "Redis is unreachable: 3 progress entries (iterations 2-4) not streamed" in caplog.text
    assert streamed(client) == [entries[0]]
    assert all(e["id"] is not None for e in entries) and writer.stood_in == 3
