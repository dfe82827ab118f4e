"""The process-wide way to get a Redis client (web, worker, sweeper, CLI)."""

from __future__ import annotations

import redis


def redis_client(url: str) -> redis.Redis:
    """A client with short timeouts: progress is best-effort, never worth hanging a request."""
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )
