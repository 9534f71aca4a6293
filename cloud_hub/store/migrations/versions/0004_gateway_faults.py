"""gateway faults: the gateway's storage state and its supervisor's thread faults

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 02:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("storage", sa.String(length=16), nullable=False, server_default="ok")
        )
        batch_op.add_column(
            sa.Column("storage_kept", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("storage_dropped", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("thread_restarts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("threads_failed", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("failed_threads", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.drop_column("failed_threads")
        batch_op.drop_column("threads_failed")
        batch_op.drop_column("thread_restarts")
        batch_op.drop_column("storage_dropped")
        batch_op.drop_column("storage_kept")
        batch_op.drop_column("storage")
