"""checkpoints: resumed_from and iterations_computed

Revision ID: 5b1f0c7d2e4a
Revises: 66732c121de3
Create Date: 2026-11-29 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b1f0c7d2e4a"
down_revision: str | Sequence[str] | None = "66732c121de3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        # rows from before: what they ran is what they show done
        batch_op.add_column(
            sa.Column("iterations_computed", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("resumed_from", sa.Integer(), nullable=True))
    op.execute("UPDATE jobs SET iterations_computed = iterations_done")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("resumed_from")
        batch_op.drop_column("iterations_computed")
