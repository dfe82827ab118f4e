"""job quota columns: stored input bytes, and the submitting client's address key

Revision ID: 3d7a51c0e9b4
Revises: 4d7b9e2c5a18
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3d7a51c0e9b4"
down_revision: str | Sequence[str] | None = "4d7b9e2c5a18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        # bytes of the job's inputs in storage: what the owner's quota counts
        batch_op.add_column(
            sa.Column("input_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        # a keyed hash of the submitting browser's address (none for API tokens)
        batch_op.add_column(sa.Column("client_key", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_jobs_client_key", ["client_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_client_key")
        batch_op.drop_column("client_key")
        batch_op.drop_column("input_bytes")
