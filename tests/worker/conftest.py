"""Fixtures for the job system's worker half: private Redis, module-wide stacks, real workers.

Worker tests get a redis-server of their own (not the shared one): other people's workers
consuming the ``style`` queue on a shared database would take our messages, and a flush
between tests would wipe the bindings of a long-lived worker.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from stylequeue.shared.settings import Settings, load_settings
from tests import services
from tests.conftest import POSTGRES_ENV, TEST_LIMITS
from tests.worker_process import WorkerProcess

BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get(POSTGRES_ENV) else [])


def build_settings(var_dir: Path, database_url: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings for a worker test: random weights, a short lock TTL, no queued grace."""
    base = load_settings({
        "STYLEQUEUE_VAR_DIR": str(var_dir),
        "STYLEQUEUE_VGG19_WEIGHTS": "random",
        "STYLEQUEUE_SECRET_KEY": "test-secret",
        "STYLEQUEUE_LOCK_TTL_SECONDS": "3",
        "STYLEQUEUE_QUEUED_GRACE_SECONDS": "0",
    })  # fmt: skip
    return replace(
        base, database_url=database_url, redis_url=redis_url, limits=TEST_LIMITS, **overrides
    )


# ---- Redis of our own ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this module: ``redis://127.0.0.1:<port>/0``."""
    with services.private_redis(tmp_path_factory.mktemp("redis")) as (url, _proc):
        yield url


def emptied(redis_url: str) -> str:
    """``redis_url`` after emptying its database (nothing left by an earlier test)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return redis_url


@pytest.fixture
def wredis_url(module_redis: str) -> str:
    """The module's private Redis, emptied for this test (unit tests; no worker attached)."""
    return emptied(module_redis)


@pytest.fixture
def wsettings(
    make_settings: Callable[..., Settings], database_url: str, wredis_url: str
) -> Settings:
    """Like ``settings`` but on the private Redis."""
    return make_settings(
        database_url=database_url, redis_url=wredis_url, lock_ttl_seconds=3,
        queued_grace_seconds=0,
    )  # fmt: skip


# ---- a module-wide stack with one real worker ----------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def worker_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database for the module: a SQLite file, or a fresh PostgreSQL database."""
    with services.migrated_database(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="module")
def worker_settings(
    tmp_path_factory: pytest.TempPathFactory, worker_db_url: str, module_redis: str
) -> Settings:
    # emptied: nothing left over from the other backend's run of this module
    return build_settings(tmp_path_factory.mktemp("var"), worker_db_url, emptied(module_redis))


@pytest.fixture(scope="module")
def celery_app(worker_settings: Settings) -> Iterator[Any]:
    from stylequeue.shared.celery_app import create_celery

    app = create_celery(worker_settings)
    yield app
    app.close()


@pytest.fixture(scope="module")
def celery_worker(
    worker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One warm worker for the module (TensorFlow import + warm-up is paid once)."""
    worker = WorkerProcess(worker_settings, tmp_path_factory.mktemp("logs"))
    try:
        worker.start()
        yield worker
    finally:
        # Shown only when something in the module failed (pytest captures teardown output).
        print(worker.log_tail(200), file=sys.stderr)
        worker.stop()
