"""Job states: every transition allowed or refused as ALLOWED says, timestamps stamped;
the Job model's defaults persisted tz-aware on every backend."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job
from stylequeue.shared.states import (
    ACTIVE,
    ACTIVE_VALUES,
    ALLOWED,
    TERMINAL,
    InvalidTransition,
    JobStatus,
    can_transition,
    transition,
    utcnow,
)

PAIRS = list(itertools.product(JobStatus, JobStatus))
EXPECTED_ALLOWED = {
    ("queued", "running"),
    ("queued", "canceled"),
    ("queued", "failed"),
    ("running", "running"),
    ("running", "queued"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "canceled"),
}


def make_job(status: JobStatus = JobStatus.QUEUED, **fields: object) -> Job:
    job = Job(owner="alice", params={}, input_keys={}, iterations_total=10, **fields)
    job.status = status.value
    return job


def test_allowed_table_is_the_documented_one() -> None:
    table = {(a.value, b.value) for a, targets in ALLOWED.items() for b in targets}
    assert table == EXPECTED_ALLOWED
    assert set(ALLOWED) == set(JobStatus)
    assert {s for s in JobStatus if s.terminal} == set(TERMINAL)
    assert set(TERMINAL) == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}
    for status in TERMINAL:
        assert ALLOWED[status] == frozenset()  # terminal is final


def test_active_is_every_state_not_ended() -> None:
    assert set(ACTIVE) == {JobStatus.QUEUED, JobStatus.RUNNING}
    assert set(JobStatus) == ACTIVE | TERMINAL and not ACTIVE & TERMINAL
    assert ACTIVE_VALUES == ("queued", "running")


@pytest.mark.parametrize(("current", "new"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_pair(current: JobStatus, new: JobStatus) -> None:
    allowed = (current.value, new.value) in EXPECTED_ALLOWED
    assert can_transition(current.value, new.value) is allowed
    assert can_transition(current, new) is allowed
    job = make_job(current, started_at=None, finished_at=None)
    if allowed:
        transition(job, new)
        assert job.status == new.value
        assert type(job.status) is str
    else:
        with pytest.raises(InvalidTransition) as info:
            transition(job, new)
        assert job.status == current.value  # left as it was
        assert info.value.current == current.value
        assert info.value.new == new
        assert str(info.value) == f"job cannot go from {current.value} to {new.value}"


def test_unknown_status_is_an_error() -> None:
    with pytest.raises(ValueError):
        can_transition("queued", "paused")
    with pytest.raises(ValueError):
        can_transition("lost", "queued")


def test_running_stamps_started_and_clears_finished() -> None:
    job = make_job(JobStatus.QUEUED)
    before = utcnow()
    transition(job, JobStatus.RUNNING)
    assert job.started_at is not None and before <= job.started_at <= utcnow()
    assert job.started_at.tzinfo is UTC
    assert job.finished_at is None


def test_restart_while_running_restamps_started() -> None:
    old = utcnow() - timedelta(hours=1)
    job = make_job(JobStatus.RUNNING, started_at=old, finished_at=None)
    transition(job, JobStatus.RUNNING)
    assert job.started_at is not None and job.started_at > old
    assert job.finished_at is None


@pytest.mark.parametrize("end", sorted(TERMINAL))
def test_terminal_stamps_finished(end: JobStatus) -> None:
    started = utcnow() - timedelta(minutes=5)
    job = make_job(JobStatus.RUNNING, started_at=started)
    transition(job, end)
    assert job.finished_at is not None and job.finished_at >= started
    assert job.finished_at.tzinfo is UTC
    assert job.started_at == started  # kept: how long it ran
    assert job.terminal


@pytest.mark.parametrize("end", [JobStatus.CANCELED, JobStatus.FAILED])
def test_ending_a_queued_job_never_marks_it_started(end: JobStatus) -> None:
    job = make_job(JobStatus.QUEUED, started_at=None)
    transition(job, end)
    assert job.started_at is None
    assert job.finished_at is not None


def test_requeue_clears_started() -> None:
    job = make_job(JobStatus.QUEUED)
    transition(job, JobStatus.RUNNING)
    transition(job, JobStatus.QUEUED)
    assert job.status == "queued"
    assert job.started_at is None
    assert job.finished_at is None
    assert not job.terminal


def test_extra_fields_are_set_and_refused_transitions_set_none() -> None:
    job = make_job(JobStatus.RUNNING)
    transition(job, JobStatus.FAILED, error="boom", worker="w1")
    assert (job.error, job.worker) == ("boom", "w1")
    done = make_job(JobStatus.SUCCEEDED, error=None)
    with pytest.raises(InvalidTransition):
        transition(done, JobStatus.FAILED, error="late")
    assert done.error is None


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)


# ---- the model on a real database ------------------------------------------------------------


def test_job_defaults_persisted_and_read_back_aware(database_url: str) -> None:
    before = utcnow()
    with session_scope(database_url) as session:
        job = Job(owner="alice", params={"iterations": 10}, input_keys={}, iterations_total=10)
        session.add(job)
        session.flush()
        job_id = job.id
    assert uuid.UUID(job_id).version == 4
    assert str(uuid.UUID(job_id)) == job_id

    with session_scope(database_url) as session:
        row = session.get(Job, job_id)
        assert row is not None
        assert row.status == "queued"
        assert (row.attempts, row.iterations_done) == (0, 0)
        assert row.snapshot_iterations == []
        assert row.cancel_requested is False
        assert row.params == {"iterations": 10}
        assert row.started_at is None and row.finished_at is None
        assert row.created_at.tzinfo is not None
        assert row.created_at.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= row.created_at <= utcnow()


def test_transition_timestamps_survive_a_round_trip(database_url: str) -> None:
    with session_scope(database_url) as session:
        job = make_job(JobStatus.QUEUED)
        session.add(job)
        session.flush()
        job_id = job.id
        transition(job, JobStatus.RUNNING, worker="w1", attempts=1)
        started = job.started_at
        transition(job, JobStatus.SUCCEEDED, iterations_done=10)
        finished = job.finished_at
    with session_scope(database_url) as session:
        row = session.get(Job, job_id)
        assert row is not None
        assert (row.status, row.worker, row.attempts, row.iterations_done) == (
            "succeeded", "w1", 1, 10,
        )  # fmt: skip
        assert row.started_at == started and row.finished_at == finished
        assert row.started_at.tzinfo is not None and row.finished_at.tzinfo is not None


def test_other_offsets_are_stored_as_the_same_instant(database_url: str) -> None:
    plus_two = datetime(2026, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(database_url) as session:
        job = make_job(JobStatus.QUEUED, created_at=plus_two)
        session.add(job)
        session.flush()
        job_id = job.id
    with session_scope(database_url) as session:
        row = session.get(Job, job_id)
        assert row is not None
        assert row.created_at == plus_two  # same instant
        assert row.created_at.utcoffset() == timedelta(0)
        assert row.created_at == datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
        # Filters with an offset compare instants too (SQLite compares the stored text).
        plus_one = timezone(timedelta(hours=1))
        ten_utc = datetime(2026, 1, 2, 11, 0, tzinfo=plus_one)
        at_or_before = select(Job.id).where(Job.created_at <= ten_utc)
        before = select(Job.id).where(Job.created_at < ten_utc - timedelta(minutes=1))
        assert session.scalars(at_or_before).all() == [job_id]
        assert session.scalars(before).all() == []


def test_naive_datetime_is_rejected(database_url: str) -> None:
    naive = datetime(2026, 1, 1, 12, 0)
    with pytest.raises(StatementError, match="naive datetime"), session_scope(database_url) as s:
        s.add(make_job(JobStatus.QUEUED, created_at=naive))
    with session_scope(database_url) as session:
        assert session.scalars(select(Job)).all() == []
