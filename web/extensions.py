"""The app's connections to the outside: database, object storage, Redis, Celery.

One :class:`Services` object per app, kept in ``app.extensions["stylequeue"]`` and built by
:func:`init_services` inside the app factory (never at import time), so a test can build an
app per settings and gunicorn workers each build their own after the fork.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from celery import Celery
from flask import Flask, current_app
from sqlalchemy.orm import Session, sessionmaker

from stylequeue.shared.celery_app import create_celery
from stylequeue.shared.db import get_sessionmaker
from stylequeue.shared.progress import ProgressStream
from stylequeue.shared.redis_client import redis_client
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import Storage, get_storage

EXTENSION_KEY = "stylequeue"


@dataclass(frozen=True)
class Services:
    settings: Settings
    sessionmaker: sessionmaker[Session]
    storage: Storage
    redis: redis.Redis
    progress: ProgressStream
    celery: Celery  # used only to SEND tasks by name; the web never imports the worker

    @contextmanager
    def db(self) -> Iterator[Session]:
        """A session that is closed (and rolled back unless committed) on exit."""
        with self.sessionmaker() as session:
            yield session


def init_services(app: Flask, settings: Settings, celery: Celery | None = None) -> Services:
    """Connect the app to its services. Clients connect lazily, so this never blocks."""
    client = redis_client(settings.redis_url)
    services = Services(
        settings=settings,
        sessionmaker=get_sessionmaker(settings.database_url),
        storage=get_storage(settings),
        redis=client,
        progress=ProgressStream(client, maxlen=settings.progress_maxlen),
        celery=celery if celery is not None else create_celery(settings),
    )
    app.extensions[EXTENSION_KEY] = services
    app.extensions["celery"] = services.celery  # where Flask's Celery example keeps it
    return services


def services() -> Services:
    """The current app's services (inside a request or app context)."""
    return current_app.extensions[EXTENSION_KEY]
