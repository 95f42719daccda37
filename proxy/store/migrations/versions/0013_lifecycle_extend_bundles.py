"""Extensions and bundles: a request may extend a grant (its window starts where the grant ends), and
may cover several resources granted together (the others besides its first, and every grant made).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("extends_grant", sa.String(32), nullable=True))
        batch.add_column(sa.Column("bundle", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("grant_ids", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_column("grant_ids")
        batch.drop_column("bundle")
        batch.drop_column("extends_grant")
