"""ProgressStream on a real Redis: append, read after an id, trimming, expiry, cancel flag;
an attempt's fenced writes (AttemptStream), refused once the job's lock is another's."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import pytest
import redis

from stylequeue.shared.progress import FIELDS, STREAM_ID_RE, AttemptStream, Fenced, ProgressStream
from stylequeue.shared.redis_client import redis_client
from stylequeue.shared.redis_keys import cancel_key, lock_key, stream_key

JOB = "8d4c2a9e-0000-4000-8000-000000000001"


def entry(i: int, **over: float) -> dict[str, float]:
    values = {
        "iteration": i,
        "loss": 1000.0 / i,
        "content": 1.5 * i,
        "style": 2.25 * i,
        "tv": 0.125,
        "elapsed": 0.5 * i,
    }
    return {**values, **over}


def _id_key(sid: str) -> tuple[int, int]:
    ms, seq = sid.split("-")
    return int(ms), int(seq)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis_client(redis_url)
    yield c
    c.close()


@pytest.fixture
def stream(client: redis.Redis) -> ProgressStream:
    return ProgressStream(client)


TOKEN = "host|1|mine"


@pytest.fixture
def attempt(client: redis.Redis) -> AttemptStream:
    """The writes of an attempt whose token the job's lock holds."""
    client.set(lock_key(JOB), TOKEN, ex=60)
    return AttemptStream(client, JOB, TOKEN)


def test_append_returns_increasing_ids(stream: ProgressStream) -> None:
    ids = [stream.append(JOB, entry(i)) for i in range(1, 51)]
    assert all(isinstance(sid, str) for sid in ids)
    assert all(re.match(STREAM_ID_RE, sid) for sid in ids)
    assert [_id_key(s) for s in ids] == sorted({_id_key(s) for s in ids})  # strictly increasing


def test_read_all_in_order_with_typed_fields(stream: ProgressStream) -> None:
    ids = [stream.append(JOB, entry(i)) for i in range(1, 6)]
    entries, last = stream.read(JOB)
    assert [e["id"] for e in entries] == ids
    assert last == ids[-1]
    for i, got in enumerate(entries, start=1):
        assert set(got) == {"id", *FIELDS}
        assert type(got["iteration"]) is int and got["iteration"] == i
        for name in FIELDS[1:]:
            assert type(got[name]) is float
        assert got == {"id": ids[i - 1], **entry(i)}  # floats come back exactly


def test_values_are_coerced_and_extra_fields_dropped(stream: ProgressStream) -> None:
    stream.append(JOB, {**entry(1), "iteration": 7.0, "loss": 3, "note": "ignored"})
    (got,), _ = stream.read(JOB)
    assert got["iteration"] == 7 and type(got["iteration"]) is int
    assert got["loss"] == 3.0 and type(got["loss"]) is float
    assert "note" not in got


def test_a_missing_field_is_an_error(stream: ProgressStream) -> None:
    incomplete = entry(1)
    del incomplete["tv"]
    with pytest.raises(KeyError):
        stream.append(JOB, incomplete)
    assert not stream.exists(JOB)


def test_non_finite_losses_round_trip(stream: ProgressStream) -> None:
    stream.append(JOB, entry(1, loss=math.nan, style=math.inf, content=-math.inf))
    (got,), _ = stream.read(JOB)
    assert math.isnan(got["loss"])
    assert got["style"] == math.inf and got["content"] == -math.inf


def test_read_after_an_id_returns_only_newer(stream: ProgressStream) -> None:
    ids = [stream.append(JOB, entry(i)) for i in range(1, 11)]
    entries, last = stream.read(JOB, after=ids[3])
    assert [e["id"] for e in entries] == ids[4:]
    assert [e["iteration"] for e in entries] == list(range(5, 11))
    assert last == ids[-1]


def test_read_with_nothing_new_returns_the_given_after(stream: ProgressStream) -> None:
    ids = [stream.append(JOB, entry(i)) for i in range(1, 4)]
    assert stream.read(JOB, after=ids[-1]) == ([], ids[-1])
    assert stream.read("no-such-job") == ([], None)
    assert stream.read("no-such-job", after="5-0") == ([], "5-0")
    # An id past the end (a client that saw a newer run) gets nothing, not an error.
    assert stream.read(JOB, after="99999999999999-0") == ([], "99999999999999-0")


def test_count_caps_a_read_and_paging_covers_everything(stream: ProgressStream) -> None:
    ids = [stream.append(JOB, entry(i)) for i in range(1, 26)]
    page, last = stream.read(JOB, count=10)
    assert [e["id"] for e in page] == ids[:10]
    assert last == ids[9]
    seen = [e["id"] for e in page]
    for _ in range(5):  # bounded: a read that never moves on must fail, not hang
        page, new_last = stream.read(JOB, after=last, count=10)
        if not page:
            assert new_last == last
            break
        assert len(page) <= 10
        seen += [e["id"] for e in page]
        last = new_last
    assert seen == ids


def test_maxlen_keeps_the_stream_bounded(client: redis.Redis) -> None:
    stream = ProgressStream(client, maxlen=100)
    for i in range(1, 301):
        stream.append(JOB, entry(i))
    length = client.xlen(stream_key(JOB))
    # Approximate trimming drops whole macro-nodes: at least maxlen stay, never all 300.
    assert 100 <= length <= 200, length
    entries, _ = stream.read(JOB, count=1000)
    assert entries[-1]["iteration"] == 300  # the newest survive, the oldest go
    assert entries[0]["iteration"] == 300 - length + 1


def test_append_many_is_trimmed_too(client: redis.Redis) -> None:
    stream = ProgressStream(client, maxlen=100)
    stream.append_many(JOB, (entry(i) for i in range(1, 301)))
    length = client.xlen(stream_key(JOB))
    assert 100 <= length <= 200, length


def test_append_many_appends_in_order(stream: ProgressStream) -> None:
    stream.append(JOB, entry(1))
    stream.append_many(JOB, [entry(i) for i in range(2, 8)])
    stream.append_many(JOB, [])  # nothing to send is fine
    entries, _ = stream.read(JOB)
    assert [e["iteration"] for e in entries] == list(range(1, 8))
    assert entries[3] == {"id": entries[3]["id"], **entry(4)}


def test_append_checking_cancel(attempt: AttemptStream, stream: ProgressStream) -> None:
    sid, cancelled = attempt.append_checking_cancel(entry(1))
    assert cancelled is False
    stream.request_cancel(JOB)
    sid2, cancelled = attempt.append_checking_cancel(entry(2))
    assert cancelled is True
    assert _id_key(sid2) > _id_key(sid)
    entries, last = stream.read(JOB)
    assert entries == [{"id": sid, **entry(1)}, {"id": sid2, **entry(2)}]
    assert last == sid2


def test_append_checking_cancel_sees_only_its_own_job(
    attempt: AttemptStream, stream: ProgressStream
) -> None:
    stream.request_cancel("another-job")
    _, cancelled = attempt.append_checking_cancel(entry(1))
    assert cancelled is False


def test_attempt_append_is_trimmed(client: redis.Redis) -> None:
    client.set(lock_key(JOB), TOKEN)
    attempt = AttemptStream(client, JOB, TOKEN, maxlen=100)
    for i in range(1, 301):
        attempt.append_checking_cancel(entry(i))
    assert 100 <= client.xlen(stream_key(JOB)) <= 200


@pytest.mark.parametrize("lock", [None, "elsewhere|2|theirs"])
def test_a_stale_token_writes_nothing(
    client: redis.Redis, stream: ProgressStream, lock: str | None
) -> None:
    """The fence: once the job's lock is gone or another runner's, every write of the old
    attempt is refused by Redis itself, and the stream stays as the new attempt left it."""
    theirs = stream.append(JOB, entry(1, loss=42.0))
    if lock is not None:
        client.set(lock_key(JOB), lock, ex=60)
    stale = AttemptStream(client, JOB, TOKEN)
    with pytest.raises(Fenced):
        stale.append_checking_cancel(entry(5))
    with pytest.raises(Fenced):
        stale.reset()
    with pytest.raises(Fenced):
        stale.expire(60)
    assert stream.read(JOB)[0] == [{"id": theirs, **entry(1, loss=42.0)}]
    assert client.ttl(stream_key(JOB)) == -1
    assert client.get(lock_key(JOB)) == (lock.encode() if lock else None)


def test_reset_deletes_the_stream(
    attempt: AttemptStream, stream: ProgressStream, client: redis.Redis
) -> None:
    stream.append(JOB, entry(1))
    stream.append("other", entry(1))
    assert stream.exists(JOB)
    attempt.reset()
    assert not stream.exists(JOB)
    assert stream.read(JOB) == ([], None)
    assert stream.exists("other")
    attempt.append_checking_cancel(entry(1))  # a restarted run starts a fresh stream
    assert [e["iteration"] for e in stream.read(JOB)[0]] == [1]
    assert client.get(lock_key(JOB)) == TOKEN.encode()  # the lock is left alone


def test_trim_after_keeps_entries_up_to_an_id_and_ids_keep_growing(
    attempt: AttemptStream, stream: ProgressStream, client: redis.Redis
) -> None:
    """A resumed job keeps its stream up to the checkpoint's entry; the iterations after it
    are computed again, and their new entries get ids above every earlier one."""
    ids = [stream.append(JOB, entry(i)) for i in range(1, 6)]
    stream.append("other", entry(4))
    assert attempt.trim_after(ids[2]) == 2
    kept = stream.read(JOB)[0]
    assert [(e["id"], e["iteration"]) for e in kept] == [(ids[i], i + 1) for i in range(3)]
    new_id, _ = attempt.append_checking_cancel(entry(4))
    assert tuple(map(int, new_id.split("-"))) > tuple(map(int, ids[-1].split("-")))
    assert attempt.trim_after(new_id) == 0
    assert [e["iteration"] for e in stream.read("other")[0]] == [4]
    client.set(lock_key(JOB), "someone-else")
    with pytest.raises(Fenced):
        attempt.trim_after(ids[0])
    assert [e["iteration"] for e in stream.read(JOB)[0]] == [1, 2, 3, 4]


def test_scripts_survive_a_script_flush(attempt: AttemptStream, client: redis.Redis) -> None:
    attempt.append_checking_cancel(entry(1))
    client.script_flush()  # Redis restarted, say: the scripts are loaded again
    attempt.append_checking_cancel(entry(2))
    assert client.xlen(stream_key(JOB)) == 2


def test_expire_sets_a_ttl_on_the_stream_and_the_cancel_key(
    attempt: AttemptStream, stream: ProgressStream, client: redis.Redis
) -> None:
    stream.append(JOB, entry(1))
    stream.request_cancel(JOB, ttl_seconds=7 * 24 * 3600)
    assert client.ttl(stream_key(JOB)) == -1  # no expiry while the job runs
    attempt.expire(120)
    assert 0 < client.ttl(stream_key(JOB)) <= 120
    assert 0 < client.ttl(cancel_key(JOB)) <= 120


def test_expire_without_a_cancel_key_creates_none(
    attempt: AttemptStream, stream: ProgressStream, client: redis.Redis
) -> None:
    stream.append(JOB, entry(1))
    attempt.expire(60)
    assert 0 < client.ttl(stream_key(JOB)) <= 60
    assert not client.exists(cancel_key(JOB))
    assert not stream.cancel_requested(JOB)


def test_cancel_flag(stream: ProgressStream, client: redis.Redis) -> None:
    assert not stream.cancel_requested(JOB)
    stream.request_cancel(JOB, ttl_seconds=300)
    assert stream.cancel_requested(JOB)
    assert not stream.cancel_requested("other")
    assert 0 < client.ttl(cancel_key(JOB)) <= 300
    stream.request_cancel(JOB)  # asking twice is fine
    assert stream.cancel_requested(JOB)
    assert client.ttl(cancel_key(JOB)) > 300  # the default keeps it for days


def test_keys_are_per_job_and_namespaced() -> None:
    assert stream_key(JOB) == f"stylequeue:progress:{JOB}"
    assert cancel_key(JOB) == f"stylequeue:cancel:{JOB}"
    assert stream_key("a") != stream_key("b")


def test_streams_of_different_jobs_do_not_mix(stream: ProgressStream) -> None:
    stream.append("job-a", entry(1))
    stream.append("job-b", entry(2))
    stream.append("job-a", entry(3))
    assert [e["iteration"] for e in stream.read("job-a")[0]] == [1, 3]
    assert [e["iteration"] for e in stream.read("job-b")[0]] == [2]


def test_redis_client_has_short_timeouts(redis_url: str) -> None:
    c = redis_client(redis_url)
    try:
        kwargs = c.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 5
        assert kwargs["socket_connect_timeout"] == 2
        assert c.ping()
    finally:
        c.close()
