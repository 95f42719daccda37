"""Access reviews: one row per periodic review of a long-held grant, opened, reminded about and decided
(or missed) exactly once however many gateways sweep.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-16
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    moment = sa.DateTime(timezone=True)
    op.create_table(
        "access_reviews",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("resource_name", sa.String(64), nullable=False),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("period_start", moment, nullable=False),
        sa.Column("due_at", moment, nullable=False),
        sa.Column("deadline", moment, nullable=False),
        sa.Column("remind_at", moment, nullable=False),
        sa.Column("created_at", moment, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reminded_at", moment, nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=False),
        sa.Column("decided_at", moment, nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_reviews"),
        sa.UniqueConstraint("grant_id", "due_at", name="uq_access_reviews_grant_id"),
    )
    op.create_index("ix_access_reviews_status", "access_reviews", ["status"])


def downgrade() -> None:
    op.drop_index("ix_access_reviews_status", table_name="access_reviews")
    op.drop_table("access_reviews")
