"""shadow evaluation (issue 13): per-gateway summaries of the active and shadow models

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 05:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "shadow_summaries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("gw", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("candidate_name", sa.String(length=128), nullable=True),
        sa.Column("candidate_version", sa.String(length=64), nullable=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_seconds", sa.Integer(), nullable=False),
        sa.Column("active", sa.JSON(), nullable=True),
        sa.Column("shadow", sa.JSON(), nullable=True),
        sa.Column("shadow_name", sa.String(length=128), nullable=True),
        sa.Column("shadow_version", sa.String(length=64), nullable=True),
        sa.Column("both", sa.Integer(), nullable=False),
        sa.Column("only_active", sa.Integer(), nullable=False),
        sa.Column("only_shadow", sa.Integer(), nullable=False),
        sa.Column("neither", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_summaries")),
        sa.UniqueConstraint("event_id", name=op.f("uq_shadow_summaries_event_id")),
    )
    with op.batch_alter_table("shadow_summaries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shadow_summaries_gw"), ["gw"], unique=False)
        batch_op.create_index(batch_op.f("ix_shadow_summaries_channel"), ["channel"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("shadow_summaries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shadow_summaries_channel"))
        batch_op.drop_index(batch_op.f("ix_shadow_summaries_gw"))
    op.drop_table("shadow_summaries")
