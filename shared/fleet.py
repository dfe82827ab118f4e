"""Which workers are alive and which weights they run, as short-lived Redis keys.

Each worker process refreshes its key every ~30 s; the dashboard shows a banner when any
live worker runs ``random`` weights (its pictures are not real style transfer), and the fleet
view (``shared.fleet_status``) lists them. Each announcement carries ``seen_at`` (Unix time
of the announcement, the announcer's clock).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from stylequeue.shared.redis_keys import WORKER_PATTERN, worker_key

TTL_SECONDS = 90


def announce(client: redis.Redis, name: str, info: dict[str, Any], ttl: int = TTL_SECONDS) -> None:
    """Publish this worker's state: {weights, weights_ok, weights_error, precision, ...}."""
    entry = {"name": name, **info, "seen_at": round(time.time(), 3)}
    client.set(worker_key(name), json.dumps(entry), ex=ttl)


def retire(client: redis.Redis, name: str) -> None:
    client.delete(worker_key(name))


def list_workers(client: redis.Redis) -> list[dict[str, Any]]:
    keys = sorted(client.scan_iter(match=WORKER_PATTERN, count=200))
    if not keys:
        return []
    return [json.loads(raw) for raw in client.mget(keys) if raw is not None]
