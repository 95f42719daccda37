"""Audit trail: hash-chained events and their chain head, per-grant usage, resource readers, suspensions.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("plane", sa.String(16), nullable=False),
        sa.Column("principal", sa.String(200), nullable=True),
        sa.Column("resource", sa.String(255), nullable=True),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("grant_id", sa.String(64), nullable=True),
        sa.Column("decision", sa.String(32), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_principal", "audit_events", ["principal"])
    op.create_index("ix_audit_events_grant_id", "audit_events", ["grant_id"])
    op.create_index("ix_audit_events_resource", "audit_events", ["resource"])
    audit_chain = op.create_table(
        "audit_chain",
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_audit_chain"),
    )
    op.bulk_insert(audit_chain, [{"name": "head", "seq": 0, "hash": GENESIS}])
    op.create_table(
        "audit_grant_usage",
        sa.Column("grant_id", sa.String(64), nullable=False),
        sa.Column("principal", sa.String(200), nullable=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("objects_read", sa.BigInteger(), nullable=False),
        sa.Column("bytes_read", sa.BigInteger(), nullable=False),
        sa.Column("objects_written", sa.BigInteger(), nullable=False),
        sa.Column("bytes_written", sa.BigInteger(), nullable=False),
        sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("grant_id", name="pk_audit_grant_usage"),
    )
    op.create_table(
        "audit_resource_readers",
        sa.Column("resource", sa.String(255), nullable=False),
        sa.Column("group_name", sa.String(200), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("resource", "group_name", name="pk_audit_resource_readers"),
    )
    op.create_table(
        "grant_suspensions",
        sa.Column("grant_id", sa.String(64), nullable=False),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", name="pk_grant_suspensions"),
    )


def downgrade() -> None:
    op.drop_table("grant_suspensions")
    op.drop_table("audit_resource_readers")
    op.drop_table("audit_grant_usage")
    op.drop_table("audit_chain")
    for column in ("resource", "grant_id", "principal", "at"):
        op.drop_index(f"ix_audit_events_{column}", table_name="audit_events")
    op.drop_table("audit_events")
