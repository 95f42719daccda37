"""Decoy objects planted in the bucket (what, where, when, by whom).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decoys",
        sa.Column("bucket", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("resource", sa.String(200), nullable=False),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("planted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("planted_by", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("decoys")
