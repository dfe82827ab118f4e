"""Retention: the sweeper removes finished jobs ``STYLEQUEUE_RETENTION_DAYS`` after they
ended, in batches, as ``DELETE`` would (row, files, stream), and counts them. Real Redis, a
real database (SQLite and PostgreSQL), a local folder."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from stylequeue.shared import sweeper
from stylequeue.shared.celery_app import create_celery
from stylequeue.shared.db import get_sessionmaker, session_scope
from stylequeue.shared.deletion import delete_owned_job, expire_finished
from stylequeue.shared.models import Job, JobDeletion, RemovedJobTotals
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.sweeper import sweep
from stylequeue.web.metrics_collector import read_job_figures
from tests.deletion_helpers import OWNER, assert_nothing_left, everything, full_job
from tests.factories import make_job

DAY = timedelta(days=1)


@pytest.fixture
def app(wsettings: Settings) -> Iterator[Any]:
    app = create_celery(wsettings)
    yield app
    app.close()


def ids_left(settings: Settings) -> set[str]:
    with session_scope(settings.database_url) as session:
        return set(session.scalars(select(Job.id)))


def test_finished_jobs_past_the_retention_go_in_batches(
    wsettings: Settings, app: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setattr(sweeper, "EXPIRE_BATCH", 2)
    now = utcnow()
    due = [
        full_job(wsettings, status=status, finished_at=now - 30 * DAY - n * timedelta(hours=1))
        for n, status in enumerate(["succeeded", "failed", "canceled", "succeeded", "failed"])
    ]
    not_yet = full_job(wsettings, status="succeeded", finished_at=now - 29 * DAY)
    # active jobs never expire, however old
    running = make_job(wsettings, status="running", created_at=now - 90 * DAY, attempts=1)
    queued = make_job(wsettings, created_at=now - 90 * DAY)
    kept = {not_yet.id, running.id, queued.id}
    caplog.set_level(logging.INFO, logger="stylequeue.sweeper")

    reports = [sweep(wsettings, app)]
    # the oldest endings first: due[4] ended 4 hours before due[0]
    assert ids_left(wsettings) == kept | {job.id for job in due[:3]}
    reports += [sweep(wsettings, app) for _ in range(3)]
    assert [(r.expired, r.purged, r.purge_pending) for r in reports] == [
        (2, 2, 0), (2, 2, 0), (1, 1, 0), (0, 0, 0),
    ]  # fmt: skip
    assert ids_left(wsettings) == kept
    for job in due:
        assert_nothing_left(wsettings, job.id)
    assert any(not_yet.id in key for key in everything(wsettings))
    assert "removed 2 jobs past the retention of 30 days, purged 2" in caplog.text
    with session_scope(wsettings.database_url) as session:
        totals = session.get(RemovedJobTotals, "expired")
        assert totals is not None and (totals.jobs, totals.attempts) == (5, 10)
        figures = read_job_figures(session, utcnow())
        assert figures.removed == {"expired": 5} and figures.purges_pending == 0


def test_retention_of_zero_keeps_every_job(wsettings: Settings, app: Any) -> None:
    settings = replace(wsettings, retention_days=0)
    job = full_job(settings, status="succeeded", finished_at=utcnow() - 3650 * DAY)
    report = sweep(settings, app)
    assert (report.expired, report.purged) == (0, 0)
    assert ids_left(settings) == {job.id}


def test_the_retention_is_a_setting(wsettings: Settings, app: Any) -> None:
    settings = replace(wsettings, retention_days=2)
    ended = utcnow() - 2 * DAY - timedelta(minutes=1)
    old = full_job(settings, status="succeeded", finished_at=ended)
    young = full_job(settings, status="succeeded", finished_at=utcnow() - 1 * DAY)
    assert sweep(settings, app).expired == 1
    assert ids_left(settings) == {young.id}
    assert_nothing_left(settings, old.id)


def test_a_user_delete_racing_the_expiry_removes_each_job_once(wsettings: Settings) -> None:
    """The owner deletes jobs while the sweeper expires the same ones: every job is removed
    exactly once (one tombstone, counted once), and neither side fails."""
    old = utcnow() - 40 * DAY
    jobs = [
        make_job(wsettings, owner=OWNER, status="succeeded", finished_at=old) for _ in range(12)
    ]
    sessions = get_sessionmaker(wsettings.database_url)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def user() -> None:
        start.wait()
        for job in jobs:
            try:
                with sessions() as session:
                    delete_owned_job(session, job.id, OWNER)
            except BaseException as exc:  # reported below
                errors.append(exc)

    def sweeper_pass() -> None:
        start.wait()
        try:
            while expire_finished(sessions, utcnow(), 30, 1):
                pass
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=user), threading.Thread(target=sweeper_pass)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with session_scope(wsettings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(JobDeletion)) == len(jobs)
        counted = session.scalar(select(func.sum(RemovedJobTotals.jobs)))
        assert counted == len(jobs)
