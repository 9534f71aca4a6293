"""resend claims: which hub worker asked a gateway to resend, from when

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 18:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resend_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resend_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.drop_column("resend_at")
        batch_op.drop_column("resend_since")
