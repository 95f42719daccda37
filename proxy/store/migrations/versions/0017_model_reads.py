"""Whole-model pulls counted across replicas: the byte ranges each gateway flushes, and one claim row per
alert so that only one replica raises it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-16
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_reads",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("shard", sa.Text, nullable=False),
        sa.Column("first_byte", sa.BigInteger, nullable=False),
        sa.Column("end_byte", sa.BigInteger, nullable=False),
        sa.Column("grant_ids", sa.JSON, nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_model_reads_principal", "model_reads", ["principal", "read_at"])
    op.create_table(
        "anomaly_claims",
        sa.Column("kind", sa.String(50), primary_key=True),
        sa.Column("subject", sa.String(1024), primary_key=True),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("anomaly_claims")
    op.drop_index("ix_model_reads_principal", "model_reads")
    op.drop_table("model_reads")
