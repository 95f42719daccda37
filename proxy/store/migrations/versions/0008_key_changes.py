"""Key and principal change stamps, as grants have (0005): a gateway reloads only the keys that changed.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TABLES = ("access_keys", "principals")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("changed_in", sa.BigInteger(), nullable=False, server_default="0"))
            batch.create_index(f"ix_{table}_changed_in", ["changed_in"])


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_changed_in")
            batch.drop_column("changed_in")
