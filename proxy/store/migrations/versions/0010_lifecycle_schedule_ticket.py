"""Scheduled access and ticket references: a request may start later and name a ticket; a grant may
have a start (not before) as well as an end.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("ticket", sa.String(200), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_column("ticket")
        batch.drop_column("starts_at")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("starts_at")
