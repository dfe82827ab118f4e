"""Database models (SQLAlchemy 2 declarative)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, TypeDecorator
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
    best_loss: Mapped[float | None] = mapped_column(Float)
    best_iteration: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    weights: Mapped[str | None] = mapped_column(String(255))  # the weights that made the result
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last send to the broker
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the submit's Idempotency-Key, and a hash of its inputs (shared/idempotency.py)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))

    @property
    def terminal(self) -> bool:
        return JobStatus(self.status).terminal

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status} {self.iterations_done}/{self.iterations_total}>"
