"""Session cut-offs: per principal, the time before which its session tokens are no longer accepted.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_cutoffs",
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal", name="pk_session_cutoffs"),
    )


def downgrade() -> None:
    op.drop_table("session_cutoffs")
