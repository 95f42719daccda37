"""Dataset terms: a request and each grant it makes record the terms its requester accepted (who, the
text, its SHA-256, when), for the grant's JSON and the audit trail.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("grants", "access_requests"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("terms_accepted", sa.JSON, nullable=True))


def downgrade() -> None:
    for table in ("access_requests", "grants"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("terms_accepted")
