"""checkpoint counts: checkpoints saved, resumes, and the newest checkpoint's iteration

Revision ID: 3d7b9e51a0c4
Revises: 8c3e2a9f1d60
Create Date: 2026-11-29 19:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3d7b9e51a0c4"
down_revision: str | Sequence[str] | None = "8c3e2a9f1d60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("checkpoints", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("resumes", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("checkpoint_iteration", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("checkpoint_iteration")
        batch_op.drop_column("resumes")
        batch_op.drop_column("checkpoints")
