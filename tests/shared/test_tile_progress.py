"""A tiled job's progress within its iteration: fenced entries on a real Redis, the cancel
flag read with each, the newest one read back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from stylequeue.shared.progress import Fenced
from stylequeue.shared.redis_client import redis_client
from stylequeue.shared.redis_keys import cancel_key, lock_key, tiles_key
from stylequeue.shared.tile_progress import MAXLEN, AttemptTiles, latest_tiles

JOB = "8d4c2a9e-0000-4000-8000-000000000002"
TOKEN = "host|1|mine"


def tile(done: int, iteration: int = 3) -> dict[str, object]:
    return {"iteration": iteration, "phase": "step", "done": done, "total": 16, "elapsed": 1.5}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis_client(redis_url)
    yield c
    c.close()


def test_entries_are_written_while_the_lock_is_ours(client: redis.Redis) -> None:
    client.set(lock_key(JOB), TOKEN)
    tiles = AttemptTiles(client, JOB, TOKEN, ttl=60)
    assert latest_tiles(client, JOB) is None
    for done in range(1, MAXLEN + 6):
        assert tiles.append_checking_cancel(tile(done)) is False
    assert latest_tiles(client, JOB) == {
        "iteration": 3, "phase": "step", "done": MAXLEN + 5, "total": 16, "elapsed": 1.5,
    }  # fmt: skip
    assert client.xlen(tiles_key(JOB)) == MAXLEN  # a short stream
    assert 0 < client.ttl(tiles_key(JOB)) <= 60


def test_the_cancel_flag_comes_back_with_each_entry(client: redis.Redis) -> None:
    client.set(lock_key(JOB), TOKEN)
    tiles = AttemptTiles(client, JOB, TOKEN, ttl=60)
    assert tiles.append_checking_cancel(tile(1)) is False
    client.set(cancel_key(JOB), b"1")
    assert tiles.append_checking_cancel(tile(2)) is True


def test_a_runner_whose_lock_is_gone_writes_nothing(client: redis.Redis) -> None:
    client.set(lock_key(JOB), "host|2|another")
    with pytest.raises(Fenced):
        AttemptTiles(client, JOB, TOKEN, ttl=60).append_checking_cancel(tile(1))
    assert client.exists(tiles_key(JOB)) == 0
