"""idempotency keys: one job per owner and Idempotency-Key

Revision ID: 3f7a9c1e5b2d
Revises: 3d7a51c0e9b4
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3f7a9c1e5b2d"
down_revision: str | Sequence[str] | None = "3d7a51c0e9b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("request_fingerprint", sa.String(length=64), nullable=True))
        # The guarantee that concurrent retries make one job: the database refuses a second
        # row with the same owner and key (NULL keys, the jobs submitted without one, never
        # clash on SQLite or PostgreSQL).
        batch_op.create_index(
            "uq_jobs_owner_idempotency_key", ["owner", "idempotency_key"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("uq_jobs_owner_idempotency_key")
        batch_op.drop_column("request_fingerprint")
        batch_op.drop_column("idempotency_key")
