"""Budgets and read-once grants: a grant may cap the bytes and objects it serves; usage and the ranges
served are kept per grant. (Receipts need no table: they are read from the chained request records.)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("max_bytes", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("max_objects", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("single_use", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("spent_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("budget", sa.JSON, nullable=True))
    op.create_table(
        "grant_usage",
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("objects", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("grant_id", name="pk_grant_usage"),
    )
    op.create_table(
        "grant_objects",
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column("object", sa.String(64), nullable=False),
        sa.Column("ranges", sa.JSON, nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", "object", name="pk_grant_objects"),
    )


def downgrade() -> None:
    op.drop_table("grant_objects")
    op.drop_table("grant_usage")
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_column("budget")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("spent_at")
        batch.drop_column("single_use")
        batch.drop_column("max_objects")
        batch.drop_column("max_bytes")
