"""Database models (SQLAlchemy 2 declarative)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from stylequeue.shared.states import JobStatus, utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored; use stylequeue.shared.states.utcnow()")
        # SQLite keeps the wall-clock time and drops the offset: store the UTC instant.
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


def new_id() -> str:
    return str(uuid.uuid4())


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner", "created_at"),
        # one job per owner and Idempotency-Key (shared/idempotency.py); NULLs never clash
        Index("uq_jobs_owner_idempotency_key", "owner", "idempotency_key", unique=True),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(80), nullable=False)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=JobStatus.QUEUED.value, index=True
    )
    # TransferParams.to_dict()
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # {"content": key, "styles": [key, ...]} in object storage
    input_keys: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    result_key: Mapped[str | None] = mapped_column(String(255))
    history_key: Mapped[str | None] = mapped_column(String(255))
    snapshot_iterations: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # attempts that ended because their worker shut down (checkpointed, back to queued): not
    # crashes, so attempts - preemptions is what counts towards the crash limit
    preemptions: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    iterations_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    iterations_total: Mapped[int] = mapped_column(Integer, nullable=False)
    # iterations run across all attempts (a resumed attempt recomputes those after its
    # checkpoint): iterations_computed - iterations_done is the work lost to dead workers
    iterations_computed: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    resumed_from: Mapped[int | None] = mapped_column(Integer)  # this attempt's checkpoint
    # checkpoints saved and attempts resumed from one, across attempts (the metrics' counters)
    checkpoints: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    resumes: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # the newest checkpoint's iteration while the job has one: where a re-queued job resumes
    # (after a crash the row's iterations_done is the dead runner's, later than this)
    checkpoint_iteration: Mapped[int | None] = mapped_column(Integer)
    best_loss: Mapped[float | None] = mapped_column(Float)
    best_iteration: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    weights: Mapped[str | None] = mapped_column(String(255))  # the weights that made the result
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # what the owner's storage quota counts: the bytes of its stored inputs (shared/quota.py)
    input_bytes: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    # a keyed hash of the submitting browser's address, to count an address's active jobs;
    # None for API tokens (web/limits.py client_key)
    client_key: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last send to the broker
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # indexed for the retention sweep (finished jobs older than STYLEQUEUE_RETENTION_DAYS)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # where to POST the job's events, and which (shared/webhook_outbox.py); NULL: none
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON)
    # the submit's Idempotency-Key, and a hash of its inputs (shared/idempotency.py)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))

    @property
    def terminal(self) -> bool:
        return JobStatus(self.status).terminal

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status} {self.iterations_done}/{self.iterations_total}>"


# ---- deleted jobs (shared/deletion.py) -----------------------------------------------------


class JobDeletion(Base):
    """A deleted job whose files and stream may still be there: the to-do list of the purge.

    Written in the transaction that deletes the job's row (so nothing shows the job any
    more), removed once its storage prefix lists empty; the sweeper retries whatever is
    left (storage down, a runner still holding the job's lock).
    """

    __tablename__ = "job_deletions"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(80), nullable=False)
    reason: Mapped[str] = mapped_column(String(16), nullable=False)  # deleted | expired
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    tries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # failed purges
    last_error: Mapped[str | None] = mapped_column(Text)


class RemovedJobTotals(Base):
    """What every removed job added up to, one row per reason: the jobs themselves, and their
    attempts, crashes, preemptions, checkpoints and resumes, so the /metrics counters summed
    over the jobs table do not go back when rows go."""

    __tablename__ = "removed_job_totals"

    reason: Mapped[str] = mapped_column(String(16), primary_key=True)
    jobs: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    crashes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    preemptions: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    checkpoints: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    resumes: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")


# ---- webhooks (shared/webhook_outbox.py, the hooks worker) ----------------------------------


class WebhookMessage(Base):
    """One event of a job to deliver: written in the transaction that made the event (an
    outbox), sent to the ``webhooks`` queue after the commit. Its id is the ``webhook-id``
    header of every attempt."""

    __tablename__ = "webhook_messages"
    __table_args__ = (Index("ix_webhook_messages_unsent", "enqueued_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    event: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    job_row: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # the job then
    body: Mapped[str | None] = mapped_column(Text)  # as first sent; every retry sends it
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # sent to the broker
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a 2xx answer
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # no more attempts


class WebhookDelivery(Base):
    """One attempt at delivering a message: what the receiver answered, or why not."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_job", "job_id", "attempted_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        String(64),
        ForeignKey("webhook_messages.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)  # None: no HTTP answer
    error: Mapped[str | None] = mapped_column(String(255))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: last one


class WebhookSecret(Base):
    """An owner's signing secret (``whsec_...``). After a rotation the previous one still
    signs too, until ``previous_until``, so receivers can switch without losing events."""

    __tablename__ = "webhook_secrets"

    owner: Mapped[str] = mapped_column(String(80), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
