"""Indexes for the approvers' pages: the audit trail newest first by principal, grant or resource (each
index ends in `seq`, so a page of the newest matches is read straight off it, however many there are),
and grants by bucket (who had access to a resource when).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# The single-column indexes these replace: each composite serves the same lookups.
AUDIT_COLUMNS = ("principal", "grant_id", "resource")


def upgrade() -> None:
    for column in AUDIT_COLUMNS:
        op.drop_index(f"ix_audit_events_{column}", table_name="audit_events")
        op.create_index(f"ix_audit_events_{column}_seq", "audit_events", [column, "seq"])
    op.create_index("ix_grants_bucket", "grants", ["bucket"])


def downgrade() -> None:
    op.drop_index("ix_grants_bucket", table_name="grants")
    for column in AUDIT_COLUMNS:
        op.drop_index(f"ix_audit_events_{column}_seq", table_name="audit_events")
        op.create_index(f"ix_audit_events_{column}", "audit_events", [column])
