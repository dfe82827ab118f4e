"""job deletions: the purge's to-do list, removed-job totals, jobs.finished_at indexed

Revision ID: d7a41c93be20
Revises: 3d7b9e51a0c4
Create Date: 2026-12-01 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stylequeue.shared.models import UTCDateTime

revision: str = "d7a41c93be20"
down_revision: str | Sequence[str] | None = "3d7b9e51a0c4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_deletions",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=80), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_table(
        "removed_job_totals",
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("crashes", sa.Integer(), nullable=False),
        sa.Column("preemptions", sa.Integer(), nullable=False),
        sa.Column("checkpoints", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("resumes", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("reason"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_finished_at"), ["finished_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_finished_at"))
    op.drop_table("removed_job_totals")
    op.drop_table("job_deletions")
