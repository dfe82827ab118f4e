"""The fleet view's data, read from a real registry, database and progress streams."""

from __future__ import annotations

import json
from datetime import timedelta

import redis

from stylequeue.shared import fleet
from stylequeue.shared.db import session_scope
from stylequeue.shared.fleet_status import fleet_status, iterations_per_second
from stylequeue.shared.redis_keys import stream_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from tests.factories import insert_job

GPU_WORKER = {
    "weights": "imagenet", "weights_ok": True, "weights_error": None, "error": None,
    "precision": "mixed_bfloat16", "pid": 4242, "host": "gpu-box", "device": "GPU",
    "device_name": "NVIDIA H200", "devices": 1,
    "memory": {"kind": "gpu", "used_bytes": 3 * 2**30, "peak_bytes": 4 * 2**30},
    "memory_budget": 139 * 2**30,
}  # fmt: skip
CPU_WORKER = {
    "weights": "random", "weights_ok": True, "precision": "float32", "pid": 77,
    "host": "laptop", "device": "CPU", "device_name": None, "memory": None,
}  # fmt: skip


def _status(settings: Settings, client: redis.Redis) -> dict[str, object]:
    with session_scope(settings.database_url) as session:
        return fleet_status(session, client)


def test_workers_queue_and_last_hour(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    now = utcnow()
    fleet.announce(client, "gpu0@gpu-box", GPU_WORKER)
    fleet.announce(client, "cpu@laptop", CPU_WORKER)
    running = insert_job(
        settings, owner="web:secret-owner", status="running", worker="gpu0@gpu-box/4242",
        iterations_done=10, started_at=now - timedelta(minutes=2), attempts=1,
    )  # fmt: skip
    # its stream: iterations 11..30 a tenth of a second apart (the ids carry Redis time)
    for i, it in enumerate(range(11, 31)):
        client.xadd(stream_key(running), {"iteration": it}, id=f"{1_000_000 + 100 * i}-0")
    # a running row whose runner is gone from the registry (died)
    insert_job(settings, status="running", worker="gone@box/1", started_at=now)
    oldest = now - timedelta(minutes=5)
    insert_job(settings, owner="api:bob", status="queued", created_at=oldest)
    insert_job(settings, status="queued", created_at=now - timedelta(seconds=30))
    for status, ago in (("succeeded", 10), ("succeeded", 50), ("failed", 5), ("canceled", 1),
                        ("succeeded", 90), ("failed", 61)):  # fmt: skip
        insert_job(settings, status=status, finished_at=now - timedelta(minutes=ago))

    status = _status(settings, client)
    client.close()

    workers = {w["name"]: w for w in status["workers"]}  # type: ignore[attr-defined]
    assert list(workers) == ["cpu@laptop", "gpu0@gpu-box"]  # sorted by name
    gpu = workers["gpu0@gpu-box"]
    assert (gpu["host"], gpu["device"], gpu["device_name"]) == ("gpu-box", "GPU", "NVIDIA H200")
    assert (gpu["weights"], gpu["precision"]) == ("imagenet", "mixed_bfloat16")
    assert gpu["memory"] == GPU_WORKER["memory"]
    assert gpu["memory_budget"] == 139 * 2**30  # what the web admits jobs by
    assert gpu["last_seen"] and 0 <= gpu["seen_seconds_ago"] < 3600
    job = gpu["job"]
    assert job["id"] == running and job["iteration"] == 30 and job["iterations_total"] == 5
    assert job["it_per_s"] == 10.0  # 19 iterations in 1.9 s of stream time
    assert workers["cpu@laptop"]["job"] is None  # idle
    assert status["queue"]["depth"] == 2  # type: ignore[index]
    assert 299 <= status["queue"]["oldest_wait_seconds"] < 3600  # type: ignore[index]
    assert status["running"] == 2 and status["running_without_worker"] == 1
    assert status["last_hour"] == {"succeeded": 2, "failed": 1, "canceled": 1}
    text = json.dumps(status)
    assert "secret-owner" not in text and "api:bob" not in text and "owner" not in text


def test_a_worker_with_no_job_running_and_an_empty_queue(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    fleet.announce(client, "cpu@laptop", CPU_WORKER)
    # running on another process of the same node (a restarted pool child): not this one's
    insert_job(settings, status="running", worker="cpu@laptop/78")
    status = _status(settings, client)
    client.close()
    assert status["workers"][0]["job"] is None  # type: ignore[index]
    assert status["queue"] == {"depth": 0, "oldest_queued_at": None, "oldest_wait_seconds": None}
    assert status["running_without_worker"] == 1


def test_speed_from_stream_ids() -> None:
    entries = [(b"5000-0", {b"iteration": b"40"}), ("3000-1", {"iteration": "20"})]
    assert iterations_per_second(entries) == 10.0  # newest first: 20 iterations in 2 s
    assert iterations_per_second(entries[:1]) is None  # one entry: no interval
    assert iterations_per_second([(b"5000-0", {b"iteration": b"40"})] * 2) is None
