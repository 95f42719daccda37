"""An index of the audit trail by grant and time: a review shows each holder's use over the period under
review, read from the grant's records since the period began (the (grant_id, seq) index of 0016 orders
by sequence, which says nothing about time).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_grant_id_at", "audit_events", ["grant_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_grant_id_at", table_name="audit_events")
