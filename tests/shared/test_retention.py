"""When a finished job expires (shared/retention.py), and STYLEQUEUE_RETENTION_DAYS itself.
The sweeper's side: tests/worker/test_sweeper_retention.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stylequeue.shared.models import Job
from stylequeue.shared.retention import expired, expires_at
from stylequeue.shared.settings import SettingsError, load_settings

CREATED = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
ENDED = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def job(status: str, finished_at: datetime | None = ENDED) -> Job:
    return Job(status=status, created_at=CREATED, finished_at=finished_at)


@pytest.mark.parametrize("status", ["succeeded", "failed", "canceled"])
def test_a_finished_job_expires_that_many_days_after_it_ended(status: str) -> None:
    assert expires_at(job(status), 30) == ENDED + timedelta(days=30)
    assert expires_at(job(status), 1) == datetime(2026, 11, 3, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("status", ["queued", "running"])
def test_an_active_job_never_expires(status: str) -> None:
    assert expires_at(job(status, finished_at=None), 30) is None


def test_zero_days_keeps_every_job() -> None:
    assert expires_at(job("succeeded"), 0) is None
    with pytest.raises(ValueError, match="keeps every job"):
        expired(ENDED, 0)


def test_a_finished_row_without_an_end_counts_from_its_creation() -> None:
    assert expires_at(job("failed", finished_at=None), 7) == CREATED + timedelta(days=7)


def test_the_setting() -> None:
    assert load_settings({}).retention_days == 30
    assert load_settings({"STYLEQUEUE_RETENTION_DAYS": ""}).retention_days == 30
    assert load_settings({"STYLEQUEUE_RETENTION_DAYS": "0"}).retention_days == 0
    assert load_settings({"STYLEQUEUE_RETENTION_DAYS": "36500"}).retention_days == 36500


@pytest.mark.parametrize(
    ("raw", "says"),
    [("-1", "must be >= 0"), ("36501", "must be <= 36500"), ("30d", "must be an integer"),
     ("1.5", "must be an integer")],
)  # fmt: skip
def test_a_bad_setting_names_the_variable(raw: str, says: str) -> None:
    with pytest.raises(SettingsError, match=f"STYLEQUEUE_RETENTION_DAYS {says}"):
        load_settings({"STYLEQUEUE_RETENTION_DAYS": raw})
